"""The restore state machine and its Lambdas.

validate (creates nothing) → restore the database → create the home volumes → check / wait until available
(bounded) → attach the home to a stopped instance and mount it (if asked) → hand over and notify.
Every task catches into one failure path that removes what this execution created (unless keep_on_failure),
notifies once and fails with the step's error.

With `for_drills`, a second state machine of the same definition and functions runs the restore drill's restores:
its validate step is told so by a constant in the definition, and checks that its execution is one of that state
machine's (a restore's execution input cannot make it a drill, which keeps its copy `restoring` and stays silent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from functions.models import environment
from functions.models.steps import OPERATIONS, RESTORE, Step
from stacks.constructs.backup_workflow import WorkflowTiming
from stacks.constructs.functions import FunctionFactory
from stacks.constructs.grants import FunctionGrants
from stacks.constructs.sfn_parts import lambda_task, last_resort, standard_state_machine

# A target instance that was just started needs a minute or two before its SSM agent takes commands.
MOUNT_RETRY_INTERVAL_FACTOR = 5
MOUNT_RETRY_ATTEMPTS = 8


class RestoreWorkflow(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        factory: FunctionFactory,
        timeout: Duration,
        timing: WorkflowTiming | None = None,
        state_machine_name: str | None = None,
        for_drills: bool = False,
        mesh: bool = False,
        search: bool = False,
    ) -> None:
        super().__init__(scope, id)
        self._timing = timing or WorkflowTiming()
        self._mesh = mesh  # the Mesh nodes' restore only where an instance has nodes (as the backup's copy)
        self._search = search  # the search index's likewise
        self.functions: dict[str, lambda_.Function] = {
            s.name: factory.make(s.function_id, s.handler, timeout_s=s.timeout_s, description=s.description)
            for s in RESTORE.functions
            if (mesh or s is not RESTORE.restore_mesh) and (search or s is not RESTORE.restore_search)
        }
        self.state_machine = standard_state_machine(
            self,
            self._definition(self, drill=False),
            name=state_machine_name,
            timeout=timeout,
            comment="Bitbucket DIY restore: validate, restore database and home into new resources, attach, report",
        )
        self.drill_state_machine: sfn.StateMachine | None = None
        # A fixed name: the functions recognise its executions by it (its ARN would make a dependency cycle).
        self.drill_state_machine_name = f"{Stack.of(self).stack_name[:50]}-{id[:14]}-drill-restore"
        if for_drills:
            scope = Construct(self, "ForDrills")
            name = self.drill_state_machine_name
            self.drill_state_machine = standard_state_machine(
                scope,
                self._definition(scope, drill=True),
                name=name,
                timeout=timeout,
                comment="Bitbucket DIY restore drill's restores: as the restore, into throw-away resources, silent",
            )
            for fn in self.functions.values():
                fn.add_environment(environment.DRILL_MACHINE, name)

    @property
    def state_machines(self) -> list[sfn.IStateMachine]:
        return [self.state_machine, *([self.drill_state_machine] if self.drill_state_machine else [])]

    def _task(self, scope: Construct, step: Step, payload: dict[str, Any], result_path: str) -> tasks.LambdaInvoke:
        return lambda_task(
            scope,
            step.state,
            self.functions[step.name],
            payload,
            result_path,
            retry_interval_s=self._timing.retry_interval_s,
            retry_on=list(step.retry_on) or None,
            retry_attempts=step.retry_attempts,
        )

    def _catch(self, scope: Construct, task: tasks.LambdaInvoke | sfn.Map, step: Step, failure: sfn.IChainable) -> None:
        """A task's failure, or a Map state's (the Mesh nodes' restores), is noted as its step's."""
        note = sfn.Pass(
            scope,
            step.failed_state,
            parameters={
                "state.$": "$",
                "failure": {"step": step.label, "Error.$": "$.failure.Error", "Cause.$": "$.failure.Cause"},
            },
        )
        note.next(failure)
        task.add_catch(note, errors=["States.ALL"], result_path="$.failure")

    def _definition(self, scope: Construct, *, drill: bool) -> sfn.IChainable:
        plan = {"plan.$": "$.plan"}
        created = {
            "plan.$": "$.plan",
            "created": {
                "database.$": "$.database",
                "home.$": "$.home",
                **({"mesh.$": "$.mesh"} if self._mesh else {}),
                **({"search.$": "$.search"} if self._search else {}),
            },
        }

        r = RESTORE
        handle = self._task(
            scope,
            r.handle_failure,
            {"state.$": "$.state", "failure.$": "$.failure", "execution.$": "$$.Execution.Id"},
            "$.outcome",
        )
        last_resort(
            scope,
            handle,
            "Cleanup failed",
            error="CleanupFailed",
            cause="the restore's failure path itself failed: look for resources tagged "
            "bitbucket-backup:restore-execution with this execution's ARN and remove them by hand",
            result_path="$.cleanup_error",
        )
        handle.next(sfn.Fail(scope, "Restore failed", error_path="$.outcome.error", cause_path="$.outcome.cause"))

        start = sfn.Pass(scope, "Start", parameters={"input.$": "$"})
        validate = self._task(
            scope,
            r.validate,
            {
                "input.$": "$.input",
                "execution.$": "$$.Execution.Id",
                "start_time.$": "$$.Execution.StartTime",
                **({"drill": True} if drill else {}),
            },
            "$.plan",
        )
        self._catch(scope, validate, r.validate, handle)

        restore_db = self._task(scope, r.restore_database, {**plan, "part": "database"}, "$.database")
        self._catch(scope, restore_db, r.restore_database, handle)
        restore_home = self._task(scope, r.restore_home, {**plan, "part": "home"}, "$.home")
        self._catch(scope, restore_home, r.restore_home, handle)
        check = self._task(scope, r.wait_restore, created, "$.status")
        self._catch(scope, check, r.wait_restore, handle)
        wait = sfn.Wait(
            scope,
            "Wait for restore",
            time=sfn.WaitTime.seconds_path("$.plan.flow.restore_poll_interval_seconds"),
        )
        attach = self._task(scope, r.attach_home, created, "$.attach")
        self._catch(scope, attach, r.attach_home, handle)
        mount = self._task(scope, r.mount_home, {**plan, "attach.$": "$.attach"}, "$.mount")
        mount.add_retry(
            errors=["TargetNotReady"],
            interval=Duration.seconds(self._timing.retry_interval_s * MOUNT_RETRY_INTERVAL_FACTOR),
            max_attempts=MOUNT_RETRY_ATTEMPTS,
            backoff_rate=1.5,
        )
        self._catch(scope, mount, r.mount_home, handle)
        finish = self._task(scope, r.finish, {"state.$": "$"}, "$.summary")
        self._catch(scope, finish, r.finish, handle)
        finish.next(sfn.Succeed(scope, "Restore complete", output_path="$.summary"))

        def skip(part: str) -> sfn.Pass:
            return sfn.Pass(
                scope,
                f"No {part} to restore",
                result=sfn.Result.from_object({"skipped": True}),
                result_path=f"$.{part}",
            )

        after_homes: sfn.IChainable = check
        if self._search:
            # The search index's snapshot, into new indices (after the homes: it needs nothing of theirs).
            restore_search = self._task(scope, r.restore_search, {**plan, "part": "search"}, "$.search")
            self._catch(scope, restore_search, r.restore_search, handle)
            restore_search.next(check)
            after_homes = (
                sfn.Choice(scope, "Restore search index?")
                .when(sfn.Condition.boolean_equals("$.plan.restore_search", True), restore_search)
                .otherwise(skip("search").next(check))
            )
        mesh_choice: sfn.IChainable = after_homes
        if self._mesh:
            # Every Mesh node's home at once: an iteration per node, each result kept with its part.
            each = sfn.Map(
                scope,
                "Restore Mesh nodes",
                items_path="$.plan.mesh",
                item_selector={"plan.$": "$.plan", "part.$": "$$.Map.Item.Value"},
                result_path="$.mesh",
            )
            restore_mesh = self._task(scope, r.restore_mesh, {**plan, "part.$": "$.part"}, "$.created")
            restore_mesh.next(
                sfn.Pass(scope, "Mesh node restore started", parameters={"part.$": "$.part", "created.$": "$.created"})
            )
            each.item_processor(restore_mesh)
            self._catch(scope, each, r.restore_mesh, handle)
            no_mesh = sfn.Pass(
                scope, "No Mesh nodes to restore", result=sfn.Result.from_array([]), result_path="$.mesh"
            )
            mesh_choice = (
                sfn.Choice(scope, "Restore Mesh nodes?")
                .when(sfn.Condition.is_present("$.plan.mesh[0]"), each.next(after_homes))
                .otherwise(no_mesh.next(after_homes))
            )
        home_choice = (
            sfn.Choice(scope, "Restore home?")
            .when(sfn.Condition.boolean_equals("$.plan.restore_home", True), restore_home.next(mesh_choice))
            .otherwise(skip("home").next(mesh_choice))
        )
        restore_db.next(home_choice)
        skip_db = skip("database").next(home_choice)
        mount_choice = (
            sfn.Choice(scope, "Mount home?")
            .when(sfn.Condition.boolean_equals("$.plan.mount", True), mount.next(finish))
            .otherwise(finish)
        )
        attach.next(mount_choice)
        check.next(
            sfn.Choice(scope, "Restored?")
            .when(
                sfn.Condition.boolean_equals("$.status.ready", True),
                sfn.Choice(scope, "Attach home?")
                .when(sfn.Condition.boolean_equals("$.plan.attach", True), attach)
                .otherwise(finish),
            )
            .otherwise(wait.next(check))
        )
        return start.next(validate).next(
            sfn.Choice(scope, "Restore database?")
            .when(sfn.Condition.boolean_equals("$.plan.restore_database", True), restore_db)
            .otherwise(skip_db)
        )


@dataclass(frozen=True)
class RestoreGrants:
    """What each of the restore's functions may do, a field per step of RESTORE (stacks/backup_stack.py builds it;
    grants.apply applies it); restore_safety_net is the restore's safety net (stacks/constructs/safety_net.py),
    when the stack has one."""

    validate: FunctionGrants
    restore_database: FunctionGrants
    restore_home: FunctionGrants
    wait_restore: FunctionGrants
    attach_home: FunctionGrants
    mount_home: FunctionGrants
    finish: FunctionGrants
    handle_failure: FunctionGrants
    restore_safety_net: FunctionGrants | None = None
    # Only where an instance of the state machine has Mesh nodes (the function exists only there).
    restore_mesh: FunctionGrants | None = None
    # Only where an instance of the state machine backs its search index up.
    restore_search: FunctionGrants | None = None

    def __post_init__(self) -> None:
        names = {*(s.name for s in RESTORE.functions), OPERATIONS.restore_safety_net.name}
        assert set(self.__dataclass_fields__) == names, "a field per step"
