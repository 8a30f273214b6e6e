"""A small factory for the workflow's Lambdas: one role and one log group each, same asset and settings."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from functions.models.part_config import NetworkConfig
from stacks import nag


@dataclass(frozen=True)
class FunctionSettings:
    code: lambda_.Code
    environment: dict[str, str]
    network: NetworkConfig | None = None
    memory_mb: int = 256
    log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS


class FunctionFactory:
    def __init__(self, scope: Construct, settings: FunctionSettings) -> None:
        self._scope = scope
        self._settings = settings

    def make(
        self, id: str, handler: str, *, timeout_s: int, description: str, synchronous: bool = True
    ) -> lambda_.Function:
        """`synchronous`: only a state machine invokes it (a rule or schedule invokes asynchronously, and such a
        function needs its own answer to a failed invocation: a dead-letter queue or an alarm)."""
        s = self._settings
        # Kept when the stack is deleted: the logs of the runs that led up to it.
        log_group = logs.LogGroup(
            self._scope, f"{id}Logs", retention=s.log_retention, removal_policy=RemovalPolicy.RETAIN
        )
        role = iam.Role(
            self._scope,
            f"{id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Bitbucket DIY backup: {description}",
        )
        # Logs only to its own group, instead of the managed basic-execution policy's "*".
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[log_group.log_group_arn]
            )
        )
        function = lambda_.Function(
            self._scope,
            id,
            code=s.code,
            handler=handler,
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.X86_64,
            memory_size=s.memory_mb,
            timeout=Duration.seconds(timeout_s),
            environment=s.environment,
            role=role,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            description=f"Bitbucket DIY backup: {description}",
        )
        if s.network:
            # Subnets and security groups come from cdk.json; no VPC lookup, so synth stays offline.
            cfn = function.node.default_child
            assert isinstance(cfn, lambda_.CfnFunction)
            cfn.add_property_override(
                "VpcConfig",
                {"SubnetIds": s.network.subnet_ids, "SecurityGroupIds": s.network.security_group_ids},
            )
            role.add_managed_policy(
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaVPCAccessExecutionRole")
            )
        skips = [nag.LAMBDA_CONCURRENCY, nag.LAMBDA_ENVIRONMENT]
        skips += [nag.LAMBDA_SYNCHRONOUS] if synchronous else []
        skips += [] if s.network else [nag.LAMBDA_NO_NETWORK]
        nag.skip_checkov(function, *skips)
        return function
