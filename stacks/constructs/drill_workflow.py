"""The restore drill state machine (functions.drill) and its Lambdas.

plan → the drill's own restore state machine (`startExecution.sync:2`; only its executions run as drills) → start
the checks on the drill host → check until done (bounded by the command's timeout) → record the result on the
backup, tear the copy down, metric and notice. Every failure goes to the same finish step (it records
`verify-failed` and tears down too), and the execution then fails, so a failed drill shows as a failed execution
as well as in the DrillFailed metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from functions.models import environment
from functions.models.steps import DRILL, Caught, Step
from stacks.constructs.backup_workflow import WorkflowTiming
from stacks.constructs.functions import FunctionFactory
from stacks.constructs.grants import FunctionGrants
from stacks.constructs.restore_workflow import RestoreWorkflow
from stacks.constructs.sfn_parts import lambda_task, last_resort, standard_state_machine


class DrillWorkflow(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        factory: FunctionFactory,
        restore: RestoreWorkflow,
        timeout: Duration,
        timing: WorkflowTiming | None = None,
    ) -> None:
        super().__init__(scope, id)
        self._timing = timing or WorkflowTiming()
        assert restore.drill_state_machine is not None, "the restore workflow is made for_drills"
        self._restore = restore.drill_state_machine
        self.functions: dict[str, lambda_.Function] = {
            s.name: factory.make(s.function_id, s.handler, timeout_s=s.timeout_s, description=s.description)
            for s in DRILL.functions
        }
        for fn in self.functions.values():  # the teardown removes only what that state machine's executions made
            fn.add_environment(environment.DRILL_MACHINE, restore.drill_state_machine_name)
        self.state_machine = standard_state_machine(
            self,
            self._definition(),
            name=None,
            timeout=timeout,
            comment="Bitbucket DIY restore drill: restore the newest backup into throw-away resources, check, remove",
        )

    def _task(self, step: Step, payload: dict[str, Any], result_path: str) -> tasks.LambdaInvoke:
        return lambda_task(
            self,
            step.state,
            self.functions[step.name],
            payload,
            result_path,
            retry_interval_s=self._timing.retry_interval_s,
        )

    def _definition(self) -> sfn.IChainable:
        d = DRILL
        finish = self._task(d.finish, {"state.$": "$.state", "failure.$": "$.failure"}, "$.outcome")
        last_resort(
            self,
            finish,
            "Teardown failed",
            error="DrillTeardownFailed",
            cause="the drill could not record its result or tear down its copy: look for resources tagged "
            "bitbucket-backup:status=restoring of this instance and remove them by hand",
            result_path="$.teardown_error",
        )
        finish.next(
            sfn.Choice(self, "Verified?")
            .when(
                sfn.Condition.boolean_equals("$.outcome.verified", True),
                sfn.Succeed(self, "Drill passed", output_path="$.outcome"),
            )
            .otherwise(sfn.Fail(self, "Drill failed", error="DrillFailed", cause_path="$.outcome.cause"))
        )

        notes: dict[str, sfn.Pass] = {}

        def catch(task: sfn.TaskStateBase, step: Caught) -> None:
            if step.name not in notes:
                notes[step.name] = sfn.Pass(
                    self,
                    step.failed_state,
                    parameters={
                        "state.$": "$",
                        "failure": {"step": step.label, "Error.$": "$.failure.Error", "Cause.$": "$.failure.Cause"},
                    },
                )
                notes[step.name].next(finish)
            task.add_catch(notes[step.name], errors=["States.ALL"], result_path="$.failure")

        plan = self._task(d.plan, {"input.$": "$.input", "execution.$": "$$.Execution.Id"}, "$.plan")
        catch(plan, d.plan)
        restore = tasks.StepFunctionsStartExecution(
            self,
            d.restore.state,
            state_machine=self._restore,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            input=sfn.TaskInput.from_json_path_at("$.plan.restore"),
            result_selector={"output.$": "$.Output", "execution.$": "$.ExecutionArn"},
            result_path="$.restored",
        )
        catch(restore, d.restore)
        start_checks = self._task(d.check, {"plan.$": "$.plan", "restored.$": "$.restored.output"}, "$.check")
        catch(start_checks, d.check)
        checking = {"plan.$": "$.plan", "check.$": "$.check"}
        status = self._task(d.check_status, checking, "$.checked")
        catch(status, d.check)  # part of the checks, as users see it
        interval = sfn.WaitTime.seconds_path("$.plan.flow.host_poll_interval_seconds")
        wait = sfn.Wait(self, "Wait for the checks", time=interval)
        passed = sfn.Pass(self, "Checks passed", parameters={"state.$": "$", "failure": {}})
        passed.next(finish)
        status.next(
            sfn.Choice(self, "Checks done?")
            .when(sfn.Condition.boolean_equals("$.checked.done", True), passed)
            .otherwise(wait.next(status))
        )
        start_checks.next(
            sfn.Choice(self, "Anything to check on the host?")
            .when(sfn.Condition.is_not_null("$.check.command"), status)
            .otherwise(passed)
        )
        start = sfn.Pass(self, "Start", parameters={"input.$": "$"})
        return start.next(plan).next(restore).next(start_checks)


@dataclass(frozen=True)
class DrillGrants:
    """What each of the drill's functions may do (stacks/backup_stack.py builds it; grants.apply applies it)."""

    plan: FunctionGrants
    check: FunctionGrants
    check_status: FunctionGrants
    finish: FunctionGrants

    def __post_init__(self) -> None:
        assert set(self.__dataclass_fields__) == {s.name for s in DRILL.functions}, "a field per step"
