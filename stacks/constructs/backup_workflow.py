"""The backup state machine and its Lambdas.

validate (live) → prepare home (rsync first pass) → warm up the functions of the locked phase → lock → start backup →
wait for DRAINED → home and database copies in parallel (a host copy is waited for in its function), each reporting
progress → unlock (progress 100 first, as Atlassian's script does before its unlock) → wait for snapshots
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

from functions.models.steps import BACKUP, OPERATIONS, Caught, Step
from stacks.constructs.functions import FunctionFactory
from stacks.constructs.grants import FunctionGrants
from stacks.constructs.sfn_parts import lambda_task, standard_state_machine

# The warm-up's state of a step of the locked phase is "Warm: <its state, lower case>".
WARM_STATES: dict[str, str] = {}
# How many environments of a function the locked phase may need at once: progress is reported at the end of each
# part's branch of the copy, and the two (three with Mesh nodes) can overlap. Invoked together, the warm-ups start
# that many environments.
WARM_ENVIRONMENTS = {BACKUP.progress.name: 2}
# The Mesh nodes are copied by a Map state, one invocation per node at once: the warm-up starts as many environments
# of that function as the run has nodes (its own Map over the same list).
_MESH = "$.run.flow.mesh"
# Zero-downtime runs skip the lock and everything that needs it; this, the classic path, comes first in each Choice.
_LOCKED = sfn.Condition.boolean_equals("$.run.flow.zero_downtime", False)


@dataclass(frozen=True)
class BackupGrants:
    """What each of the backup's functions may do, a field per step of BACKUP (stacks/backup_stack.py builds it;
    grants.apply applies it); safety_net is the backup's safety net (stacks/constructs/safety_net.py), which also
    answers `bitbucket-backup unlock`."""

    validate: FunctionGrants
    lock: FunctionGrants
    start_backup: FunctionGrants
    wait_drained: FunctionGrants
    copy_home: FunctionGrants
    copy_database: FunctionGrants
    progress: FunctionGrants
    unlock: FunctionGrants
    wait_snapshots: FunctionGrants
    finalize: FunctionGrants
    prepare: FunctionGrants
    check_host: FunctionGrants
    archive: FunctionGrants
    copy_regions: FunctionGrants
    handle_failure: FunctionGrants
    safety_net: FunctionGrants
    # Only where an instance of the state machine has Mesh nodes (the function exists only there).
    copy_mesh: FunctionGrants | None = None
    # Only where an instance of the state machine backs its search index up.
    copy_search: FunctionGrants | None = None

    def __post_init__(self) -> None:
        names = {*(s.name for s in BACKUP.functions), OPERATIONS.safety_net.name}
        assert set(self.__dataclass_fields__) == names, "a field per step"


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
        mesh: bool = False,
        search: bool = False,
    ) -> None:
        super().__init__(scope, id)
        self._failed_notes: dict[str, sfn.Pass] = {}
        timing = timing or WorkflowTiming()
        self._timing = timing
        # The Mesh nodes' copy (its function, its branch and warm-up) only where an instance has nodes: a fleet
        # without them deploys none of it (CloudFormation's template size limit).
        self._mesh = mesh
        self._search = search  # the search index's snapshot likewise
        self.functions: dict[str, lambda_.Function] = {
            s.name: factory.make(s.function_id, s.handler, timeout_s=s.timeout_s, description=s.description)
            for s in BACKUP.functions
            if (mesh or s is not BACKUP.copy_mesh) and (search or s is not BACKUP.copy_search)
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
        step: Step,
        payload: dict[str, Any],
        result_path: str | None,
        *,
        state: str | None = None,
        own_retries: bool = True,
    ) -> tasks.LambdaInvoke:
        """The task state `state` (by default the step's own) calling the step's function; `own_retries`: with the
        step's retries on top of Lambda's (a warm-up has none)."""
        return lambda_task(
            self,
            state or step.state,
            self.functions[step.name],
            payload,
            result_path,
            retry_interval_s=self._timing.retry_interval_s,
            retry_on=list(step.retry_on) if own_retries else None,
            retry_attempts=step.retry_attempts,
        )

    def _catch(
        self, state: tasks.LambdaInvoke | sfn.Parallel, step: Caught, failure: sfn.IChainable, with_run: bool = True
    ) -> None:
        note = self._failed_notes.get(step.name)
        if note is None:
            params: dict[str, Any] = {
                "input.$": "$.input",
                "failure": {"step": step.label, "Error.$": "$.failure.Error", "Cause.$": "$.failure.Cause"},
            }
            if with_run:
                params["run.$"] = "$.run"
            note = self._failed_notes[step.name] = sfn.Pass(self, step.failed_state, parameters=params)
            note.next(failure)
        state.add_catch(note, errors=["States.ALL"], result_path="$.failure")

    def _host_loop(
        self, name: str, start: tasks.LambdaInvoke, result_path: str, then: sfn.IChainable
    ) -> tuple[tasks.LambdaInvoke, tasks.LambdaInvoke]:
        """start → done? → (then) | wait → check → done? …: SSM Run Commands checked until they end. Snapshot
        strategies answer done at once, so they pass straight through."""
        check = self._task(
            BACKUP.check_host, {"run.$": "$.run", "progress.$": result_path}, result_path, state=f"Check {name}"
        )
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

    def _locked_host_loop(
        self, part: str, copy: Step, start: tasks.LambdaInvoke, then: sfn.IChainable, *, named: str | None = None
    ) -> tasks.LambdaInvoke:
        """start → done? → (then) | continue → done? …: under the lock a host copy is waited for inside the copy's own
        function (short polls), which is called again only if the copy outlives an invocation. No Wait state: the
        unlock follows the end of the copy within a fraction of a second. `part`: the part's name, or with `named`
        (the states' name for it) a path to it (a Map state's item)."""
        name = named or part
        given = {"part.$": part} if named else {"part": part}
        again = self._task(
            copy,
            {"run.$": "$.run", **given, "progress.$": "$.part_result"},
            "$.part_result",
            state=f"Continue {name} copy",
        )
        done = (
            sfn.Choice(self, f"{name[0].upper()}{name[1:]} copy done?")
            .when(sfn.Condition.boolean_equals("$.part_result.done", True), then)
            .otherwise(again)
        )
        again.next(done)
        start.next(done)
        return start

    def _warm_up(self) -> sfn.Parallel:
        """Every function the locked phase calls, invoked once with {"warm": true} while Bitbucket is still live: none
        of them starts cold under the lock. A function that cannot even start fails the run here, before the lock."""
        warm = sfn.Parallel(self, BACKUP.warm_up.state, result_path=sfn.JsonPath.DISCARD)
        for step in BACKUP.locked_phase:
            state = WARM_STATES.get(step.name, f"Warm: {step.state.lower()}")
            if step is BACKUP.copy_mesh:  # an environment per node of the run: a Map over the same list
                if self._mesh:
                    each = sfn.Map(
                        self,
                        f"{state}s",
                        items_path=_MESH,
                        item_selector={"run.$": "$.run"},
                        result_path=sfn.JsonPath.DISCARD,
                    )
                    payload = {"warm": True, "run.$": "$.run"}
                    each.item_processor(self._task(step, payload, None, state=state, own_retries=False))
                    warm.branch(each)
                continue
            if step is BACKUP.copy_search and not self._search:
                continue
            environments = WARM_ENVIRONMENTS.get(step.name, 1)
            if step is BACKUP.progress and self._mesh:
                environments += 1  # the Mesh nodes' branch reports too
            for n in range(1, environments + 1):
                name = state if n == 1 else f"{state} ({n})"
                # With the run, the warm-up also reads ahead what the step reads first (functions/warm_up.py).
                payload = {"warm": True, "run.$": "$.run"}
                warm.branch(self._task(step, payload, None, state=name, own_retries=False))
        return warm

    def _mesh_branch(self) -> sfn.IChainable:
        """The copy's third branch: every Mesh node's copy at once (a Map state, an iteration per node, each waited
        for as the home's is), then one progress report for all of them."""
        b = BACKUP
        each = sfn.Map(
            self,
            "Copy Mesh nodes",
            items_path=_MESH,
            item_selector={"run.$": "$.run", "part.$": "$$.Map.Item.Value"},
            result_path="$.mesh_result",
        )
        copy = self._task(b.copy_mesh, {"run.$": "$.run", "part.$": "$.part"}, "$.part_result")
        copied = sfn.Pass(self, "Mesh node copied", output_path="$.part_result")
        each.item_processor(self._locked_host_loop("$.part", b.copy_mesh, copy, copied, named="Mesh node"))
        report = self._task(b.progress, {"run.$": "$.run", "part": "mesh"}, None, state="Report Mesh nodes progress")
        reported = (
            sfn.Choice(self, "Report Mesh nodes progress?")
            .when(_LOCKED, report)
            .otherwise(sfn.Pass(self, "Mesh nodes copied without a lock"))
        )
        none = sfn.Pass(self, "No Mesh nodes to copy", result=sfn.Result.from_array([]), result_path="$.mesh_result")
        return (
            sfn.Choice(self, "Mesh nodes configured?")
            .when(sfn.Condition.is_present(f"{_MESH}[0]"), each.next(reported))
            .otherwise(none)
        )

    def _search_branch(self) -> sfn.IChainable:
        """The copy's last branch: the search index's snapshot, started (the cluster accepts it at once and the
        snapshot is then consistent) and waited for after the unlock with the other snapshots; no progress report."""
        copy = self._task(BACKUP.copy_search, {"run.$": "$.run", "part": "search"}, "$.part_result")
        skip = sfn.Pass(
            self,
            "No search index to snapshot",
            result=sfn.Result.from_object({"part": "search", "skipped": True}),
            result_path="$.part_result",
        )
        return (
            sfn.Choice(self, "Search index configured?")
            .when(sfn.Condition.string_equals("$.run.flow.search.strategy", "none"), skip)
            .otherwise(copy)
        )

    # --- the definition -------------------------------------------------------------------------------------

    def _definition(self) -> sfn.IChainable:
        run = {"run.$": "$.run"}
        b = BACKUP
        handle = self._task(
            b.handle_failure, {"input.$": "$.input", "run.$": "$.run", "failure.$": "$.failure"}, "$.outcome"
        )
        handle_pre = self._task(
            b.handle_failure,
            {"input.$": "$.input", "failure.$": "$.failure"},
            "$.outcome",
            state=f"{b.handle_failure.state} before lock",
        )
        failed = sfn.Fail(self, "Backup failed", error_path="$.outcome.error", cause_path="$.outcome.cause")
        cleanup_failed = sfn.Fail(
            self,
            "Cleanup failed",
            error="CleanupFailed",
            cause="the failure path itself failed: check Bitbucket's maintenance mode by hand",
        )
        for h in (handle, handle_pre):
            h.add_catch(cleanup_failed, errors=["States.ALL"], result_path="$.cleanup_error")
            h.next(failed)

        start = sfn.Pass(self, "Start", parameters={"input.$": "$"})
        validate = self._task(
            b.validate,
            {"input.$": "$.input", "execution.$": "$$.Execution.Id", "start_time.$": "$$.Execution.StartTime"},
            "$.run",
        )
        skipped = sfn.Succeed(self, "Skipped: backup in progress")
        validate.add_catch(
            sfn.Pass(self, "Another backup is running").next(skipped),
            errors=["BackupInProgress"],
            result_path="$.skipped",
        )
        self._catch(validate, b.validate, handle_pre, with_run=False)

        lock = self._task(b.lock, run, "$.lock")
        self._catch(lock, b.lock, handle)
        parts = sfn.Parallel(
            self,
            b.copy.state,
            result_path="$.parts",
            result_selector={
                "home.$": "$[0].part_result",
                "database.$": "$[1].part_result",
                **({"mesh.$": "$[2].mesh_result"} if self._mesh else {}),
                **({"search.$": f"$[{3 if self._mesh else 2}].part_result"} if self._search else {}),
            },
        )
        # Before the lock, while Bitbucket is live: the host script and the expensive first pass (rsync); a no-op for
        # snapshot strategies. A failure here has locked nothing; the failure path releases the run guard.
        prepare = self._task(b.prepare, run, "$.prepared")
        warm_up = self._warm_up()
        self._catch(warm_up, b.warm_up, handle)
        warm_up.next(lock)
        with_lock = sfn.Choice(self, "Zero downtime?").when(_LOCKED, warm_up).otherwise(parts)
        for state in self._host_loop("host preparation", prepare, "$.prepared", with_lock):
            self._catch(state, b.prepare, handle)
        start_backup = self._task(b.start_backup, run, "$.task")
        self._catch(start_backup, b.start_backup, handle)
        poll = self._task(b.wait_drained, run, "$.drain")
        self._catch(poll, b.wait_drained, handle)
        wait_drain = sfn.Wait(
            self, "Wait for drain", time=sfn.WaitTime.seconds_path("$.run.flow.timing.poll_interval_seconds")
        )

        for part, step in (("home", b.copy_home), ("database", b.copy_database)):
            copy = self._task(step, {"run.$": "$.run", "part": part}, "$.part_result")
            report = self._task(b.progress, {"run.$": "$.run", "part": part}, None, state=f"Report {part} progress")
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
                .otherwise(self._locked_host_loop(part, step, copy, reported))
            )
        if self._mesh:
            parts.branch(self._mesh_branch())
        if self._search:
            parts.branch(self._search_branch())
        self._catch(parts, b.copy, handle)

        # The unlock step reports progress 100 first, in the same invocation: one Lambda round trip less under the lock.
        unlock = self._task(b.unlock, run, "$.unlocked")
        self._catch(unlock, b.unlock, handle)
        check = self._task(b.wait_snapshots, run, "$.snapshots")
        self._catch(check, b.wait_snapshots, handle)
        wait_snapshots = sfn.Wait(
            self,
            "Wait for snapshots",
            time=sfn.WaitTime.seconds_path("$.run.flow.timing.snapshot_poll_interval_seconds"),
        )
        finalize = self._task(b.finalize, {"run.$": "$.run", "unlocked.$": "$.unlocked"}, "$.summary")
        self._catch(finalize, b.finalize, handle)
        # Disaster-recovery copies, once every original is complete: started, then checked until complete (a no-op
        # without copy targets). Limits and throttling (AwsRateLimited) are retried with back-off.
        copies = self._task(b.copy_regions, run, "$.copies")
        self._catch(copies, b.copy_regions, handle)
        wait_copies = sfn.Wait(
            self, "Wait for copies", time=sfn.WaitTime.seconds_path("$.run.flow.timing.copy_poll_interval_seconds")
        )
        copies.next(
            sfn.Choice(self, "Copies complete?")
            .when(sfn.Condition.boolean_equals("$.copies.done", True), finalize)
            .otherwise(wait_copies.next(copies))
        )
        # After the unlock: the host copies (rsync, pg_dump) are archived and uploaded; nothing for snapshots.
        archive = self._task(b.archive, run, "$.archived")
        for state in self._host_loop("archive", archive, "$.archived", copies):
            self._catch(state, b.archive, handle)
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
        parts.next(sfn.Choice(self, "Locked for the copy?").when(_LOCKED, unlock).otherwise(not_locked))
        unlock.next(check)
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
