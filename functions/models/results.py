"""What each step returns: the JSON the state machine keeps in its state and hands to later steps, one TypedDict per
step's result (the inputs are the pydantic models of events.py, restore.py and drill.py).

TypedDicts, not models: a result is built as a dict literal and serialized as it is, so its JSON stays exactly what
the state machine's paths read. The Lambda code imports them for type checking only (`if TYPE_CHECKING:`): at run time
a result is a plain dict, and creating the classes (a few ms) stays out of every cold start. Strict mypy checks every
key a step writes and every key a later step reads. `NotRequired`: a key only some
answers carry. What is open (a host command's JSON summary, an artifact's details) stays a plain dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

# --- every step -------------------------------------------------------------------------------------------------------


class WarmUp(TypedDict):
    """The answer to a warm-up event (functions/handlers/_step.py), with the reads done ahead when it had the run."""

    warm: bool
    step: str
    primed: NotRequired[bool]


class FailureHandled(TypedDict):
    """A workflow's failure path: the error and its cause, which the state machine's Fail state shows."""

    error: str
    cause: str


# --- host commands (SSM Run Command), carried by the state machine between checks -------------------------------------


class HostCommand(TypedDict):
    """A started command: what host.check() needs to find it and to know when it has run too long."""

    instance_id: str
    command_id: str
    step: str
    started_at: float
    timeout: int


# A finished command's JSON summary lines by subcommand: what the host printed, open.
HostSummary = dict[str, Any]


class HostProgress(TypedDict):
    """The commands a host step started that still run, and the summaries of those that finished, by step."""

    done: bool
    commands: list[HostCommand]
    results: dict[str, HostSummary]


# --- the backup -------------------------------------------------------------------------------------------------------


class Locked(TypedDict):
    locked_at: float | None
    reused: NotRequired[bool]  # a retried invocation found the lock taken by the first one


class BackupStarted(TypedDict):
    task_id: NotRequired[str]
    reused: NotRequired[bool]  # a retried invocation: the task already runs


class DrainPolled(TypedDict):
    drained: bool
    waited_s: float
    checks: int


class PartCopied(HostProgress):
    """A part's copy: a snapshot's artifacts at once, or a host copy's commands still running (called again)."""

    part: str
    artifacts: list[dict[str, object]]  # Artifact.summary(): its details are the strategy's


class ProgressSent(TypedDict):
    percentage: int


class Unlocked(TypedDict):
    unlocked_at: float
    lock_window_s: float
    drain_s: float


class SnapshotsChecked(TypedDict):
    complete: bool
    pending: list[str]


class CopiesChecked(TypedDict):
    done: bool
    pending: list[str]


class ArchiveSummary(TypedDict):
    part: str
    bucket: str
    key: str
    size: str
    sha256: str


class CopySummary(TypedDict):
    target: str
    kind: str
    id: str
    copy_of: str | None
    status: str


class Immutability(TypedDict, total=False):
    """Immutable backups only: what was locked, what could not be."""

    locked: list[str]
    lock_errors: list[str]


class BackupSummary(Immutability):
    """Finalize's summary: the execution's output, the success notice and the run's metrics (with Immutability's
    keys, when the instance's backups are immutable, after unshare_errors)."""

    instance: str
    backup_id: str
    status: str
    artifacts: list[dict[str, object]]
    archive: list[ArchiveSummary]
    copies: list[CopySummary]
    unshared: list[str]
    unshare_errors: list[str]
    pruned: list[str]
    prune_error: str | None
    zero_downtime: bool
    lock_window_s: float | None
    drain_s: float | None
    duration_s: float
    security_warning: str | None


class BackupFailed(FailureHandled):
    unlocked: str


# --- functions no state machine calls ---------------------------------------------------------------------------------


class SafetyNetActed(TypedDict):
    """What a safety net did about an execution that ended without its own cleanup."""

    action: str  # none | cleaned | reported
    reason: NotRequired[str]
    unlocked: NotRequired[str]
    cleanup: NotRequired[list[str]]


class OperatorUnlocked(TypedDict):
    """`bitbucket-backup unlock`'s answer."""

    outcome: str  # unlocked | running | not-locked | not-ours | failed
    backup_id: str | None
    message: str
    actions: NotRequired[list[str]]


class Staleness(TypedDict):
    hours_since_complete: float
    newest_complete: str | None
    limit_hours: int | None
    stale: bool


class StalenessUnknown(TypedDict):
    error: str


# By instance name.
StalenessReport = dict[str, Staleness | StalenessUnknown]


# --- the restore (what a part's restorer creates and reports: functions/models/restore_plans.py) ---------------------


class RestoreChecked(TypedDict):
    """wait-restore: what is still pending; once ready, what each part's restorer reports, by part."""

    ready: bool
    pending: list[str]
    parts: NotRequired[dict[str, Mapping[str, Any]]]


class PartsRestored(TypedDict, total=False):
    """What the restored parts are, by part (from wait-restore's answer; the home with where it is attached and
    mounted): read by the summary's next steps, the notice and the command line."""

    database: dict[str, Any]
    home: dict[str, Any]


class RestoreDrillOutput(TypedDict):
    """A drill's restore: what its teardown needs to remove exactly this copy."""

    parts: dict[str, dict[str, Any]]
    created: dict[str, Any]


class RestoreSummary(PartsRestored):
    """finish: the restore execution's output (the restored parts' keys come after `execution`)."""

    instance: str
    backup_id: str
    status: str
    execution: str
    next_steps: list[str]
    duration_s: float


class DrillRestoreSummary(RestoreSummary):
    drill: RestoreDrillOutput


class RestoreFailureHandled(FailureHandled):
    cleanup: list[str]


# --- the restore drill ------------------------------------------------------------------------------------------------


class DrillChecks(TypedDict):
    """The checks started on the drill host (command None: nothing to check there) and what is checked."""

    command: HostCommand | None
    checks: list[str]


class DrillChecked(TypedDict):
    done: bool
    result: NotRequired[Any]  # drill-check's summary, as the host printed it


class DrillSummary(TypedDict):
    """The drill's output and record; a failed drill also says where and why."""

    instance: str | None
    backup_id: str | None
    verified: bool
    date: str
    checks: list[str]
    result: Any
    teardown: list[str]
    execution: str | None
    step: NotRequired[str]
    error: NotRequired[str]
    cause: NotRequired[str]
