"""IAM statements per capability, so the stack can give each function exactly what its step needs.

Deleting and re-tagging snapshots is allowed only on resources that carry this tool's marker tag: a bug (or a
wrong config) cannot delete or relabel anybody else's snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn

from functions.models.config import (
    AuroraDatabaseConfig,
    CopyTarget,
    EbsHomeConfig,
    InstanceConfig,
    PostgresDatabaseConfig,
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
    RESTORE_TARGET_TAG,
    RESTORED,
    RESTORED_PREFIX,
    RESTORING,
    SOURCE_REGION_TAG,
    STATUS_TAG,
    TOOL_TAG,
    TOOL_VALUE,
    VERIFIED_TAG,
    VERIFY_FAILED_TAG,
    deployment_id_for,
)

# The tag keys each kind of request may set (aws:TagKeys): a role can write no other key, so it cannot, for example,
# give somebody else's resource the tool's marker or a restore execution's tag.
CATALOG_KEYS = (TOOL_TAG, DEPLOYMENT_TAG, INSTANCE_TAG, BACKUP_ID_TAG, PART_TAG, STATUS_TAG, "Name")
COPY_KEYS = (*CATALOG_KEYS, COPY_OF_TAG, SOURCE_REGION_TAG, "Device")
RESTORE_KEYS = (*CATALOG_KEYS, RESTORE_TAG, "Device")
VERDICT_KEYS = (VERIFIED_TAG, VERIFY_FAILED_TAG)


def deployment(stack: Stack) -> str:
    """This deployment's id (functions.strategies.deployment_id_for), tokens resolved by CloudFormation."""
    return deployment_id_for(stack.account, stack.region, stack.stack_name)


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
    if any(isinstance(i.home, EbsHomeConfig) for i in instances):
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


def create_home_snapshots(
    stack: Stack, instances: list[InstanceConfig], documents: list[str]
) -> list[iam.PolicyStatement]:
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
            conditions=_new_catalog_entry(stack, instances, IN_PROGRESS, CATALOG_KEYS),
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
            conditions=_retag(stack, instances, keys=("Device", "Name"), was=[IN_PROGRESS]),
        ),
        # Flush and unfreeze: the stack's own documents only, on the configured instances only.
        *_run_commands_on(stack, ec2_instances, documents),
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
        sources = {_rds_arn(stack, source, _source_id(i)) for i in chosen}
        snapshots = {_rds_arn(stack, kind, f"{i.name}-*") for i in chosen}
        statements += [
            iam.PolicyStatement(
                actions=[create],
                resources=sorted(sources | snapshots),
                conditions=_new_catalog_entry(stack, chosen, IN_PROGRESS, CATALOG_KEYS),
            ),
            iam.PolicyStatement(
                actions=["rds:AddTagsToResource"],
                resources=sorted(snapshots),
                conditions=_new_catalog_entry(stack, chosen, IN_PROGRESS, CATALOG_KEYS, untagged=True),
            ),
        ]
    return statements


def _source_id(instance: InstanceConfig) -> str:
    database = instance.database
    if isinstance(database, RdsDatabaseConfig):
        return database.instance_id
    assert isinstance(database, AuroraDatabaseConfig)
    return database.cluster_id


def _new_catalog_entry(
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


def _retag(
    stack: Stack,
    instances: list[InstanceConfig],
    *,
    keys: tuple[str, ...],
    was: list[str] | None = None,
    to: list[str] | None = None,
) -> dict[str, dict[str, object]]:
    """Re-tagging one of this deployment's artifacts of these instances: only `keys`, only from a status in `was`,
    only to a status in `to` (a status may never go back: nothing becomes `in-progress` or `restoring` again)."""
    equals: dict[str, object] = dict(_own(stack, instances)["StringEquals"])
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


def _delete_condition(
    stack: Stack, instances: list[InstanceConfig], statuses: list[str]
) -> dict[str, dict[str, object]]:
    own = _own(stack, instances)
    if not statuses:
        return own
    return {"StringEquals": {**own["StringEquals"], f"aws:ResourceTag/{STATUS_TAG}": statuses}}


def manage_own_snapshots(stack: Stack, instances: list[InstanceConfig], role: str) -> list[iam.PolicyStatement]:
    """Re-tag and delete this deployment's snapshots of these instances, as `role` (PRUNE, FAILURE or VERIFY) may."""
    rule = RULES[role]
    retag = _retag(stack, instances, keys=rule.keys, was=rule.was, to=rule.to)
    statements = []
    ebs = any(isinstance(i.home, EbsHomeConfig) for i in instances)
    databases = any(isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig)) for i in instances)
    snapshots = [f"arn:{stack.partition}:ec2:{stack.region}::snapshot/*"]
    db_snapshots = [_rds_arn(stack, "snapshot", "*"), _rds_arn(stack, "cluster-snapshot", "*")]
    if ebs:
        statements.append(iam.PolicyStatement(actions=["ec2:CreateTags"], resources=snapshots, conditions=retag))
        if rule.deletable is not None:
            statements.append(
                iam.PolicyStatement(
                    actions=["ec2:DeleteSnapshot"],
                    resources=snapshots,
                    conditions=_delete_condition(stack, instances, rule.deletable),
                )
            )
        if role == PRUNE:
            # Immutable backups: the pruning step locks the complete snapshots (functions/strategies/amazon_ebs.py).
            statements.append(
                iam.PolicyStatement(
                    actions=["ec2:LockSnapshot"],
                    resources=snapshots,
                    conditions=_delete_condition(stack, instances, [COMPLETE]),
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
                    conditions=_delete_condition(stack, instances, rule.deletable),
                )
            )
    return statements


# --- restore ---------------------------------------------------------------------------------------------------------
# A restore creates only NEW resources, each tagged at creation with this tool's tag and the status `restoring`;
# it may delete only what still carries both (what a failed restore made), never what a restore handed over
# (`restored`), and it attaches volumes to, starts and runs commands on only instances the operator tagged as
# restore targets of one of these Bitbucket instances.


def _rds_arn(stack: Stack, resource: str, name: str) -> str:
    return stack.format_arn(service="rds", resource=resource, resource_name=name, arn_format=_format("rds", ""))


def _own_restored(
    stack: Stack, instances: list[InstanceConfig], *, restoring: bool = False
) -> dict[str, dict[str, object]]:
    condition: dict[str, object] = dict(_own(stack, instances)["StringEquals"])
    if restoring:
        condition[f"aws:ResourceTag/{STATUS_TAG}"] = RESTORING
    return {"StringEquals": condition}


def _new_restored(
    stack: Stack, instances: list[InstanceConfig], *, untagged: bool = False
) -> dict[str, dict[str, object]]:
    """What a restore creates: tagged at creation, `restoring`, with the restore's keys only."""
    return _new_catalog_entry(stack, instances, RESTORING, RESTORE_KEYS, untagged=untagged)


def _restored(stack: Stack, resource: str) -> str:
    """Restored DB instances and clusters have a fixed identifier prefix: the restore's roles act on nothing else."""
    return _rds_arn(stack, resource, f"{RESTORED_PREFIX}*")


def _restore_targets(instances: list[InstanceConfig], key: str = "aws:ResourceTag") -> dict[str, dict[str, object]]:
    return {"StringEquals": {f"{key}/{RESTORE_TARGET_TAG}": sorted(i.name for i in instances)}}


def restore_describe(instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    actions = set()
    if any(isinstance(i.home, EbsHomeConfig) for i in instances):
        actions |= {"ec2:DescribeInstances", "ec2:DescribeSnapshots", "ec2:DescribeVolumes"}
    if any(isinstance(i.home, RsyncHomeConfig) or isinstance(i.database, PostgresDatabaseConfig) for i in instances):
        # A restore onto another host checks the host's restore-target tag first (host_copy_restore._restore_host).
        actions |= {"ec2:DescribeInstances"}
    if any(isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig)) for i in instances):
        actions |= {"rds:DescribeDBInstances", "rds:DescribeDBClusters"}
    if any(isinstance(i.database, RdsDatabaseConfig) for i in instances):
        actions |= {"rds:DescribeDBSnapshots"}
    if any(isinstance(i.database, AuroraDatabaseConfig) for i in instances):
        actions |= {"rds:DescribeDBClusterSnapshots"}
    return [iam.PolicyStatement(actions=sorted(actions), resources=["*"])] if actions else []


def _snapshot_keys(stack: Stack, service: str) -> list[iam.PolicyStatement]:
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


def restore_database(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    rds = [i for i in instances if isinstance(i.database, RdsDatabaseConfig)]
    aurora = [i for i in instances if isinstance(i.database, AuroraDatabaseConfig)]
    if not rds and not aurora:
        return []
    # The network and parameter settings are the original's or the operator's, known only at run time.
    settings = [_rds_arn(stack, kind, "*") for kind in ("subgrp", "pg", "og", "secgrp")]
    chosen = rds + aurora
    statements = []
    if rds:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:RestoreDBInstanceFromDBSnapshot"],
                resources=sorted(
                    {_restored(stack, "db"), *settings} | {_rds_arn(stack, "snapshot", f"{i.name}-*") for i in rds}
                ),
                conditions=_new_restored(stack, chosen),
            )
        )
    if aurora:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:RestoreDBClusterFromSnapshot"],
                resources=sorted(
                    {_restored(stack, "cluster"), _rds_arn(stack, "cluster-pg", "*"), *settings}
                    | {_rds_arn(stack, "cluster-snapshot", f"{i.name}-*") for i in aurora}
                ),
                conditions=_new_restored(stack, chosen),
            )
        )
        statements.append(
            iam.PolicyStatement(
                actions=["rds:CreateDBInstance"],
                resources=[_restored(stack, "db"), _restored(stack, "cluster"), *settings],
                conditions=_new_restored(stack, chosen),
            )
        )
    # Tags only as the restored resource is created (it has no status tag yet), and only under the prefix.
    statements.append(
        iam.PolicyStatement(
            actions=["rds:AddTagsToResource"],
            resources=[_restored(stack, "db"), _restored(stack, "cluster")],
            conditions=_new_restored(stack, chosen, untagged=True),
        )
    )
    return statements + _snapshot_keys(stack, "rds")


def _volumes(stack: Stack) -> str:
    return stack.format_arn(service="ec2", resource="volume", resource_name="vol-*")


def _instances(stack: Stack) -> str:
    return stack.format_arn(service="ec2", resource="instance", resource_name="*")


def restore_home(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    if not any(isinstance(i.home, EbsHomeConfig) for i in instances):
        return []
    return [
        iam.PolicyStatement(
            actions=["ec2:CreateVolume"], resources=[_volumes(stack)], conditions=_new_restored(stack, instances)
        ),
        iam.PolicyStatement(
            actions=["ec2:CreateVolume"],
            # Only from this tool's snapshots of these instances.
            resources=[f"arn:{stack.partition}:ec2:{stack.region}::snapshot/snap-*"],
            conditions=_own_restored(stack, instances),
        ),
        iam.PolicyStatement(
            actions=["ec2:CreateTags"],
            resources=[_volumes(stack)],
            conditions={"StringEquals": {"ec2:CreateAction": "CreateVolume"}},
        ),
        *_snapshot_keys(stack, "ec2"),
    ]


def restore_attach(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    if not any(isinstance(i.home, EbsHomeConfig) for i in instances):
        return []
    return [
        iam.PolicyStatement(
            actions=["ec2:AttachVolume"], resources=[_volumes(stack)], conditions=_own_restored(stack, instances)
        ),
        iam.PolicyStatement(
            actions=["ec2:AttachVolume", "ec2:StartInstances"],
            resources=[_instances(stack)],
            conditions=_restore_targets(instances),
        ),
    ]


def restore_mount(stack: Stack, instances: list[InstanceConfig], documents: list[str]) -> list[iam.PolicyStatement]:
    if not any(isinstance(i.home, EbsHomeConfig) for i in instances):
        return []
    return [
        iam.PolicyStatement(actions=["ssm:SendCommand"], resources=documents),
        iam.PolicyStatement(
            actions=["ssm:SendCommand"],
            resources=[_instances(stack)],
            conditions=_restore_targets(instances, key="ssm:resourceTag"),
        ),
        iam.PolicyStatement(actions=["ssm:GetCommandInvocation"], resources=["*"]),
    ]


def retag_restored(
    stack: Stack, instances: list[InstanceConfig], *, to: tuple[str, ...] = (RESTORED,)
) -> list[iam.PolicyStatement]:
    """Hand over (`restored`) or, on the failure path, mark for inspection (`restore-failed`): only the tool's own
    restored resources still `restoring`, only their status; nothing ever becomes `restoring` again."""
    condition = _retag(stack, instances, keys=(STATUS_TAG,), was=[RESTORING], to=list(to))
    statements = []
    if any(isinstance(i.home, EbsHomeConfig) for i in instances):
        statements.append(
            iam.PolicyStatement(actions=["ec2:CreateTags"], resources=[_volumes(stack)], conditions=condition)
        )
    if any(isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig)) for i in instances):
        statements.append(
            iam.PolicyStatement(
                actions=["rds:AddTagsToResource"],
                resources=[_restored(stack, "db"), _restored(stack, "cluster")],
                conditions=condition,
            )
        )
    return statements


def remove_failed_restore(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """The failure path: delete only what still is `restoring`; detach from and stop only restore targets."""
    statements = []
    if any(isinstance(i.home, EbsHomeConfig) for i in instances):
        statements += [
            iam.PolicyStatement(
                actions=["ec2:DeleteVolume"],
                resources=[_volumes(stack)],
                conditions=_own_restored(stack, instances, restoring=True),
            ),
            iam.PolicyStatement(
                actions=["ec2:DetachVolume"],
                resources=[_volumes(stack)],
                conditions=_own_restored(stack, instances, restoring=True),
            ),
            iam.PolicyStatement(
                actions=["ec2:DetachVolume", "ec2:StopInstances"],
                resources=[_instances(stack)],
                conditions=_restore_targets(instances),
            ),
        ]
    if any(isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig)) for i in instances):
        statements.append(
            iam.PolicyStatement(
                actions=["rds:DeleteDBInstance", "rds:DeleteDBCluster"],
                resources=[_restored(stack, "db"), _restored(stack, "cluster")],
                conditions=_own_restored(stack, instances, restoring=True),
            )
        )
    return statements


def host_commands(stack: Stack, instances: list[InstanceConfig], documents: list[str]) -> list[iam.PolicyStatement]:
    """Run Command on the hosts the copy-type strategies (rsync, postgresql) name, with the given documents of the
    stack's own (never AWS-RunShellScript), and reading its results."""
    hosts = sorted(
        {
            stack.format_arn(service="ec2", resource="instance", resource_name=part.instance_id)
            for i in instances
            for part in (i.home, i.database)
            if isinstance(part, RsyncHomeConfig | PostgresDatabaseConfig)
        }
    )
    return _run_commands_on(stack, hosts, documents)


def _run_commands_on(stack: Stack, hosts: list[str], documents: list[str]) -> list[iam.PolicyStatement]:
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
    return _archive_rules(stack, objects, RULES[role]) if objects else []


def _archive_rules(stack: Stack, objects: list[str], rule: _Rule) -> list[iam.PolicyStatement]:
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


def restore_host_commands(
    stack: Stack, instances: list[InstanceConfig], documents: list[str]
) -> list[iam.PolicyStatement]:
    """Archive restores run the host script on the backed-up hosts, or on an instance tagged as a restore target."""
    statements = host_commands(stack, instances, documents)
    if not statements or not documents:
        return statements
    return [
        *statements,
        iam.PolicyStatement(
            actions=["ssm:SendCommand"],
            resources=[_instances(stack)],
            conditions=_restore_targets(instances, key="ssm:resourceTag"),
        ),
    ]


def drill_host_commands(
    stack: Stack, instances: list[InstanceConfig], documents: list[str]
) -> list[iam.PolicyStatement]:
    """The restore drill's checks: Run Command on the configured drill hosts only."""
    hosts = sorted(
        {
            stack.format_arn(service="ec2", resource="instance", resource_name=i.drill.host_instance_id)
            for i in instances
            if i.drill and i.drill.host_instance_id
        }
    )
    return _run_commands_on(stack, hosts, documents)


# --- disaster-recovery copies -----------------------------------------------------------------------------------------
# Same-account targets: this stack's functions copy into the target region themselves. Cross-account targets: they
# share the source with the account and assume the target's role, which makes (and later prunes) the copies there;
# that role's own permissions live in the destination account (README, Disaster-recovery copies).


def _own(stack: Stack, instances: list[InstanceConfig]) -> dict[str, dict[str, object]]:
    """This tool's resources of these instances, made by this deployment."""
    return {
        "StringEquals": {
            f"aws:ResourceTag/{TOOL_TAG}": TOOL_VALUE,
            f"aws:ResourceTag/{DEPLOYMENT_TAG}": deployment(stack),
            f"aws:ResourceTag/{INSTANCE_TAG}": sorted(i.name for i in instances),
        }
    }


def _local_targets(instances: list[InstanceConfig]) -> list[tuple[InstanceConfig, CopyTarget]]:
    return [(i, t) for i in instances for t in i.copies if t.role_arn is None]


def _snapshot_arns(stack: Stack, region: str) -> list[str]:
    return [f"arn:{stack.partition}:ec2:{region}::snapshot/*"]


def _db_snapshot_arns(stack: Stack, region: str, instance: InstanceConfig) -> list[str]:
    kinds = {"amazon-rds": "snapshot", "amazon-aurora": "cluster-snapshot"}
    kind = kinds.get(instance.database.strategy)
    if kind is None:
        return []
    return [
        stack.format_arn(
            service="rds",
            resource=kind,
            resource_name=f"{instance.name}-*",
            region=region,
            arn_format=_format("rds", ""),
        )
    ]


def copy_to_regions(
    stack: Stack, instances: list[InstanceConfig], archive_bucket_arn: str | None
) -> list[iam.PolicyStatement]:
    """The copy step: read (and share) the originals, copy them into each target, assume the cross-account roles."""
    copying = [i for i in instances if i.copies]
    if not copying:
        return []
    statements: list[iam.PolicyStatement] = []
    ebs = [i for i in copying if isinstance(i.home, EbsHomeConfig)]
    cross = _cross_account(copying)
    local = _local_targets(copying)
    regions = sorted({t.region for _, t in local})
    if ebs:
        statements.append(iam.PolicyStatement(actions=["ec2:DescribeSnapshots"], resources=["*"]))
        if any(isinstance(i.home, EbsHomeConfig) for i, _ in local):
            statements += [
                # The source: only this tool's snapshots of these instances.
                iam.PolicyStatement(
                    actions=["ec2:CopySnapshot"],
                    resources=_snapshot_arns(stack, stack.region),
                    conditions=_own(stack, ebs),
                ),
                # The copy: only with this deployment's catalog tags in the request; tags only as part of the copy.
                iam.PolicyStatement(
                    actions=["ec2:CopySnapshot"],
                    resources=[a for r in regions for a in _snapshot_arns(stack, r)],
                    conditions=_new_catalog_entry(stack, ebs, IN_PROGRESS, COPY_KEYS),
                ),
                iam.PolicyStatement(
                    actions=["ec2:CreateTags"],
                    resources=[a for r in regions for a in _snapshot_arns(stack, r)],
                    conditions={"StringEquals": {"ec2:CreateAction": "CopySnapshot"}},
                ),
            ]
    databases = [i for i in copying if isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig))]
    if databases:
        statements.append(
            iam.PolicyStatement(actions=["rds:DescribeDBSnapshots", "rds:DescribeDBClusterSnapshots"], resources=["*"])
        )
        local_db = [(i, t) for i, t in local if i in databases]
        if local_db:
            # The sources and copies of same-account targets only (a cross-account target's role copies its own);
            # the copies tagged only as they are made.
            copied = {a for i, t in local_db for a in _db_snapshot_arns(stack, t.region, i)}
            statements += [
                iam.PolicyStatement(
                    actions=["rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot"],
                    resources=sorted(
                        {a for i, _ in local_db for a in _db_snapshot_arns(stack, stack.region, i)} | copied
                    ),
                    conditions=_new_catalog_entry(stack, databases, IN_PROGRESS, COPY_KEYS),
                ),
                iam.PolicyStatement(
                    actions=["rds:AddTagsToResource"],
                    resources=sorted(copied),
                    conditions=_new_catalog_entry(stack, databases, IN_PROGRESS, COPY_KEYS, untagged=True),
                ),
            ]
    if archive_bucket_arn and any(i.uses_archive for i, _ in local):
        statements += [
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectTagging", "s3:GetObjectVersion", "s3:GetObjectVersionTagging"],
                resources=[f"{archive_bucket_arn}/*"],
            ),
            # Archive copies are written with this deployment's catalog tags, in progress (finalize completes them).
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:PutObjectTagging"],
                resources=_copied_archives(stack, local),
                conditions={
                    "StringEquals": {
                        f"s3:RequestObjectTag/{TOOL_TAG}": TOOL_VALUE,
                        f"s3:RequestObjectTag/{DEPLOYMENT_TAG}": deployment(stack),
                        f"s3:RequestObjectTag/{STATUS_TAG}": IN_PROGRESS,
                    }
                },
            ),
            iam.PolicyStatement(actions=["s3:AbortMultipartUpload"], resources=_copied_archives(stack, local)),
        ]
    statements += _share_originals(stack, cross) + _target_keys(copying) + _assume_roles(copying)
    if local:
        # A source snapshot encrypted with a customer-managed key: read through EC2 or RDS only.
        statements += _snapshot_keys(stack, "ec2") + _snapshot_keys(stack, "rds")
    return statements


def _copied_archives(stack: Stack, local: list[tuple[InstanceConfig, CopyTarget]]) -> list[str]:
    """Archive copies in the targets' buckets: only under each instance's own prefix (`<instance>/<backup id>/…`)."""
    return sorted(
        {
            f"arn:{stack.partition}:s3:::{t.archive_bucket}/{i.name}/*"
            for i, t in local
            if i.uses_archive and t.archive_bucket
        }
    )


def _target_keys(instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """The destination keys of same-account targets (cross-account ones are used by the target's role)."""
    keys = sorted({t.kms_key_id for _, t in _local_targets(instances) if t.kms_key_id})
    if not keys:
        return []
    return [
        iam.PolicyStatement(
            actions=[
                "kms:CreateGrant",
                "kms:Decrypt",
                "kms:DescribeKey",
                "kms:Encrypt",
                "kms:GenerateDataKey",
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:ReEncryptFrom",
                "kms:ReEncryptTo",
            ],
            resources=keys,
        )
    ]


def _share_originals(stack: Stack, cross: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """Sharing this tool's source snapshots with a cross-account target's account (the copy step, before its role
    copies them) and removing that share again (finalize once the copies are complete; the failure path and the
    safety net when they keep the originals)."""
    statements: list[iam.PolicyStatement] = []
    ebs = [i for i in cross if isinstance(i.home, EbsHomeConfig)]
    if ebs:
        statements.append(
            iam.PolicyStatement(
                actions=["ec2:ModifySnapshotAttribute"],
                resources=_snapshot_arns(stack, stack.region),
                conditions=_own(stack, ebs),
            )
        )
    databases = [i for i in cross if isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig))]
    if databases:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:ModifyDBSnapshotAttribute", "rds:ModifyDBClusterSnapshotAttribute"],
                resources=sorted({a for i in databases for a in _db_snapshot_arns(stack, stack.region, i)}),
                conditions=_own(stack, databases),
            )
        )
    return statements


def _cross_account(instances: list[InstanceConfig]) -> list[InstanceConfig]:
    return [i for i in instances if any(t.role_arn for t in i.copies)]


def _assume_roles(instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    roles = sorted({t.role_arn for i in instances for t in i.copies if t.role_arn})
    return [iam.PolicyStatement(actions=["sts:AssumeRole"], resources=roles)] if roles else []


def manage_own_copies(stack: Stack, instances: list[InstanceConfig], role: str) -> list[iam.PolicyStatement]:
    """Finalize (PRUNE), the failure path and the safety net (FAILURE): list, re-tag and delete this deployment's
    copies in the same-account targets, as manage_own_snapshots allows the role on the originals. Cross-account
    targets: their own role does it, in their account (README, Disaster-recovery copies)."""
    copying = [i for i in instances if i.copies]
    local = _local_targets(copying)
    statements = _assume_roles(copying) + _share_originals(stack, _cross_account(copying))
    if not local:
        return statements
    rule = RULES[role]
    regions = sorted({t.region for _, t in local})
    retag = _retag(stack, copying, keys=rule.keys, was=rule.was, to=rule.to)
    deletes = rule.deletable if rule.deletable is not None else None
    if any(isinstance(i.home, EbsHomeConfig) for i, _ in local):
        snapshots = [a for r in regions for a in _snapshot_arns(stack, r)]
        statements += [
            iam.PolicyStatement(actions=["ec2:DescribeSnapshots"], resources=["*"]),
            iam.PolicyStatement(actions=["ec2:CreateTags"], resources=snapshots, conditions=retag),
        ]
        if deletes is not None:
            statements.append(
                iam.PolicyStatement(
                    actions=["ec2:DeleteSnapshot"],
                    resources=snapshots,
                    conditions=_delete_condition(stack, copying, deletes),
                )
            )
        if role == PRUNE:
            statements.append(
                iam.PolicyStatement(
                    actions=["ec2:LockSnapshot"],
                    resources=snapshots,
                    conditions=_delete_condition(stack, copying, [COMPLETE]),
                )
            )
    if any(isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig)) for i, _ in local):
        db_snapshots = sorted({a for i, t in local for a in _db_snapshot_arns(stack, t.region, i)})
        statements += [
            iam.PolicyStatement(actions=["rds:DescribeDBSnapshots", "rds:DescribeDBClusterSnapshots"], resources=["*"]),
            iam.PolicyStatement(actions=["rds:AddTagsToResource"], resources=db_snapshots, conditions=retag),
        ]
        if deletes is not None:
            statements.append(
                iam.PolicyStatement(
                    actions=["rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"],
                    resources=db_snapshots,
                    conditions=_delete_condition(stack, copying, deletes),
                )
            )
    objects = _copied_archives(stack, local)
    if objects:
        buckets = sorted({t.archive_bucket for i, t in local if i.uses_archive and t.archive_bucket})
        statements += [
            iam.PolicyStatement(
                actions=["s3:ListBucket", "s3:ListBucketVersions"],
                resources=[f"arn:{stack.partition}:s3:::{b}" for b in buckets],
            ),
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectTagging", "s3:GetObjectVersion", "s3:GetObjectVersionTagging"],
                resources=objects,
            ),
            *_archive_rules(stack, objects, rule),
        ]
    return statements + _target_keys(copying)


def cross_account_readers(instances: list[InstanceConfig]) -> list[str]:
    """Roles of cross-account targets that read the archive bucket (and its key) to copy archives."""
    return sorted({t.role_arn for i in instances if i.uses_archive for t in i.copies if t.role_arn})
