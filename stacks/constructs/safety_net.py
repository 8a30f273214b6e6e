"""A safety net: an EventBridge rule on state machines' status changes, delivering to a Lambda that cleans up what an
execution that ran no Catch left behind. The backup's unlocks with the token the run stored (functions/safety_net.py);
the restore's removes what a stopped restore created (functions/restore.py handle_stopped).

A safety net that fails must not vanish: EventBridge retries a delivery, Lambda retries a failed invocation, and what
still fails lands in an encrypted dead-letter queue, whose depth alarms (stacks/constructs/monitoring.py).
"""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.models.steps import OPERATIONS, Function
from stacks.constructs.functions import FunctionFactory

# How long an event may wait for delivery or a retry: a stuck lock is worth unlocking hours later too.
MAX_EVENT_AGE = Duration.hours(6)
DELIVERY_ATTEMPTS = 8  # EventBridge -> Lambda (throttling, Lambda unavailable)
INVOCATION_RETRIES = 2  # the function failed: Lambda's asynchronous retries (its maximum)
DEAD_LETTER_RETENTION = Duration.days(14)  # SQS's maximum: time to read what failed and act on it


class SafetyNet(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        factory: FunctionFactory,
        state_machines: list[sfn.IStateMachine],
        key: kms.IKey,
        step: Function = OPERATIONS.safety_net,
        statuses: tuple[str, ...] = ("ABORTED", "TIMED_OUT", "FAILED"),
        description: str = "Backup executions that ended without their own cleanup: unlock and clean up",
    ) -> None:
        super().__init__(scope, id)
        self.description = description
        self.function: lambda_.Function = factory.make(
            step.function_id, step.handler, timeout_s=step.timeout_s, description=id, synchronous=False
        )
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
        )
        _allow_eventbridge_to_encrypt(key)
        # What Lambda could not process after its retries (the event names the stopped execution).
        self.dead_letters.grant_send_messages(self.function)
        cfn = self.function.node.default_child
        assert isinstance(cfn, lambda_.CfnFunction)
        cfn.dead_letter_config = lambda_.CfnFunction.DeadLetterConfigProperty(target_arn=self.dead_letters.queue_arn)
        self.function.configure_async_invoke(retry_attempts=INVOCATION_RETRIES, max_event_age=MAX_EVENT_AGE)
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
        # What EventBridge could not deliver after its retries.
        self.rule.add_target(
            targets.LambdaFunction(
                self.function,
                retry_attempts=DELIVERY_ATTEMPTS,
                max_event_age=MAX_EVENT_AGE,
                dead_letter_queue=self.dead_letters,
            )
        )


def _allow_eventbridge_to_encrypt(key: kms.IKey) -> None:
    """EventBridge writes undeliverable events to the encrypted queue: it needs the key, for this account's rules
    only. (The rule's own ARN would make the key depend on the rule, which depends on the queue and the key.)"""
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="EventBridgeRulesToTheEncryptedDeadLetterQueues",
            principals=[iam.ServicePrincipal("events.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=["*"],
            conditions={
                "ArnLike": {"aws:SourceArn": f"arn:{Aws.PARTITION}:events:{Aws.REGION}:{Aws.ACCOUNT_ID}:rule/*"},
                "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
            },
        )
    )
