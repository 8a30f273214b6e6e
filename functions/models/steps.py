"""The steps of every workflow, one row each: the one place a step is named.

A step's `name` is its key in the construct's `functions`, its field in the workflow's grants, its handler's
function name and `@step` argument; users see it as its `label` (the same words, hyphenated): the catch state
`Failed: <label>`, the run record's failed step and the notification's "at step <label>". Constructs, handlers,
command lines and tests import the rows from here, never a copied state name. No CDK here: Lambda code imports it.

A state is caught as the step it belongs to: a host check (`check_host`) as the step whose commands it checks, a
Parallel's branches as the Parallel (a `Stage`: a state that is not one function).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

FAILED_PREFIX = "Failed: "
# The stack output naming the function that answers `bitbucket-backup unlock` (the backup's safety net): its
# description is this, followed by the instances it serves (the command line finds an instance's function by it).
OPERATOR_UNLOCK_FOR = "operator unlock for: "


@dataclass(frozen=True, kw_only=True)
class Function:
    """A Lambda of the asset. `module`: its handler's module in functions/handlers; `logic`: what the handler calls;
    `function_id`: its construct id (kept as it was: the logical ids of the function, its role and policy)."""

    name: str
    module: str
    logic: str
    timeout_s: int
    function_id: str
    description: str = ""
    # Calls Bitbucket with the instance's credentials (its role reads the secret; its warm-up reads it ahead).
    bitbucket: bool = False

    @property
    def handler(self) -> str:
        return f"functions.handlers.{self.module}.{self.name}"

    @property
    def label(self) -> str:
        return self.name.replace("_", "-")


@dataclass(frozen=True, kw_only=True)
class Step(Function):
    """A function a state machine calls from its task state `state`; `retry_on` (with `retry_attempts`) are the
    errors its tasks retry, on top of Lambda's own and of the code's retries."""

    state: str
    retry_on: tuple[str, ...] = ()
    retry_attempts: int = 2

    @property
    def failed_state(self) -> str:
        return FAILED_PREFIX + self.label


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A state caught as a whole that is not one function: a Parallel, a nested execution."""

    name: str
    state: str

    @property
    def label(self) -> str:
        return self.name.replace("_", "-")

    @property
    def failed_state(self) -> str:
        return FAILED_PREFIX + self.label


Caught = Step | Stage


def failed_label(state: str) -> str | None:
    """The label of the step a `Failed: <label>` state notes the failure of; None for any other state."""
    return state.removeprefix(FAILED_PREFIX) if state.startswith(FAILED_PREFIX) else None


class _Steps:
    """A workflow's rows, as attributes named after them (checked: an attribute and its row cannot disagree)."""

    def __init_subclass__(cls) -> None:
        for attribute, row in vars(cls).items():
            if isinstance(row, Function | Stage):
                assert row.name == attribute, f"{cls.__name__}.{attribute} holds the row named {row.name}"

    @property
    def rows(self) -> tuple[Function | Stage, ...]:
        return tuple(row for row in vars(type(self)).values() if isinstance(row, Function | Stage))

    @property
    def functions(self) -> tuple[Function, ...]:
        return tuple(row for row in self.rows if isinstance(row, Function))

    def failed(self, state: str) -> Caught | None:
        """The step a `Failed: <label>` state notes the failure of; None for any other state."""
        label = failed_label(state)
        return next((r for r in self.rows if isinstance(r, Step | Stage) and r.label == label), None)


def _rows_of(workflow: str, described_as: str = "") -> Callable[..., Step]:
    """The row maker of one workflow: its handler module and logic module are named after it."""

    def row(
        name: str,
        state: str,
        logic: str,
        timeout_s: int,
        function_id: str,
        description: str,
        *,
        retry_on: tuple[str, ...] = (),
        retry_attempts: int = 2,
        bitbucket: bool = False,
    ) -> Step:
        return Step(
            name=name,
            module=workflow,
            state=state,
            logic=f"functions.{workflow}.{logic}",
            timeout_s=timeout_s,
            function_id=function_id,
            description=described_as + description,
            retry_on=retry_on,
            retry_attempts=retry_attempts,
            bitbucket=bitbucket,
        )

    return row


_backup = _rows_of("backup")
_restore = _rows_of("restore", "restore: ")
_drill = _rows_of("drill", "drill: ")


class BackupSteps(_Steps):
    validate = _backup(
        "validate", "Validate and prepare", "prepare", 60, "Validate", "validate and prepare", bitbucket=True
    )
    prepare = _backup("prepare", "Prepare hosts", "prepare_host", 300, "PrepareHost", "prepare on host")
    check_host = _backup("check_host", "Check host preparation", "check_host", 60, "CheckHost", "check host command")
    warm_up = Stage(name="warm_up", state="Warm up the locked phase")
    lock = _backup("lock", "Lock", "lock", 60, "Lock", "lock", bitbucket=True)
    start_backup = _backup(
        "start_backup", "Start backup", "start_backup", 60, "StartBackup", "start backup", bitbucket=True
    )
    wait_drained = _backup(
        "wait_drained",
        "Poll drain state",
        "poll_drain",
        90,
        "PollDrain",
        "wait for DRAINED",
        retry_on=("BitbucketUnavailable",),
        bitbucket=True,
    )
    copy = Stage(name="copy", state="Copy home and database")  # and the Mesh nodes
    copy_home = _backup(
        "copy_home", "Copy home", "backup_part", 600, "BackupHome", "home copy", retry_on=("AwsRateLimited",)
    )
    copy_database = _backup(
        "copy_database", "Copy database", "backup_part", 300, "BackupDatabase", "db copy", retry_on=("AwsRateLimited",)
    )
    # Each Mesh node's copy, one invocation per node at once (a Map state), beside the home and the database.
    copy_mesh = _backup(
        "copy_mesh",
        "Copy Mesh node",
        "backup_part",
        600,
        "BackupMeshNode",
        "Mesh node copy",
        retry_on=("AwsRateLimited",),
    )
    # The search index's snapshot: started under the lock (the cluster accepts it at once), waited for after the
    # unlock with the other snapshots.
    copy_search = _backup(
        "copy_search",
        "Snapshot search index",
        "backup_part",
        60,
        "BackupSearchIndex",
        "search index snapshot",
        retry_on=("SearchUnavailable",),
    )
    # Each part's report: the states "Report home progress" and "Report database progress" (the 100 is the unlock's).
    progress = _backup(
        "progress",
        "Report progress",
        "report_progress",
        90,
        "Progress",
        "progress",
        retry_on=("BitbucketUnavailable",),
        bitbucket=True,
    )
    unlock = _backup(
        "unlock",
        "Unlock",
        "unlock",
        120,
        "Unlock",
        "progress 100, unlock",
        retry_on=("BitbucketUnavailable",),
        bitbucket=True,
    )
    wait_snapshots = _backup("wait_snapshots", "Check snapshots", "check_snapshots", 90, "CheckSnapshots", "snapshots")
    archive = _backup("archive", "Archive", "archive", 60, "Archive", "archive to S3")
    # S3 archives are copied server-side inside the invocation (multipart): the longest step.
    copy_regions = _backup(
        "copy_regions",
        "Copy to other regions",
        "copy_regions",
        900,
        "CopyRegions",
        "DR copies",
        retry_on=("AwsRateLimited",),
        retry_attempts=6,
    )
    finalize = _backup("finalize", "Mark complete and prune", "finalize", 300, "Finalize", "finalize, prune")
    handle_failure = _backup(
        "handle_failure",
        "Handle failure",
        "handle_failure",
        300,
        "HandleFailure",
        "failure path",
        retry_on=("BitbucketUnavailable",),
        retry_attempts=3,
        bitbucket=True,
    )

    @property
    def locked_phase(self) -> tuple[Step, ...]:
        """What the locked phase calls, from the lock to the unlock and on the failure path: warmed before the lock."""
        return (
            self.start_backup,
            self.wait_drained,
            self.copy_home,
            self.copy_database,
            self.copy_mesh,
            self.copy_search,
            self.progress,
            self.unlock,
            self.handle_failure,
        )


class RestoreSteps(_Steps):
    validate = _restore("validate", "Validate restore", "validate", 120, "RestoreValidate", "validate")
    restore_database = _restore(
        "restore_database",
        "Restore database",
        "start_part",
        120,
        "RestoreDatabase",
        "database",
        retry_on=("AwsRateLimited",),
    )
    restore_home = _restore(
        "restore_home",
        "Create home volumes",
        "start_part",
        300,
        "RestoreHome",
        "home volumes",
        retry_on=("AwsRateLimited",),
    )
    # Each Mesh node's home, one invocation per node (a Map state).
    restore_mesh = _restore(
        "restore_mesh",
        "Restore Mesh node",
        "start_part",
        300,
        "RestoreMeshNode",
        "Mesh node home",
        retry_on=("AwsRateLimited",),
    )
    # The search index's snapshot, restored into new indices named with a prefix (never over the live ones).
    restore_search = _restore(
        "restore_search",
        "Restore search index",
        "start_part",
        120,
        "RestoreSearchIndex",
        "search index",
        retry_on=("SearchUnavailable",),
    )
    wait_restore = _restore("wait_restore", "Check restore", "check", 90, "RestoreCheck", "check")
    attach_home = _restore("attach_home", "Attach home volumes", "attach", 300, "RestoreAttach", "attach")
    mount_home = _restore("mount_home", "Mount home", "mount", 240, "RestoreMount", "mount")
    finish = _restore("finish", "Hand over and notify", "finish", 120, "RestoreFinish", "finish")
    handle_failure = _restore(
        "handle_failure", "Handle restore failure", "handle_failure", 900, "RestoreFailure", "failure path"
    )

    @property
    def parts(self) -> dict[str, Step]:
        """The step that starts each part's restore."""
        return {"database": self.restore_database, "home": self.restore_home, "search": self.restore_search}


class DrillSteps(_Steps):
    plan = _drill("plan", "Pick the newest backup", "plan", 120, "DrillPlan", "plan")
    restore = Stage(name="restore", state="Restore into throw-away resources")
    check = _drill("check", "Start the checks", "start_checks", 240, "DrillCheck", "check")
    check_status = _drill("check_status", "Check the restored copy", "check_status", 60, "DrillStatus", "status")
    finish = _drill("finish", "Record and tear down", "finish", 900, "DrillFinish", "finish")


class OperationSteps(_Steps):
    """Functions no state machine calls: the safety nets (EventBridge rules on executions that ended without their
    own cleanup; the backup's also answers the operator's `bitbucket-backup unlock`) and the scheduled staleness
    check. A safety net's description is its construct's id."""

    safety_net = Function(
        name="safety_net",
        module="operations",
        logic="functions.safety_net.handle_status_change",
        timeout_s=300,
        function_id="SafetyNetFn",
        bitbucket=True,
    )
    restore_safety_net = Function(
        name="restore_safety_net",
        module="operations",
        logic="functions.restore.handle_stopped",
        timeout_s=300,
        function_id="RestoreSafetyNetFn",
    )
    staleness_check = Function(
        name="staleness_check",
        module="operations",
        logic="functions.monitoring.check_staleness",
        timeout_s=300,
        function_id="StalenessCheck",
        description="hours since each instance's newest complete backup",
    )


BACKUP = BackupSteps()
RESTORE = RestoreSteps()
DRILL = DrillSteps()
OPERATIONS = OperationSteps()
WORKFLOWS: dict[str, _Steps] = {"backup": BACKUP, "restore": RESTORE, "drill": DRILL, "operations": OPERATIONS}
