"""Storage strategies: one module per way of copying a part (the DIY scripts' disk-*.sh / database-*.sh).

Every strategy creates artifacts (snapshots) that carry the catalog tags, finds them again by those tags,
and can report, re-tag and delete them. The workflow only talks to this interface.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Self

from botocore.exceptions import ClientError

from functions.clients.aws import client, error_code, target_client
from functions.errors import AwsRateLimited, ConfigInvalid, CopyFailed, RestoreRefused
from functions.models import environment
from functions.models.config import CopyTarget, InstanceConfig
from functions.models.restore import RestoreTarget

TOOL_TAG = "bitbucket-backup:tool"
TOOL_VALUE = "bitbucket-diy-backup-aws"
INSTANCE_TAG = "bitbucket-backup:instance"
BACKUP_ID_TAG = "bitbucket-backup:backup-id"
PART_TAG = "bitbucket-backup:part"
STATUS_TAG = "bitbucket-backup:status"
# Which deployment (stack) made an artifact: two deployments may back up instances of the same name (a second one in
# the first one's DR region, say); each lists, prunes and cleans up only its own artifacts, and IAM enforces it.
DEPLOYMENT_TAG = "bitbucket-backup:deployment"

IN_PROGRESS, COMPLETE, FAILED = "in-progress", "complete", "failed"

# A disaster-recovery copy carries the catalog tags of its original plus where it was copied from: the id of the
# original (which also makes starting a copy idempotent) and its region.
COPY_OF_TAG = "bitbucket-backup:copy-of"
SOURCE_REGION_TAG = "bitbucket-backup:source-region"
# Refusals for rate or concurrency limits, on any of the services the copies use: retried by Step Functions.
COPY_RATE_LIMITS = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ResourceLimitExceeded",  # EC2: too many snapshot copies in progress to one destination region
    "SlowDown",
}

# What a restore creates (a DB instance or cluster, volumes) carries the catalog tags too, with its own statuses,
# plus the ARN of the restore execution that made it: the failure path removes exactly that execution's resources,
# and only while they are still `restoring` (IAM allows deleting nothing else).
RESTORE_TAG = "bitbucket-backup:restore-execution"
RESTORE_TARGET_TAG = "bitbucket-backup:restore-target"
RESTORING, RESTORED, RESTORE_FAILED = "restoring", "restored", "restore-failed"
# The identifiers of restored DB instances and clusters start with this: IAM lets the restore's roles create, tag and
# delete DB instances and clusters under it only, so a production database can never be tagged or deleted by them.
RESTORED_PREFIX = "restored-"


def deployment_id_for(account: str, region: str, stack_name: str) -> str:
    """A deployment's id: stable across updates (and a re-creation of the stack), unique per account and region."""
    return f"{account}/{region}/{stack_name}"


_deployment: ContextVar[str | None] = ContextVar("deployment_id", default=None)


def deployment_id() -> str:
    """This deployment's id: the stack passes it in the functions' environment (never in an event); the operator
    command line sets it for its thread with acting_for()."""
    value = _deployment.get() or environment.deployment_id()
    if not value:
        raise ConfigInvalid(
            f"this deployment's id ({environment.DEPLOYMENT_ID}, set by the stack) is missing: without it the catalog "
            "cannot tell this deployment's backups from another's, so nothing is listed, tagged or deleted"
        )
    return value


_archive_bucket: ContextVar[str | None] = ContextVar("archive_bucket", default=None)


def deployment_archive_bucket() -> str:
    """This deployment's archive bucket, "" when it has none: the stack passes it in the functions' environment; the
    operator command line sets it for its thread with acting_for() (from the stack's outputs)."""
    return _archive_bucket.get() or environment.archive_bucket()


@contextmanager
def acting_for(deployment: str, archive_bucket: str | None = None) -> Iterator[None]:
    """Within this block, in this thread, the catalog works on `deployment`'s artifacts (and its archives are in
    `archive_bucket`)."""
    token = _deployment.set(deployment)
    bucket = _archive_bucket.set(archive_bucket)
    try:
        yield
    finally:
        _archive_bucket.reset(bucket)
        _deployment.reset(token)


def catalog_tags(instance: str, backup_id: str, part: str, status: str = IN_PROGRESS) -> dict[str, str]:
    return {
        TOOL_TAG: TOOL_VALUE,
        DEPLOYMENT_TAG: deployment_id(),
        INSTANCE_TAG: instance,
        BACKUP_ID_TAG: backup_id,
        PART_TAG: part,
        STATUS_TAG: status,
        "Name": f"{backup_id}-{part}",
    }


def copy_tags(original: Artifact, instance: str, source_region: str) -> dict[str, str]:
    """The original's catalog tags (status in-progress until finalize) and its origin."""
    return catalog_tags(instance, original.backup_id, original.part) | {
        COPY_OF_TAG: original.id,
        SOURCE_REGION_TAG: source_region,
    }


def copy_details(tags: dict[str, str]) -> dict[str, str]:
    """What an artifact listing adds for a copy (nothing for an original)."""
    if COPY_OF_TAG not in tags:
        return {}
    return {"copy_of": tags[COPY_OF_TAG], "source_region": tags.get(SOURCE_REGION_TAG, "")}


def copy_refused(error: ClientError, what: str, original: Artifact, target: CopyTarget) -> Exception:
    """The exception a failed copy call becomes: rate limits are retried, anything else fails the run."""
    code = error_code(error)
    if code in COPY_RATE_LIMITS:
        return AwsRateLimited(f"copy-regions: {what} of {original.id} to {target.label} refused for a limit ({code})")
    return CopyFailed(f"copy-regions: {what} of {original.id} to {target.label} failed: {code}")


def restore_tags(instance: str, backup_id: str, part: str, execution: str, name: str) -> dict[str, str]:
    return catalog_tags(instance, backup_id, part, RESTORING) | {RESTORE_TAG: execution, "Name": name}


def made_by(tags: dict[str, str], instance: str, execution: str) -> bool:
    """Created by this restore execution and not yet handed over (status still `restoring`)."""
    return is_ours(tags, instance) and tags.get(RESTORE_TAG) == execution and tags.get(STATUS_TAG) == RESTORING


def is_ours(tags: dict[str, str], instance: str) -> bool:
    """Only resources with this tool's marker, this deployment's id and this instance's name are ever touched."""
    return (
        tags.get(TOOL_TAG) == TOOL_VALUE
        and tags.get(DEPLOYMENT_TAG) == deployment_id()
        and tags.get(INSTANCE_TAG) == instance
    )


@dataclass(frozen=True)
class Artifact:
    kind: str  # ebs-snapshot | rds-snapshot | rds-cluster-snapshot | s3-archive
    id: str
    part: str
    backup_id: str
    state: str  # normalised: pending | completed | error
    status: str  # the catalog status tag
    size_gb: float | None = None  # snapshots: the volume or allocated size; archives: the object size
    created: str | None = None
    details: dict[str, str] = field(default_factory=dict)
    # What the last restore drill found: "verified YYYY-MM-DD" or "drill failed YYYY-MM-DD" (see verification()).
    verified: str | None = None

    def summary(self) -> dict[str, object]:
        return ({"verified": self.verified} if self.verified else {}) | {
            "kind": self.kind,
            "id": self.id,
            "part": self.part,
            "state": self.state,
            "status": self.status,
            "size_gb": self.size_gb,
            **self.details,
        }


VERIFIED_TAG = "bitbucket-backup:verified"
VERIFY_FAILED_TAG = "bitbucket-backup:verify-failed"


def verification(tags: dict[str, str]) -> str | None:
    """The restore drill's verdict recorded on an artifact's tags (the newer one if both are there)."""
    found = (
        [
            (tags[VERIFIED_TAG], "verified"),
        ]
        if tags.get(VERIFIED_TAG)
        else []
    )
    if tags.get(VERIFY_FAILED_TAG):
        found.append((tags[VERIFY_FAILED_TAG], "drill failed"))
    if not found:
        return None
    day, verdict = max(found)
    return f"{verdict} {day}"


class Strategy(ABC):
    """One way of copying one part of a backup."""

    part: str
    # Copy-type strategies (rsync, postgresql) copy on a host and archive to S3 after the unlock; snapshot-type
    # strategies (EBS, RDS) are consistent once backup() returns and only wait for their snapshots.
    archives: bool = False
    # The fields of the restore target (target.home / target.database) this strategy understands; validate refuses
    # the others, so that a volume option given for an archive (or the reverse) is not silently ignored.
    restore_target_fields: frozenset[str] = frozenset()

    def __init__(self, instance: InstanceConfig) -> None:
        self.instance = instance
        # Where this object lists, re-tags and deletes: None for the originals (the stack's region and account),
        # a copy target for the disaster-recovery copies there (see at()).
        self.target: CopyTarget | None = None

    def at(self, target: CopyTarget) -> Self:
        """This strategy working on the copies in `target` (its region, and its account through its role)."""
        bound = copy.copy(self)
        bound.target = target
        return bound

    def aws(self, service: str) -> Any:
        """A client where this strategy works: the function's own region, or the copy target."""
        return client(service) if self.target is None else target_client(service, self.target)

    @property
    def where(self) -> str:
        return self.target.label if self.target else "the source region"

    def copy_to(self, original: Artifact, source_region: str) -> str:
        """On a strategy bound to a target: start copying `original` there with copy_tags(); a copy already made is
        found by its tags and not made again. Returns the copy's id. Raises AwsRateLimited (retried) or CopyFailed."""
        target = self.target
        assert target is not None, "copy_to works on a strategy bound to a copy target (see at())"
        made = self.copy_of(original)
        if made is not None:
            return made.id  # a retried invocation
        return self.start_copy(original, target, copy_tags(original, self.instance.name, source_region), source_region)

    def start_copy(self, original: Artifact, target: CopyTarget, tags: dict[str, str], source_region: str) -> str:
        """Starts one copy (sharing the source with the target's account first when that is another one)."""
        raise CopyFailed(f"copy-regions: {self.part} artifacts of this strategy cannot be copied to other regions")

    def unshare(self, original: Artifact, target: CopyTarget) -> bool:
        """Removes the share of `original` with a cross-account target's account that start_copy added (least
        exposure once the copy is complete). Idempotent; an original already gone counts as unshared. Returns whether
        this kind of artifact is shared at all (archives are not: the target's role reads them through the bucket
        policy). Raises ClientError."""
        return False

    def copy_of(self, original: Artifact) -> Artifact | None:
        """The copy of `original` in this strategy's target, if one was started."""
        for found in self.artifacts(original.backup_id):
            if found.details.get("copy_of") == original.id:
                return found
        return None

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
    def tag(self, artifact: Artifact, tags: dict[str, str]) -> None:
        """Adds (or overwrites) tags on one of this tool's artifacts."""

    def set_status(self, artifact: Artifact, status: str) -> None:
        self.tag(artifact, {STATUS_TAG: status})

    @abstractmethod
    def delete(self, artifact: Artifact) -> None: ...

    def held(self, artifact: Artifact) -> str | None:
        """Why nothing may delete this artifact yet (EBS Snapshot Lock, S3 Object Lock), or None."""
        return None

    def lock(self, artifact: Artifact, mode: str, days: int) -> str | None:
        """Immutable backups: protects a complete artifact from deletion for `days` in `mode` (governance |
        compliance); returns what was done, or None when this kind of artifact has no lock (RDS, Aurora). Raises
        ClientError."""
        return None

    # --- restore ----------------------------------------------------------------------------------------------------
    # Not abstract: a strategy that cannot restore yet is refused by the validate step, before anything is created.
    # `plan` is what restore_check returned (JSON, carried by the state machine); `created` what restore_start did.

    def restore_check(self, artifacts: list[Artifact], target: RestoreTarget) -> dict[str, Any]:
        """Checks the backup's artifacts of this part and the target; raises RestoreRefused, touches nothing.
        Returns the resolved plan of this part (names, classes, volumes), which later steps follow."""
        raise RestoreRefused(f"validate: the {self.part} of this instance is copied by a strategy that cannot restore")

    def restore_start(self, plan: dict[str, Any], execution: str) -> dict[str, Any]:
        """Starts creating the restored resources, each tagged with restore_tags(); idempotent on a retry."""
        raise NotImplementedError

    def restore_status(self, plan: dict[str, Any], created: dict[str, Any]) -> RestoreProgress:
        """Whether what restore_start created is ready; raises RestoreFailed if it can never be."""
        raise NotImplementedError

    def restore_complete(self, plan: dict[str, Any], created: dict[str, Any]) -> None:
        """Hands the restored resources over: status `restored` (from then on the tool never deletes them)."""
        raise NotImplementedError

    def restore_cleanup(self, plan: dict[str, Any], execution: str, keep: bool, state: dict[str, Any]) -> list[str]:
        """After a failure: delete what this execution created and still holds `restoring` (or, with keep, tag
        it `restore-failed`). Never raises for a single resource; returns one line per action for the notice."""
        return []

    def restore_attach(self, plan: dict[str, Any], created: dict[str, Any], execution: str) -> dict[str, Any]:
        """Puts the restored copy on its target host, when the target asks for it (home strategies)."""
        raise NotImplementedError

    def restore_mount(self, plan: dict[str, Any], attach: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class RestoreProgress:
    ready: bool
    pending: list[str]
    # What the operator needs to know about the restored part (endpoint, volume ids), for output and notice.
    result: dict[str, Any] = field(default_factory=dict)


def strategies_for(instance: InstanceConfig) -> list[Strategy]:
    # Imported here so that a handler pays only for the strategies its instance uses.
    from functions.strategies import amazon_ebs, amazon_rds, host_copy

    found: list[Strategy] = []
    if instance.home.strategy == "amazon-ebs":
        found.append(amazon_ebs.EbsStrategy(instance))
    elif instance.home.strategy == "rsync":
        found.append(host_copy.RsyncStrategy(instance))
    if instance.database.strategy == "postgresql":
        found.append(host_copy.PostgresStrategy(instance))
    elif instance.database.strategy == "amazon-rds":
        found.append(amazon_rds.RdsStrategy(instance))
    elif instance.database.strategy == "amazon-aurora":
        found.append(amazon_rds.AuroraStrategy(instance))
    return found


def strategy_for(instance: InstanceConfig, part: str) -> Strategy:
    for strategy in strategies_for(instance):
        if strategy.part == part:
            return strategy
    raise ValueError(f"instance '{instance.name}' has no '{part}' part to back up")
