"""The backup state machine and its Lambdas.

validate (live) → prepare home (rsync first pass) → warm up the functions of the locked phase → lock → start backup →
wait for DRAINED → home and database copies in parallel (a host copy is waited for in its function), each reporting
progress → progress 100 → unlock → wait for snapshots
→ archive host copies to S3 → disaster-recovery copies to other regions (started, then checked until complete)
→ finalize (mark complete, prune).
A zero-downtime backup (the instance's `zero_downtime`, Data Center 4.8+, atomic snapshots only) takes the same path
without warm-up, lock, start, drain, progress reports and unlock: three Choices on `$.run.flow.zero_downtime` skip
them.
Every task after the validate step catches into one failure path that cancels, unlocks, cleans up and notifies.
Under the lock no wait takes whole seconds: DRAINED and the host copies are checked every few tenths of a second
inside the functions (functions/polling.py); the Wait states between invocations default to zero seconds there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.constructs.functions import FunctionFactory
from stacks.constructs.grants import FunctionGrants
from stacks.constructs.sfn_parts import lambda_task, standard_state_machine

# What the locked phase calls, from the lock to the unlock and on the failure path: warmed before the lock.
LOCKED_PHASE_FUNCTIONS = {
    "start": "start backup",
    "poll": "poll drain state",
    "home": "copy home",
    "database": "copy database",
    "progress": "report progress",
    "unlock": "unlock",
    "failure": "handle failure",
}
# Zero-downtime runs skip the lock and everything that needs it; this, the classic path, comes first in each Choice.
_LOCKED = sfn.Condition.boolean_equals("$.run.flow.zero_downtime", False)


@dataclass(frozen=True)
class BackupGrants:
    """What each of the backup's functions may do (stacks/backup_stack.py builds it; grants.apply applies it);
    safety_net is the backup's safety net (stacks/constructs/safety_net.py)."""

    validate: FunctionGrants
    lock: FunctionGrants
    start: FunctionGrants
    poll: FunctionGrants
    home: FunctionGrants
    database: FunctionGrants
    progress: FunctionGrants
    unlock: FunctionGrants
    check: FunctionGrants
    finalize: FunctionGrants
    prepare: FunctionGrants
    check_host: FunctionGrants
    archive: FunctionGrants
    copy: FunctionGrants
    failure: FunctionGrants
    safety_net: FunctionGrants


@dataclass(frozen=True)
class WorkflowTiming:
    """Retry intervals are fixed in the definition; tests synthesize with 1 s so a retried step costs 1 s."""

    retry_interval_s: int = 2
    timeout_hours: int = 8


class BackupWorkflow(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        factory: FunctionFactory,
        state_machine_name: str | None = None,
        timing: WorkflowTiming | None = None,
    ) -> None:
        super().__init__(scope, id)
        self._failed_notes: dict[str, sfn.Pass] = {}
        timing = timing or WorkflowTiming()
        self._timing = timing
        make = factory.make
        h = "functions.handlers"
        self.functions: dict[str, lambda_.Function] = {
            "validate": make("Validate", f"{h}.validate.handler", timeout_s=60, description="validate and prepare"),
            "lock": make("Lock", f"{h}.lock.handler", timeout_s=60, description="lock"),
            "start": make("StartBackup", f"{h}.start_backup.handler", timeout_s=60, description="start backup"),
            "poll": make("PollDrain", f"{h}.poll_drain.handler", timeout_s=90, description="wait for DRAINED"),
            "home": make("BackupHome", f"{h}.backup_part.handler", timeout_s=600, description="home copy"),
            "database": make("BackupDatabase", f"{h}.backup_part.handler", timeout_s=300, description="db copy"),
            "progress": make("Progress", f"{h}.progress.handler", timeout_s=90, description="progress"),
            "unlock": make("Unlock", f"{h}.unlock.handler", timeout_s=120, description="unlock"),
            "check": make("CheckSnapshots", f"{h}.check_snapshots.handler", timeout_s=90, description="snapshots"),
            "finalize": make("Finalize", f"{h}.finalize.handler", timeout_s=300, description="finalize, prune"),
            "prepare": make("PrepareHost", f"{h}.prepare_host.handler", timeout_s=300, description="prepare on host"),
            "check_host": make("CheckHost", f"{h}.check_host.handler", timeout_s=60, description="check host command"),
            "archive": make("Archive", f"{h}.archive.handler", timeout_s=60, description="archive to S3"),
            # S3 archives are copied server-side inside the invocation (multipart): the longest step.
            "copy": make("CopyRegions", f"{h}.copy_regions.handler", timeout_s=900, description="DR copies"),
            "failure": make("HandleFailure", f"{h}.failure.handler", timeout_s=300, description="failure path"),
        }
        self.state_machine = standard_state_machine(
            self,
            self._definition(),
            name=state_machine_name,
            timeout=Duration.hours(timing.timeout_hours),
            comment="Bitbucket DIY backup: lock, drain, snapshot, unlock, then wait, mark complete and prune",
        )

    # --- building blocks ----------------------------------------------------------------------------------

    def _task(
        self,
        id: str,
        fn: str,
        payload: dict[str, Any],
        result_path: str | None,
        *,
        retry_on: list[str] | None = None,
        retry_attempts: int = 2,
    ) -> tasks.LambdaInvoke:
        return lambda_task(
            self,
            id,
            self.functions[fn],
            payload,
            result_path,
            retry_interval_s=self._timing.retry_interval_s,
            retry_on=retry_on,
            retry_attempts=retry_attempts,
        )

    def _catch(
        self, state: tasks.LambdaInvoke | sfn.Parallel, step: str, failure: sfn.IChainable, with_run: bool = True
    ) -> None:
        note = self._failed_notes.get(step)
        if note is None:
            params: dict[str, Any] = {
                "input.$": "$.input",
                "failure": {"step": step, "Error.$": "$.failure.Error", "Cause.$": "$.failure.Cause"},
            }
            if with_run:
                params["run.$"] = "$.run"
            note = self._failed_notes[step] = sfn.Pass(self, f"Failed: {step}", parameters=params)
            note.next(failure)
        state.add_catch(note, errors=["States.ALL"], result_path="$.failure")

    def _host_loop(
        self, name: str, start: tasks.LambdaInvoke, result_path: str, then: sfn.IChainable
    ) -> tuple[tasks.LambdaInvoke, tasks.LambdaInvoke]:
        """start → done? → (then) | wait → check → done? …: SSM Run Commands checked until they end. Snapshot
        strategies answer done at once, so they pass straight through."""
        check = self._task(f"Check {name}", "check_host", {"run.$": "$.run", "progress.$": result_path}, result_path)
        wait = sfn.Wait(
            self, f"Wait for {name}", time=sfn.WaitTime.seconds_path("$.run.flow.timing.host_poll_interval_seconds")
        )
        done = (
            sfn.Choice(self, f"{name[0].upper()}{name[1:]} done?")
            .when(sfn.Condition.boolean_equals(f"{result_path}.done", True), then)
            .otherwise(wait.next(check))
        )
        check.next(done)
        start.next(done)
        return start, check

    def _locked_host_loop(self, part: str, start: tasks.LambdaInvoke, then: sfn.IChainable) -> tasks.LambdaInvoke:
        """start → done? → (then) | continue → done? …: under the lock a host copy is waited for inside the copy's own
        function (short polls), which is called again only if the copy outlives an invocation. No Wait state: the
        unlock follows the end of the copy within a fraction of a second."""
        again = self._task(
            f"Continue {part} copy",
            part,
            {"run.$": "$.run", "part": part, "progress.$": "$.part_result"},
            "$.part_result",
            retry_on=["AwsRateLimited"],
        )
        done = (
            sfn.Choice(self, f"{part.capitalize()} copy done?")
            .when(sfn.Condition.boolean_equals("$.part_result.done", True), then)
            .otherwise(again)
        )
        again.next(done)
        start.next(done)
        return start

    def _warm_up(self) -> sfn.Parallel:
        """Every function the locked phase calls, invoked once with {"warm": true} while Bitbucket is still live: none
        of them starts cold under the lock. A function that cannot even start fails the run here, before the lock."""
        warm = sfn.Parallel(self, "Warm up the locked phase", result_path=sfn.JsonPath.DISCARD)
        for fn, label in LOCKED_PHASE_FUNCTIONS.items():
            warm.branch(self._task(f"Warm: {label}", fn, {"warm": True}, None))
        return warm

    # --- the definition -------------------------------------------------------------------------------------

    def _definition(self) -> sfn.IChainable:
        run = {"run.$": "$.run"}
        handle = self._task(
            "Handle failure", "failure", {"input.$": "$.input", "run.$": "$.run", "failure.$": "$.failure"}, "$.outcome"
        )
        handle_pre = self._task(
            "Handle failure before lock", "failure", {"input.$": "$.input", "failure.$": "$.failure"}, "$.outcome"
        )
        failed = sfn.Fail(self, "Backup failed", error_path="$.outcome.error", cause_path="$.outcome.cause")
        cleanup_failed = sfn.Fail(
            self,
            "Cleanup failed",
            error="CleanupFailed",
            cause="the failure path itself failed: check Bitbucket's maintenance mode by hand",
        )
        for h in (handle, handle_pre):
            h.add_retry(
                errors=["BitbucketUnavailable"],
                interval=Duration.seconds(self._timing.retry_interval_s),
                max_attempts=3,
                backoff_rate=2,
            )
            h.add_catch(cleanup_failed, errors=["States.ALL"], result_path="$.cleanup_error")
            h.next(failed)

        start = sfn.Pass(self, "Start", parameters={"input.$": "$"})
        validate = self._task(
            "Validate and prepare",
            "validate",
            {"input.$": "$.input", "execution.$": "$$.Execution.Id", "start_time.$": "$$.Execution.StartTime"},
            "$.run",
        )
        skipped = sfn.Succeed(self, "Skipped: backup in progress")
        validate.add_catch(
            sfn.Pass(self, "Another backup is running").next(skipped),
            errors=["BackupInProgress"],
            result_path="$.skipped",
        )
        self._catch(validate, "validate", handle_pre, with_run=False)

        lock = self._task("Lock", "lock", run, "$.lock")
        self._catch(lock, "lock", handle)
        parts = sfn.Parallel(
            self,
            "Copy home and database",
            result_path="$.parts",
            result_selector={"home.$": "$[0].part_result", "database.$": "$[1].part_result"},
        )
        # Before the lock, while Bitbucket is live: the host script and the expensive first pass (rsync); a no-op for
        # snapshot strategies. A failure here has locked nothing; the failure path releases the run guard.
        prepare = self._task("Prepare hosts", "prepare", run, "$.prepared")
        warm_up = self._warm_up()
        self._catch(warm_up, "warm-up", handle)
        warm_up.next(lock)
        with_lock = sfn.Choice(self, "Zero downtime?").when(_LOCKED, warm_up).otherwise(parts)
        for state in self._host_loop("host preparation", prepare, "$.prepared", with_lock):
            self._catch(state, "prepare", handle)
        start_backup = self._task("Start backup", "start", run, "$.task")
        self._catch(start_backup, "start-backup", handle)
        poll = self._task("Poll drain state", "poll", run, "$.drain", retry_on=["BitbucketUnavailable"])
        self._catch(poll, "wait-drained", handle)
        wait_drain = sfn.Wait(
            self, "Wait for drain", time=sfn.WaitTime.seconds_path("$.run.flow.timing.poll_interval_seconds")
        )

        for part, fn in (("home", "home"), ("database", "database")):
            copy = self._task(
                f"Copy {part}", fn, {"run.$": "$.run", "part": part}, "$.part_result", retry_on=["AwsRateLimited"]
            )
            report = self._task(
                f"Report {part} progress",
                "progress",
                {"run.$": "$.run", "part": part},
                None,
                retry_on=["BitbucketUnavailable"],
            )
            skip = sfn.Pass(
                self,
                f"No {part} to copy",
                result=sfn.Result.from_object({"part": part, "skipped": True}),
                result_path="$.part_result",
            )
            # Progress goes to the backup task under the lock; without a lock there is nobody to report to.
            reported = (
                sfn.Choice(self, f"Report {part} progress?")
                .when(_LOCKED, report)
                .otherwise(sfn.Pass(self, f"{part.capitalize()} copied without a lock"))
            )
            parts.branch(
                sfn.Choice(self, f"{part.capitalize()} configured?")
                .when(sfn.Condition.string_equals(f"$.run.flow.{part}.strategy", "none"), skip)
                .otherwise(self._locked_host_loop(part, copy, reported))
            )
        self._catch(parts, "copy", handle)

        finish = self._task("Report progress 100", "progress", run, None, retry_on=["BitbucketUnavailable"])
        self._catch(finish, "progress", handle)
        unlock = self._task("Unlock", "unlock", run, "$.unlocked", retry_on=["BitbucketUnavailable"])
        self._catch(unlock, "unlock", handle)
        check = self._task("Check snapshots", "check", run, "$.snapshots")
        self._catch(check, "wait-snapshots", handle)
        wait_snapshots = sfn.Wait(
            self,
            "Wait for snapshots",
            time=sfn.WaitTime.seconds_path("$.run.flow.timing.snapshot_poll_interval_seconds"),
        )
        finalize = self._task(
            "Mark complete and prune", "finalize", {"run.$": "$.run", "unlocked.$": "$.unlocked"}, "$.summary"
        )
        self._catch(finalize, "finalize", handle)
        # Disaster-recovery copies, once every original is complete: started, then checked until complete (a no-op
        # without copy targets). Limits and throttling (AwsRateLimited) are retried with back-off.
        copies = self._task(
            "Copy to other regions", "copy", run, "$.copies", retry_on=["AwsRateLimited"], retry_attempts=6
        )
        self._catch(copies, "copy-regions", handle)
        wait_copies = sfn.Wait(
            self, "Wait for copies", time=sfn.WaitTime.seconds_path("$.run.flow.timing.copy_poll_interval_seconds")
        )
        copies.next(
            sfn.Choice(self, "Copies complete?")
            .when(sfn.Condition.boolean_equals("$.copies.done", True), finalize)
            .otherwise(wait_copies.next(copies))
        )
        # After the unlock: the host copies (rsync, pg_dump) are archived and uploaded; nothing for snapshots.
        archive = self._task("Archive", "archive", run, "$.archived")
        for state in self._host_loop("archive", archive, "$.archived", copies):
            self._catch(state, "archive", handle)
        done = sfn.Succeed(self, "Backup complete", output_path="$.summary")

        finalize.next(done)
        start.next(validate).next(prepare)
        # A zero-downtime run has nothing to unlock; its lock window (the Unlock step's result) is zero.
        not_locked = sfn.Pass(
            self,
            "Nothing to unlock",
            result=sfn.Result.from_object({"lock_window_s": 0, "drain_s": 0}),
            result_path="$.unlocked",
        )
        parts.next(sfn.Choice(self, "Locked for the copy?").when(_LOCKED, finish).otherwise(not_locked))
        finish.next(unlock).next(check)
        not_locked.next(check)
        check.next(
            sfn.Choice(self, "Snapshots complete?")
            .when(sfn.Condition.boolean_equals("$.snapshots.complete", True), archive)
            .otherwise(wait_snapshots.next(check))
        )
        lock.next(start_backup).next(poll).next(
            sfn.Choice(self, "Drained?")
            .when(sfn.Condition.boolean_equals("$.drain.drained", True), parts)
            .otherwise(wait_drain.next(poll))
        )
        return start
