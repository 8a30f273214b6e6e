"""IAM statements per capability, so the stack can give each function exactly what its step needs.

Deleting and re-tagging snapshots is allowed only on resources that carry this tool's marker tag: a bug (or a
wrong config) cannot delete or relabel anybody else's snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn

from functions.models.config import InstanceConfig
from functions.models.part_config import (
    AuroraDatabaseConfig,
    CopiedHomeConfig,
    DumpedDatabaseConfig,
    EbsHomeConfig,
    RdsDatabaseConfig,
    RsyncHomeConfig,
)
from functions.strategies import (
    BACKUP_ID_TAG,
    COMPLETE,
    COPY_OF_TAG,
    DEPLOYMENT_TAG,
    FAILED,
    IN_PROGRESS,
    INSTANCE_TAG,
    PART_TAG,
    RESTORE_TAG,
    SOURCE_REGION_TAG,
    STATUS_TAG,
    TOOL_TAG,
    TOOL_VALUE,
    VERIFIED_TAG,
    VERIFY_FAILED_TAG,
    deployment_id_for,
)

# Which homes a statement covers: the instances' own ("shared"), their Mesh nodes' ("mesh"), or both.
Homes = Literal["all", "shared", "mesh"]

# The tag keys each kind of request may set (aws:TagKeys): a role can write no other key, so it cannot, for example,
# give somebody else's resource the tool's marker or a restore execution's tag.
CATALOG_KEYS = (TOOL_TAG, DEPLOYMENT_TAG, INSTANCE_TAG, BACKUP_ID_TAG, PART_TAG, STATUS_TAG, "Name")
COPY_KEYS = (*CATALOG_KEYS, COPY_OF_TAG, SOURCE_REGION_TAG, "Device")
RESTORE_KEYS = (*CATALOG_KEYS, RESTORE_TAG, "Device")
VERDICT_KEYS = (VERIFIED_TAG, VERIFY_FAILED_TAG)


def deployment(stack: Stack) -> str:
    """This deployment's id (functions.strategies.deployment_id_for), tokens resolved by CloudFormation."""
    return deployment_id_for(stack.account, stack.region, stack.stack_name)


def arn_format(service: str, resource: str) -> ArnFormat:
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
        arn_format=arn_format("secretsmanager", ""),
    )


def read_secrets(stack: Stack, instances: list[InstanceConfig]) -> iam.PolicyStatement:
    return iam.PolicyStatement(
        actions=["secretsmanager:GetSecretValue"],
        resources=sorted({secret_arn(stack, i.credentials_secret) for i in instances}),
    )


def describe_executions(stack: Stack, machine: sfn.IStateMachine) -> iam.PolicyStatement:
    """Whether an execution of this state machine still runs (its executions only)."""
    return iam.PolicyStatement(
        actions=["states:DescribeExecution"],
        resources=[
            stack.format_arn(
                service="states",
                resource="execution",
                resource_name=f"{machine.state_machine_name}:*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
        ],
    )


def describe(instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """Describe calls: EC2 and RDS describe actions do not support resource-level restrictions."""
    actions = set()
    if any(isinstance(h, EbsHomeConfig) for h in homes(instances)):
        actions |= {"ec2:DescribeInstances", "ec2:DescribeSnapshots"}
        if any(i.immutable for i in instances):
            actions |= {"ec2:DescribeLockedSnapshots"}
    if any(isinstance(i.database, RdsDatabaseConfig) for i in instances):
        actions |= {"rds:DescribeDBInstances", "rds:DescribeDBSnapshots"}
    if any(isinstance(i.database, AuroraDatabaseConfig) for i in instances):
        actions |= {"rds:DescribeDBClusters", "rds:DescribeDBClusterSnapshots"}
    return [iam.PolicyStatement(actions=sorted(actions), resources=["*"])] if actions else []


def read_config_path(stack: Stack, prefix: str) -> iam.PolicyStatement:
    """GetParametersByPath on the instances' configuration path (the parameters directly under it)."""
    return iam.PolicyStatement(
        actions=["ssm:GetParametersByPath"],
        resources=[stack.format_arn(service="ssm", resource="parameter", resource_name=prefix.lstrip("/"))],
    )


def homes(instances: list[InstanceConfig], only: Homes = "all") -> list[CopiedHomeConfig]:
    """The homes these instances copy: `shared` (each instance's home), `mesh` (its Mesh nodes') or `all`."""
    return [
        home
        for i in instances
        for part, home in i.homes.items()
        if only == "all" or (part == "home") == (only == "shared")
    ]


def create_home_snapshots(
    stack: Stack, instances: list[InstanceConfig], documents: list[str], only: Homes = "shared"
) -> list[iam.PolicyStatement]:
    """Snapshots of the `only` homes on EBS (the shared home's copy step, or the Mesh nodes')."""
    ebs = [h for h in homes(instances, only) if isinstance(h, EbsHomeConfig)]
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
            conditions=new_catalog_entry(stack, instances, IN_PROGRESS, CATALOG_KEYS),
        ),
        iam.PolicyStatement(
            actions=["ec2:CreateTags"],
            resources=[f"arn:{stack.partition}:ec2:{stack.region}::snapshot/*"],
            conditions={"StringEquals": {"ec2:CreateAction": "CreateSnapshots"}},
        ),
        # The device name and a readable Name on the snapshots just made (still in progress); nothing else.
        iam.PolicyStatement(
            actions=["ec2:CreateTags"],
            resources=[f"arn:{stack.partition}:ec2:{stack.region}::snapshot/*"],
            conditions=retag_own(stack, instances, keys=("Device", "Name"), was=[IN_PROGRESS]),
        ),
        # Flush and unfreeze: the stack's own documents only, on the configured instances only.
        *run_commands_on(stack, ec2_instances, documents),
    ]


def create_db_snapshots(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """Create snapshots only under names this tool makes (`<instance>-<date>-<time>`) and tag them only as they are
    created (no status tag yet, the catalog tags with `in-progress`): the function cannot put the tool's tag on
    anyone else's snapshot, nor move one of this tool's complete snapshots back to `in-progress`."""
    statements = []
    for kind, config, source, create in (
        ("snapshot", RdsDatabaseConfig, "db", "rds:CreateDBSnapshot"),
        ("cluster-snapshot", AuroraDatabaseConfig, "cluster", "rds:CreateDBClusterSnapshot"),
    ):
        chosen = [i for i in instances if isinstance(i.database, config)]
        if not chosen:
            continue
        sources = {rds_arn(stack, source, _source_id(i)) for i in chosen}
        snapshots = {rds_arn(stack, kind, f"{i.name}-*") for i in chosen}
        statements += [
            iam.PolicyStatement(
                actions=[create],
                resources=sorted(sources | snapshots),
                conditions=new_catalog_entry(stack, chosen, IN_PROGRESS, CATALOG_KEYS),
            ),
            iam.PolicyStatement(
                actions=["rds:AddTagsToResource"],
                resources=sorted(snapshots),
                conditions=new_catalog_entry(stack, chosen, IN_PROGRESS, CATALOG_KEYS, untagged=True),
            ),
        ]
    return statements


def undo_own_copies(stack: Stack, instances: list[InstanceConfig], only: Homes | None) -> list[iam.PolicyStatement]:
    """A copy step that finds its run already discarded once its copy is made undoes that copy (functions/backup.py):
    it deletes the snapshots of its own part (the `only` homes' on EBS; None: the database's) only while they are not
    complete, and cancels the host command it just sent (by its id: CancelCommand takes no resource)."""
    statements = []
    deletable = [IN_PROGRESS, FAILED]  # the failure path may have marked it failed meanwhile
    if only is not None:
        parts: list[object] = list(homes(instances, only))
        if any(isinstance(h, EbsHomeConfig) for h in parts):
            condition = delete_condition(stack, instances, deletable)
            own_part = "StringEquals" if only == "shared" else "StringLike"
            condition.setdefault(own_part, {})[f"aws:ResourceTag/{PART_TAG}"] = "home" if only == "shared" else "mesh-*"
            statements.append(
                iam.PolicyStatement(
                    actions=["ec2:DeleteSnapshot"],
                    resources=[f"arn:{stack.partition}:ec2:{stack.region}::snapshot/*"],
                    conditions=condition,
                )
            )
    else:
        parts = [i.database for i in instances]
        for kind, config, delete in (
            ("snapshot", RdsDatabaseConfig, "rds:DeleteDBSnapshot"),
            ("cluster-snapshot", AuroraDatabaseConfig, "rds:DeleteDBClusterSnapshot"),
        ):
            chosen = [i for i in instances if isinstance(i.database, config)]
            if chosen:
                condition = delete_condition(stack, chosen, deletable)
                condition["StringEquals"][f"aws:ResourceTag/{PART_TAG}"] = "database"
                statements.append(
                    iam.PolicyStatement(
                        actions=[delete],
                        resources=sorted({rds_arn(stack, kind, f"{i.name}-*") for i in chosen}),
                        conditions=condition,
                    )
                )
    if any(isinstance(part, RsyncHomeConfig | DumpedDatabaseConfig) for part in parts):
        statements.append(iam.PolicyStatement(actions=["ssm:CancelCommand"], resources=["*"]))
    return statements


def _source_id(instance: InstanceConfig) -> str:
    database = instance.database
    if isinstance(database, RdsDatabaseConfig):
        return database.instance_id
    assert isinstance(database, AuroraDatabaseConfig)
    return database.cluster_id


def new_catalog_entry(
    stack: Stack, instances: list[InstanceConfig], status: str, keys: tuple[str, ...], *, untagged: bool = False
) -> dict[str, dict[str, object]]:
    """A request that creates (or tags as it creates) an artifact: this tool's marker, this deployment, one of these
    instances, the given status, only catalog keys; with untagged, only on a resource that has no status tag yet
    (RDS tags in a separate authorization, which has no `ec2:CreateAction` to tie it to the create call)."""
    conditions: dict[str, dict[str, object]] = {
        "StringEquals": {
            f"aws:RequestTag/{TOOL_TAG}": TOOL_VALUE,
            f"aws:RequestTag/{DEPLOYMENT_TAG}": deployment(stack),
            f"aws:RequestTag/{INSTANCE_TAG}": sorted(i.name for i in instances),
            f"aws:RequestTag/{STATUS_TAG}": status,
        },
        "ForAllValues:StringEquals": {"aws:TagKeys": sorted(set(keys))},
    }
    if untagged:
        conditions["Null"] = {f"aws:ResourceTag/{STATUS_TAG}": "true"}
    return conditions


def retag_own(
    stack: Stack,
    instances: list[InstanceConfig],
    *,
    keys: tuple[str, ...],
    was: list[str] | None = None,
    to: list[str] | None = None,
) -> dict[str, dict[str, object]]:
    """Re-tagging one of this deployment's artifacts of these instances: only `keys`, only from a status in `was`,
    only to a status in `to` (a status may never go back: nothing becomes `in-progress` or `restoring` again)."""
    equals: dict[str, object] = dict(own_resources(stack, instances)["StringEquals"])
    if was is not None:
        equals[f"aws:ResourceTag/{STATUS_TAG}"] = was
    if to is not None:
        equals[f"aws:RequestTag/{STATUS_TAG}"] = to
    return {"StringEquals": equals, "ForAllValues:StringEquals": {"aws:TagKeys": sorted(set(keys))}}


# Who may do what to a backup's artifacts once they exist: the pruning step (finalize) marks them complete and is the
# only one that deletes complete ones; the failure path and the safety net mark in-progress ones failed (or complete)
# and delete only those not complete; the drill records its verdict on complete ones and deletes nothing.
PRUNE, FAILURE, VERIFY = "prune", "failure", "verify"


@dataclass(frozen=True)
class _Rule:
    keys: tuple[str, ...]  # the tag keys the role may write
    was: list[str]  # the statuses it may re-tag from
    to: list[str] | None  # the statuses it may set (None: it sets no status)
    deletable: list[str] | None  # the statuses it may delete ([]: any; None: it deletes nothing)


RULES = {
    PRUNE: _Rule(keys=(STATUS_TAG,), was=[IN_PROGRESS], to=[COMPLETE], deletable=[]),
    FAILURE: _Rule(keys=(STATUS_TAG,), was=[IN_PROGRESS], to=[FAILED, COMPLETE], deletable=[IN_PROGRESS, FAILED]),
    VERIFY: _Rule(keys=VERDICT_KEYS, was=[COMPLETE], to=None, deletable=None),
}


def delete_condition(
    stack: Stack, instances: list[InstanceConfig], statuses: list[str]
) -> dict[str, dict[str, object]]:
    own = own_resources(stack, instances)
    if not statuses:
        return own
    return {"StringEquals": {**own["StringEquals"], f"aws:ResourceTag/{STATUS_TAG}": statuses}}


def manage_own_snapshots(stack: Stack, instances: list[InstanceConfig], role: str) -> list[iam.PolicyStatement]:
    """Re-tag and delete this deployment's snapshots of these instances, as `role` (PRUNE, FAILURE or VERIFY) may."""
    rule = RULES[role]
    retag = retag_own(stack, instances, keys=rule.keys, was=rule.was, to=rule.to)
    statements = []
    ebs = any(isinstance(h, EbsHomeConfig) for h in homes(instances))
    databases = any(isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig)) for i in instances)
    snapshots = [f"arn:{stack.partition}:ec2:{stack.region}::snapshot/*"]
    db_snapshots = [rds_arn(stack, "snapshot", "*"), rds_arn(stack, "cluster-snapshot", "*")]
    if ebs:
        statements.append(iam.PolicyStatement(actions=["ec2:CreateTags"], resources=snapshots, conditions=retag))
        if rule.deletable is not None:
            statements.append(
                iam.PolicyStatement(
                    actions=["ec2:DeleteSnapshot"],
                    resources=snapshots,
                    conditions=delete_condition(stack, instances, rule.deletable),
                )
            )
        if role == PRUNE:
            # Immutable backups: the pruning step locks the complete snapshots (functions/strategies/amazon_ebs.py).
            statements.append(
                iam.PolicyStatement(
                    actions=["ec2:LockSnapshot"],
                    resources=snapshots,
                    conditions=delete_condition(stack, instances, [COMPLETE]),
                )
            )
    if databases:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:AddTagsToResource"],
                resources=db_snapshots,
                conditions=retag,
            )
        )
        if rule.deletable is not None:
            statements.append(
                iam.PolicyStatement(
                    actions=["rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"],
                    resources=db_snapshots,
                    conditions=delete_condition(stack, instances, rule.deletable),
                )
            )
    return statements


def host_commands(
    stack: Stack, instances: list[InstanceConfig], documents: list[str], only: Homes = "all"
) -> list[iam.PolicyStatement]:
    """Run Command on the hosts the copy-type strategies (rsync, postgresql, mysql) name, with the given documents of
    the stack's own (never AWS-RunShellScript), and reading its results. `only`: the homes' hosts among them (the
    database's host counts as shared)."""
    parts: list[object] = [*homes(instances, only), *([i.database for i in instances] if only != "mesh" else [])]
    hosts = sorted(
        {
            stack.format_arn(service="ec2", resource="instance", resource_name=part.instance_id)
            for part in parts
            if isinstance(part, RsyncHomeConfig | DumpedDatabaseConfig)
        }
    )
    return run_commands_on(stack, hosts, documents)


def cancel_host_commands(instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """A failure path stops its run's host commands still running before it removes what they write: it lists the
    host's commands (finding its run's by their comment), cancels them and waits for their end. SSM's ListCommands
    and CancelCommand take no resource: the code cancels only commands of this stack's documents and this run."""
    copied = [*homes(instances), *(i.database for i in instances)]
    if not any(isinstance(part, RsyncHomeConfig | DumpedDatabaseConfig) for part in copied):
        return []
    return [
        iam.PolicyStatement(
            actions=["ssm:CancelCommand", "ssm:GetCommandInvocation", "ssm:ListCommands"], resources=["*"]
        )
    ]


def run_commands_on(stack: Stack, hosts: list[str], documents: list[str]) -> list[iam.PolicyStatement]:
    """SendCommand names both the instance and the document: both must be allowed. With no document only the
    results may be read (a step that checks a command another one started)."""
    if not hosts:
        return []
    read = iam.PolicyStatement(actions=["ssm:GetCommandInvocation"], resources=["*"])
    if not documents:
        return [read]
    return [iam.PolicyStatement(actions=["ssm:SendCommand"], resources=[*hosts, *documents]), read]


def read_archives(bucket_arn: str) -> list[iam.PolicyStatement]:
    """Listing the archive catalog: objects under the bucket, their tags and metadata."""
    return [
        iam.PolicyStatement(actions=["s3:ListBucket", "s3:ListBucketVersions"], resources=[bucket_arn]),
        iam.PolicyStatement(
            actions=[
                "s3:GetObject",
                "s3:GetObjectRetention",
                "s3:GetObjectTagging",
                "s3:GetObjectVersion",
                "s3:GetObjectVersionTagging",
            ],
            resources=[f"{bucket_arn}/*"],
        ),
    ]


def _own_objects(stack: Stack) -> dict[str, dict[str, object]]:
    return {
        "StringEquals": {
            f"s3:ExistingObjectTag/{TOOL_TAG}": TOOL_VALUE,
            f"s3:ExistingObjectTag/{DEPLOYMENT_TAG}": deployment(stack),
        }
    }


def _instance_objects(bucket_arn: str, instances: list[InstanceConfig]) -> list[str]:
    """Archives live under `<instance>/<backup id>/…`: only these instances' prefixes."""
    return sorted(f"{bucket_arn}/{i.name}/*" for i in instances if i.uses_archive)


def manage_own_archives(
    stack: Stack, bucket_arn: str, instances: list[InstanceConfig], role: str
) -> list[iam.PolicyStatement]:
    """Re-tagging and deleting archives, as manage_own_snapshots allows the role: only these instances' objects
    (their key prefix) carrying this tool's marker tag and this deployment's id."""
    objects = _instance_objects(bucket_arn, instances)
    return archive_rules(stack, objects, RULES[role]) if objects else []


def archive_rules(stack: Stack, objects: list[str], rule: _Rule) -> list[iam.PolicyStatement]:
    """PutObjectTagging replaces the whole tag set, so the keys cannot be limited; the marker, deployment and (when
    the role sets one) the status of the new set can, and so can the status of the object as it is."""
    own = _own_objects(stack)["StringEquals"]
    retag: dict[str, object] = {
        **own,
        f"s3:ExistingObjectTag/{STATUS_TAG}": rule.was,
        f"s3:RequestObjectTag/{TOOL_TAG}": TOOL_VALUE,
        f"s3:RequestObjectTag/{DEPLOYMENT_TAG}": own[f"s3:ExistingObjectTag/{DEPLOYMENT_TAG}"],
    }
    if rule.to is not None:
        retag[f"s3:RequestObjectTag/{STATUS_TAG}"] = rule.to
    statements = [
        iam.PolicyStatement(
            actions=["s3:PutObjectTagging", "s3:PutObjectVersionTagging"],
            resources=objects,
            conditions={"StringEquals": retag},
        )
    ]
    if rule is RULES[PRUNE]:
        # Immutable backups: the pruning step retains each complete archive (never shortens: no BypassGovernance).
        statements.append(
            iam.PolicyStatement(
                actions=["s3:PutObjectRetention"],
                resources=objects,
                conditions={"StringEquals": {**own, f"s3:ExistingObjectTag/{STATUS_TAG}": [COMPLETE]}},
            )
        )
    if rule.deletable is not None:
        delete: dict[str, object] = dict(own)
        if rule.deletable:
            delete[f"s3:ExistingObjectTag/{STATUS_TAG}"] = rule.deletable
        statements.append(
            iam.PolicyStatement(
                actions=["s3:DeleteObject", "s3:DeleteObjectVersion"],
                resources=objects,
                conditions={"StringEquals": delete},
            )
        )
    return statements


def own_resources(stack: Stack, instances: list[InstanceConfig]) -> dict[str, dict[str, object]]:
    """This tool's resources of these instances, made by this deployment."""
    return {
        "StringEquals": {
            f"aws:ResourceTag/{TOOL_TAG}": TOOL_VALUE,
            f"aws:ResourceTag/{DEPLOYMENT_TAG}": deployment(stack),
            f"aws:ResourceTag/{INSTANCE_TAG}": sorted(i.name for i in instances),
        }
    }


def rds_arn(stack: Stack, resource: str, name: str) -> str:
    return stack.format_arn(service="rds", resource=resource, resource_name=name, arn_format=arn_format("rds", ""))


def snapshot_keys(stack: Stack, service: str) -> list[iam.PolicyStatement]:
    """The customer-managed key of an encrypted snapshot (unknown before run time), used only through `service`."""
    keys = [stack.format_arn(service="kms", resource="key", resource_name="*")]
    via = {"kms:ViaService": f"{service}.{stack.region}.amazonaws.com"}
    actions = ["kms:DescribeKey", "kms:Decrypt"]
    if service == "ec2":
        actions += ["kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"]
    return [
        iam.PolicyStatement(actions=actions, resources=keys, conditions={"StringEquals": via}),
        iam.PolicyStatement(
            actions=["kms:CreateGrant"],
            resources=keys,
            conditions={"StringEquals": via, "Bool": {"kms:GrantIsForAWSResource": "true"}},
        ),
    ]
