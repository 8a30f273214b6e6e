"""Reading the catalog (the tagged artifacts) into backups: one status per backup id. Shared by the operator command
line (`bitbucket-backup list`) and the staleness check, so both call the same backup complete."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from functions.clients.aws import error_code
from functions.models.config import InstanceConfig
from functions.strategies import COMPLETE, FAILED, IN_PROGRESS, Artifact, Catalog, strategies_for


def backup_time(backup_id: str) -> datetime | None:
    """When the backup started: its id ends in the start time (UTC), e.g. prod-20261123-082818."""
    match = re.search(r"(\d{8}-\d{6})$", backup_id)
    return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=UTC) if match else None


def by_backup(config: InstanceConfig) -> dict[str, list[Artifact]]:
    """This instance's artifacts of every strategy, grouped by backup id."""
    grouped: dict[str, list[Artifact]] = {}
    for strategy in strategies_for(config):
        for artifact in strategy.artifacts():
            grouped.setdefault(artifact.backup_id, []).append(artifact)
    return grouped


def parts_since(grouped: dict[str, list[Artifact]]) -> dict[str, datetime]:
    """When each part first appears in the catalog: the time of the oldest backup that holds it."""
    since: dict[str, datetime] = {}
    for backup_id, artifacts in grouped.items():
        when = backup_time(backup_id)
        for part in {a.part for a in artifacts}:
            if when is not None and (part not in since or when < since[part]):
                since[part] = when
    return since


def required_parts(config: InstanceConfig, backup_id: str, since: dict[str, datetime] | None) -> list[str]:
    """The parts a backup must hold to be complete: every configured part, or with `since` (parts_since) only those
    the catalog already held when it was made. A backup made before a Mesh node or the search index was added is
    complete without it (and restorable: a restore requires only the parts it is asked for)."""
    if since is None:
        return list(config.parts)
    when = backup_time(backup_id)
    return [p for p in config.parts if p in since and (when is None or since[p] <= when)]


def backup_status(
    config: InstanceConfig, artifacts: Iterable[Artifact], since: dict[str, datetime] | None = None
) -> str:
    """complete (every required part present, tagged complete, finished) | failed | in-progress | incomplete."""
    artifacts = list(artifacts)
    backup_id = artifacts[0].backup_id if artifacts else ""
    missing = [p for p in required_parts(config, backup_id, since) if not any(a.part == p for a in artifacts)]
    statuses = {a.status for a in artifacts}
    if FAILED in statuses or any(a.state == "error" for a in artifacts):
        return "failed"
    if statuses == {COMPLETE} and all(a.state == "completed" for a in artifacts) and not missing:
        return "complete"
    if IN_PROGRESS in statuses or any(a.state == "pending" for a in artifacts):
        return "in-progress"
    return "incomplete"


def newest_complete(config: InstanceConfig, *, every_part: bool = False) -> str | None:
    """The id of this instance's newest complete backup, if any; with every_part, one holding every configured part
    (the drill restores them all)."""
    grouped = by_backup(config)
    since = None if every_part else parts_since(grouped)
    complete = [b for b, items in grouped.items() if b and backup_status(config, items, since) == "complete"]
    return max(complete, key=lambda b: backup_time(b) or datetime.min.replace(tzinfo=UTC), default=None)


def lock(config: InstanceConfig, items: Iterable[tuple[Catalog, Artifact]]) -> tuple[list[str], list[str]]:
    """Immutable backups: locks each complete artifact (EBS Snapshot Lock, S3 Object Lock retention) for the
    instance's lock_days. Never raises; returns (what was locked, what could not be: one line each, with what to do).
    RDS and Aurora snapshots have no lock and are left out."""
    days = config.lock_days
    if config.immutable is None or days is None:
        return [], []
    locked: list[str] = []
    failed: list[str] = []
    for strategy, artifact in items:
        try:
            done = strategy.lock(artifact, config.immutable.mode, days)
        except ClientError as error:
            failed.append(f"{artifact.id} in {strategy.where} NOT locked ({error_code(error)}): lock it by hand")
            continue
        if done:
            locked.append(done)
    return locked, failed
