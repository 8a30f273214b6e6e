"""The safety net: an EventBridge rule on the backup state machines' ABORTED / TIMED_OUT / FAILED status
changes, delivering to a Lambda that unlocks with the token the run stored (see functions/safety_net.py)."""

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
        self, scope: Construct, id: str, *, factory: FunctionFactory, state_machines: list[sfn.IStateMachine]
    ) -> None:
        super().__init__(scope, id)
        self.function: lambda_.Function = factory.make(
            "SafetyNetFn", "functions.handlers.safety_net.handler", timeout_s=300, description="safety net"
        )
        self.rule = events.Rule(
            self,
            "ExecutionEnded",
            description="Backup executions that ended without their own cleanup: unlock and clean up",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={
                    "status": ["ABORTED", "TIMED_OUT", "FAILED"],
                    "stateMachineArn": [m.state_machine_arn for m in state_machines],
                },
            ),
        )
        self.rule.add_target(targets.LambdaFunction(self.function, retry_attempts=8, max_event_age=Duration.hours(6)))
