"""A safety net: an EventBridge rule on state machines' status changes, delivering to a Lambda that cleans up what an
execution that ran no Catch left behind. The backup's unlocks with the token the run stored (functions/safety_net.py);
the restore's removes what a stopped restore created (functions/restore.py handle_stopped)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.constructs.functions import FunctionFactory


class SafetyNet(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        factory: FunctionFactory,
        state_machines: list[sfn.IStateMachine],
        function_id: str = "SafetyNetFn",
        handler: str = "functions.handlers.safety_net.handler",
        statuses: tuple[str, ...] = ("ABORTED", "TIMED_OUT", "FAILED"),
        description: str = "Backup executions that ended without their own cleanup: unlock and clean up",
    ) -> None:
        super().__init__(scope, id)
        self.function: lambda_.Function = factory.make(function_id, handler, timeout_s=300, description=id)
        self.rule = events.Rule(
            self,
            "ExecutionEnded",
            description=description,
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={
                    "status": list(statuses),
                    "stateMachineArn": [m.state_machine_arn for m in state_machines],
                },
            ),
        )
        self.rule.add_target(targets.LambdaFunction(self.function, retry_attempts=8, max_event_age=Duration.hours(6)))
