"""IAM statements per capability, so the stack can give each function exactly what its step needs.

Deleting and re-tagging snapshots is allowed only on resources that carry this tool's marker tag: a bug (or a
wrong config) cannot delete or relabel anybody else's snapshots.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam

from functions.models.config import AuroraDatabaseConfig, EbsHomeConfig, InstanceConfig, RdsDatabaseConfig
from functions.strategies import INSTANCE_TAG, TOOL_TAG, TOOL_VALUE


def _format(service: str, resource: str) -> ArnFormat:
    if service in ("rds", "secretsmanager"):
        return ArnFormat.COLON_RESOURCE_NAME
    return ArnFormat.SLASH_RESOURCE_NAME if "/" in resource else ArnFormat.NO_RESOURCE_NAME


def secret_arn(stack: Stack, secret: str) -> str:
    if secret.startswith("arn:"):
        return secret
    # A secret's ARN ends in a random 6-character suffix that only AWS knows.
    return stack.format_arn(
        service="secretsmanager",
        resource="secret",
        resource_name=f"{secret}-??????",
        arn_format=_format("secretsmanager", ""),
    )


def read_secrets(stack: Stack, instances: list[InstanceConfig]) -> iam.PolicyStatement:
    return iam.PolicyStatement(
        actions=["secretsmanager:GetSecretValue"],
        resources=sorted({secret_arn(stack, i.credentials_secret) for i in instances}),
    )


def describe(instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """Describe calls: EC2 and RDS describe actions do not support resource-level restrictions."""
    actions = set()
    if any(isinstance(i.home, EbsHomeConfig) for i in instances):
        actions |= {"ec2:DescribeInstances", "ec2:DescribeSnapshots"}
    if any(isinstance(i.database, RdsDatabaseConfig) for i in instances):
        actions |= {"rds:DescribeDBInstances", "rds:DescribeDBSnapshots"}
    if any(isinstance(i.database, AuroraDatabaseConfig) for i in instances):
        actions |= {"rds:DescribeDBClusters", "rds:DescribeDBClusterSnapshots"}
    return [iam.PolicyStatement(actions=sorted(actions), resources=["*"])] if actions else []


def create_home_snapshots(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    ebs = [i.home for i in instances if isinstance(i.home, EbsHomeConfig)]
    if not ebs:
        return []
    ec2_instances = sorted(
        {stack.format_arn(service="ec2", resource="instance", resource_name=h.instance_id) for h in ebs}
    )
    return [
        iam.PolicyStatement(
            actions=["ec2:CreateSnapshots"],
            # Volumes are chosen by the call's exclusions; the instance is what the config names.
            resources=[*ec2_instances, stack.format_arn(service="ec2", resource="volume", resource_name="*")],
        ),
        iam.PolicyStatement(
            actions=["ec2:CreateSnapshots"],
            resources=[f"arn:{stack.partition}:ec2:{stack.region}::snapshot/*"],
            conditions={"StringEquals": {f"aws:RequestTag/{TOOL_TAG}": TOOL_VALUE}},
        ),
        iam.PolicyStatement(
            actions=["ec2:CreateTags"],
            resources=[f"arn:{stack.partition}:ec2:{stack.region}::snapshot/*"],
            conditions={"StringEquals": {"ec2:CreateAction": "CreateSnapshots"}},
        ),
        iam.PolicyStatement(
            actions=["ssm:SendCommand"],
            resources=[
                *ec2_instances,
                f"arn:{stack.partition}:ssm:{stack.region}::document/AWS-RunShellScript",
            ],
        ),
        iam.PolicyStatement(actions=["ssm:GetCommandInvocation"], resources=["*"]),
    ]


def create_db_snapshots(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """Create and tag snapshots only under names this tool makes (`<instance>-<date>-<time>`), so the
    function cannot put the tool's tag on anyone else's snapshot (which would make it deletable)."""

    def arn(resource: str, name: str) -> str:
        return stack.format_arn(service="rds", resource=resource, resource_name=name, arn_format=_format("rds", ""))

    statements = []
    rds = [i for i in instances if isinstance(i.database, RdsDatabaseConfig)]
    aurora = [i for i in instances if isinstance(i.database, AuroraDatabaseConfig)]
    if rds:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:CreateDBSnapshot", "rds:AddTagsToResource"],
                resources=sorted(
                    {arn("db", i.database.instance_id) for i in rds if isinstance(i.database, RdsDatabaseConfig)}
                    | {arn("snapshot", f"{i.name}-*") for i in rds}
                ),
            )
        )
    if aurora:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:CreateDBClusterSnapshot", "rds:AddTagsToResource"],
                resources=sorted(
                    {
                        arn("cluster", i.database.cluster_id)
                        for i in aurora
                        if isinstance(i.database, AuroraDatabaseConfig)
                    }
                    | {arn("cluster-snapshot", f"{i.name}-*") for i in aurora}
                ),
            )
        )
    return statements


def manage_own_snapshots(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """Re-tag and delete, only where the tool's marker tag is present and names one of these instances."""
    own = {
        "StringEquals": {
            f"aws:ResourceTag/{TOOL_TAG}": TOOL_VALUE,
            f"aws:ResourceTag/{INSTANCE_TAG}": sorted(i.name for i in instances),
        }
    }
    statements = []
    if any(isinstance(i.home, EbsHomeConfig) for i in instances):
        statements.append(
            iam.PolicyStatement(
                actions=["ec2:CreateTags", "ec2:DeleteSnapshot"],
                resources=[f"arn:{stack.partition}:ec2:{stack.region}::snapshot/*"],
                conditions=own,
            )
        )
    if any(isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig)) for i in instances):
        statements.append(
            iam.PolicyStatement(
                actions=["rds:AddTagsToResource", "rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"],
                resources=[
                    stack.format_arn(
                        service="rds", resource="snapshot", resource_name="*", arn_format=_format("rds", "")
                    ),
                    stack.format_arn(
                        service="rds", resource="cluster-snapshot", resource_name="*", arn_format=_format("rds", "")
                    ),
                ],
                conditions=own,
            )
        )
    return statements
