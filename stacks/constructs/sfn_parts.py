"""What both state machines are built from: Lambda tasks (the payload is the result, Lambda service errors are
retried, and the errors a step names, e.g. BitbucketUnavailable, get a shorter retry on top of the code's own),
and a Standard state machine with full logging and tracing."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

LAMBDA_ERRORS = [
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]


def lambda_task(
    scope: Construct,
    id: str,
    fn: lambda_.IFunction,
    payload: dict[str, Any],
    result_path: str | None,
    *,
    retry_interval_s: int,
    retry_on: list[str] | None = None,
    retry_attempts: int = 2,
) -> tasks.LambdaInvoke:
    task = tasks.LambdaInvoke(
        scope,
        id,
        lambda_function=fn,
        payload=sfn.TaskInput.from_object(payload),
        payload_response_only=True,
        retry_on_service_exceptions=False,
        result_path=result_path if result_path is not None else sfn.JsonPath.DISCARD,
    )
    task.add_retry(errors=LAMBDA_ERRORS, interval=Duration.seconds(retry_interval_s), max_attempts=3, backoff_rate=2)
    if retry_on:
        task.add_retry(
            errors=retry_on,
            interval=Duration.seconds(retry_interval_s),
            max_attempts=retry_attempts,  # on top of the code's own retries
            backoff_rate=2,
        )
    return task


def standard_state_machine(
    scope: Construct, definition: sfn.IChainable, *, name: str | None, timeout: Duration, comment: str
) -> sfn.StateMachine:
    # Kept when the stack is deleted: the logs of the runs that led up to it.
    log_group = logs.LogGroup(
        scope, "StateMachineLogs", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.RETAIN
    )
    return sfn.StateMachine(
        scope,
        "StateMachine",
        state_machine_name=name,
        state_machine_type=sfn.StateMachineType.STANDARD,
        definition_body=sfn.DefinitionBody.from_chainable(definition),
        timeout=timeout,
        tracing_enabled=True,
        # Execution data stays out of the logs: the history already has it, and logs travel further.
        logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        comment=comment,
    )


def last_resort(
    scope: Construct, task: tasks.LambdaInvoke, id: str, *, error: str, cause: str, result_path: str
) -> None:
    """When a failure path's own step fails: the execution fails with `error` and says what to check by hand."""
    task.add_catch(sfn.Fail(scope, id, error=error, cause=cause), errors=["States.ALL"], result_path=result_path)
