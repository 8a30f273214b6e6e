"""The backup's steps (functions.backup), one handler each, named as their rows in functions/models/steps.py.

A host copy (rsync's locked pass, pg_dump) is waited for inside the copy's invocation; when it outlives the
invocation, the state machine calls the copy again with what it returned (`progress`), and it goes on waiting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

# What the locked phase and the failure path use, imported at cold start: the warm-up before the lock pays for it.
from functions import backup, cleanup, monitoring  # noqa: F401
from functions.handlers._step import seconds_left, step
from functions.models.events import (
    FailureEvent,
    FinalizeEvent,
    HostProgressEvent,
    PartEvent,
    PartProgressEvent,
    PrepareEvent,
    StepEvent,
    parse,
)
from functions.models.steps import BACKUP, Step
from functions.strategies import amazon_ebs, amazon_rds, host_copy  # noqa: F401

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.results import (
        BackupFailed,
        BackupStarted,
        BackupSummary,
        CopiesChecked,
        DrainPolled,
        HostProgress,
        Locked,
        PartCopied,
        ProgressSent,
        SnapshotsChecked,
        Unlocked,
    )


@step(BACKUP.validate)
def validate(event: dict[str, Any]) -> dict[str, Any]:
    """Parse the execution input, check everything while Bitbucket is live, take the guard."""
    request = parse(PrepareEvent, event, BACKUP.validate.label)
    return backup.prepare(request.input, request.execution, request.start_time).model_dump(mode="json")


@step(BACKUP.prepare)
def prepare(event: dict[str, Any]) -> HostProgress:
    """Before the lock: install the host script and start the first (live) copy pass."""
    return backup.prepare_host(parse(StepEvent, event, BACKUP.prepare.label).run)


@step(BACKUP.check_host)
def check_host(event: dict[str, Any]) -> HostProgress:
    """One check of the SSM Run Commands a host step started."""
    request = parse(HostProgressEvent, event, BACKUP.check_host.label)
    # What the host step that started the commands returned, handed back by the state machine.
    return backup.check_host(request.run, cast("HostProgress", request.progress))


@step(BACKUP.lock)
def lock(event: dict[str, Any]) -> Locked:
    return backup.lock(parse(StepEvent, event, BACKUP.lock.label).run)


@step(BACKUP.start_backup)
def start_backup(event: dict[str, Any]) -> BackupStarted:
    return backup.start_backup(parse(StepEvent, event, BACKUP.start_backup.label).run)


@step(BACKUP.wait_drained)
def wait_drained(event: dict[str, Any]) -> DrainPolled:
    """Checks the drain state inside the invocation until DRAINED or its slice ends."""
    return backup.poll_drain(parse(StepEvent, event, BACKUP.wait_drained.label).run, seconds_left())


def _copy(row: Step, event: dict[str, Any]) -> PartCopied:
    request = parse(PartProgressEvent, event, row.label)
    backup.check_part(request.run, row, request.part)
    if request.progress is not None:
        # What this copy returned the last time, handed back by the state machine.
        return backup.wait_host(request.run, cast("PartCopied", request.progress), seconds_left())
    return backup.backup_part(request.run, row, request.part, seconds_left())


@step(BACKUP.copy_home)
def copy_home(event: dict[str, Any]) -> PartCopied:
    return _copy(BACKUP.copy_home, event)


@step(BACKUP.copy_database)
def copy_database(event: dict[str, Any]) -> PartCopied:
    return _copy(BACKUP.copy_database, event)


@step(BACKUP.copy_mesh)
def copy_mesh(event: dict[str, Any]) -> PartCopied:
    return _copy(BACKUP.copy_mesh, event)


@step(BACKUP.copy_search)
def copy_search(event: dict[str, Any]) -> PartCopied:
    return _copy(BACKUP.copy_search, event)


@step(BACKUP.progress)
def progress(event: dict[str, Any]) -> ProgressSent:
    """Report a finished part to Bitbucket (the 100 % is the unlock's)."""
    request = parse(PartEvent, event, BACKUP.progress.label)
    return backup.report_progress(request.run, request.part)


@step(BACKUP.unlock)
def unlock(event: dict[str, Any]) -> Unlocked:
    return backup.unlock(parse(StepEvent, event, BACKUP.unlock.label).run)


@step(BACKUP.wait_snapshots)
def wait_snapshots(event: dict[str, Any]) -> SnapshotsChecked:
    return backup.check_snapshots(parse(StepEvent, event, BACKUP.wait_snapshots.label).run)


@step(BACKUP.archive)
def archive(event: dict[str, Any]) -> HostProgress:
    """After the unlock: archive the host copies and upload them to S3."""
    return backup.archive(parse(StepEvent, event, BACKUP.archive.label).run)


@step(BACKUP.copy_regions)
def copy_regions(event: dict[str, Any]) -> CopiesChecked:
    """Start the disaster-recovery copies in other regions (and accounts), check them."""
    return backup.copy_regions(parse(StepEvent, event, BACKUP.copy_regions.label).run)


@step(BACKUP.finalize)
def finalize(event: dict[str, Any]) -> BackupSummary:
    """Mark the backup complete, prune old ones, optionally announce success."""
    request = parse(FinalizeEvent, event, BACKUP.finalize.label)
    return backup.finalize(request.run, cast("Unlocked | None", request.unlocked))


@step(BACKUP.handle_failure)
def handle_failure(event: dict[str, Any]) -> BackupFailed:
    """Cancel, unlock if this run locked, remove what it made, notify once."""
    request = parse(FailureEvent, event, BACKUP.handle_failure.label)
    return backup.handle_failure(request.input, request.run, request.failure)
