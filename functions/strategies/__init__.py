"""Storage strategies: one module per way of copying a part (the DIY scripts' disk-*.sh / database-*.sh).

Every strategy creates artifacts (snapshots) that carry the catalog tags, finds them again by those tags,
and can report, re-tag and delete them. The workflow only talks to this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from functions.models.config import InstanceConfig

TOOL_TAG = "bitbucket-backup:tool"
TOOL_VALUE = "bitbucket-diy-backup-aws"
INSTANCE_TAG = "bitbucket-backup:instance"
BACKUP_ID_TAG = "bitbucket-backup:backup-id"
PART_TAG = "bitbucket-backup:part"
STATUS_TAG = "bitbucket-backup:status"

IN_PROGRESS, COMPLETE, FAILED = "in-progress", "complete", "failed"


def catalog_tags(instance: str, backup_id: str, part: str, status: str = IN_PROGRESS) -> dict[str, str]:
    return {
        TOOL_TAG: TOOL_VALUE,
        INSTANCE_TAG: instance,
        BACKUP_ID_TAG: backup_id,
        PART_TAG: part,
        STATUS_TAG: status,
        "Name": f"{backup_id}-{part}",
    }


def is_ours(tags: dict[str, str], instance: str) -> bool:
    """Only resources with this tool's marker and this instance's name are ever touched."""
    return tags.get(TOOL_TAG) == TOOL_VALUE and tags.get(INSTANCE_TAG) == instance


@dataclass(frozen=True)
class Artifact:
    kind: str  # ebs-snapshot | rds-snapshot | rds-cluster-snapshot
    id: str
    part: str
    backup_id: str
    state: str  # normalised: pending | completed | error
    status: str  # the catalog status tag
    size_gb: int | None = None
    created: str | None = None
    details: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "id": self.id,
            "part": self.part,
            "state": self.state,
            "status": self.status,
            "size_gb": self.size_gb,
            **self.details,
        }


class Strategy(ABC):
    """One way of copying one part of a backup."""

    part: str

    def __init__(self, instance: InstanceConfig) -> None:
        self.instance = instance

    @abstractmethod
    def preflight(self) -> dict[str, object]:
        """Checks made while Bitbucket is live; raises PreflightFailed. Returns facts for the run log."""

    @abstractmethod
    def backup(self, backup_id: str) -> list[Artifact]:
        """Under the lock: start the copy; returns as soon as the copy is consistent (snapshot pending)."""

    @abstractmethod
    def artifacts(self, backup_id: str | None = None) -> list[Artifact]:
        """This instance's artifacts of this strategy (of one backup, or all), found by the catalog tags."""

    @abstractmethod
    def set_status(self, artifact: Artifact, status: str) -> None: ...

    @abstractmethod
    def delete(self, artifact: Artifact) -> None: ...


def strategies_for(instance: InstanceConfig) -> list[Strategy]:
    # Imported here so that a handler pays only for the strategies its instance uses.
    from functions.strategies import amazon_ebs, amazon_rds

    found: list[Strategy] = []
    if instance.home.strategy == "amazon-ebs":
        found.append(amazon_ebs.EbsStrategy(instance))
    if instance.database.strategy == "amazon-rds":
        found.append(amazon_rds.RdsStrategy(instance))
    elif instance.database.strategy == "amazon-aurora":
        found.append(amazon_rds.AuroraStrategy(instance))
    return found


def strategy_for(instance: InstanceConfig, part: str) -> Strategy:
    for strategy in strategies_for(instance):
        if strategy.part == part:
            return strategy
    raise ValueError(f"instance '{instance.name}' has no '{part}' part to back up")
