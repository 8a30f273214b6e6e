"""IAM statements of the restore and the restore drill: NEW resources only, tagged at creation, removable only
while a failed restore still holds them."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam

from functions.models.config import InstanceConfig
from functions.models.part_config import (
    AuroraDatabaseConfig,
    DumpedDatabaseConfig,
    EbsHomeConfig,
    RdsDatabaseConfig,
    RsyncHomeConfig,
)
from functions.strategies import (
    RESTORE_TARGET_TAG,
    RESTORED,
    RESTORED_PREFIX,
    RESTORING,
    STATUS_TAG,
)
from stacks.permissions import (
    RESTORE_KEYS,
    host_commands,
    new_catalog_entry,
    own_resources,
    rds_arn,
    retag_own,
    run_commands_on,
    snapshot_keys,
)

# --- restore ---------------------------------------------------------------------------------------------------------
# A restore creates only NEW resources, each tagged at creation with this tool's tag and the status `restoring`;
# it may delete only what still carries both (what a failed restore made), never what a restore handed over
# (`restored`), and it attaches volumes to, starts and runs commands on only instances the operator tagged as
# restore targets of one of these Bitbucket instances.


def _own_restored(
    stack: Stack, instances: list[InstanceConfig], *, restoring: bool = False
) -> dict[str, dict[str, object]]:
    condition: dict[str, object] = dict(own_resources(stack, instances)["StringEquals"])
    if restoring:
        condition[f"aws:ResourceTag/{STATUS_TAG}"] = RESTORING
    return {"StringEquals": condition}


def _new_restored(
    stack: Stack, instances: list[InstanceConfig], *, untagged: bool = False
) -> dict[str, dict[str, object]]:
    """What a restore creates: tagged at creation, `restoring`, with the restore's keys only."""
    return new_catalog_entry(stack, instances, RESTORING, RESTORE_KEYS, untagged=untagged)


def _restored(stack: Stack, resource: str) -> str:
    """Restored DB instances and clusters have a fixed identifier prefix: the restore's roles act on nothing else."""
    return rds_arn(stack, resource, f"{RESTORED_PREFIX}*")


def _restore_targets(instances: list[InstanceConfig], key: str = "aws:ResourceTag") -> dict[str, dict[str, object]]:
    return {"StringEquals": {f"{key}/{RESTORE_TARGET_TAG}": sorted(i.name for i in instances)}}


def restore_describe(instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    actions = set()
    if any(_ebs(i) for i in instances):
        actions |= {"ec2:DescribeInstances", "ec2:DescribeSnapshots", "ec2:DescribeVolumes"}
    if any(_rsync(i) or isinstance(i.database, DumpedDatabaseConfig) for i in instances):
        # A restore onto another host checks the host's restore-target tag first (host_copy_restore._restore_host).
        actions |= {"ec2:DescribeInstances"}
    if any(isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig)) for i in instances):
        actions |= {"rds:DescribeDBInstances", "rds:DescribeDBClusters"}
    if any(isinstance(i.database, RdsDatabaseConfig) for i in instances):
        actions |= {"rds:DescribeDBSnapshots"}
    if any(isinstance(i.database, AuroraDatabaseConfig) for i in instances):
        actions |= {"rds:DescribeDBClusterSnapshots"}
    return [iam.PolicyStatement(actions=sorted(actions), resources=["*"])] if actions else []


def restore_database(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    rds = [i for i in instances if isinstance(i.database, RdsDatabaseConfig)]
    aurora = [i for i in instances if isinstance(i.database, AuroraDatabaseConfig)]
    if not rds and not aurora:
        return []
    # The network and parameter settings are the original's or the operator's, known only at run time.
    settings = [rds_arn(stack, kind, "*") for kind in ("subgrp", "pg", "og", "secgrp")]
    chosen = rds + aurora
    statements = []
    if rds:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:RestoreDBInstanceFromDBSnapshot"],
                resources=sorted(
                    {_restored(stack, "db"), *settings} | {rds_arn(stack, "snapshot", f"{i.name}-*") for i in rds}
                ),
                conditions=_new_restored(stack, chosen),
            )
        )
    if aurora:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:RestoreDBClusterFromSnapshot"],
                resources=sorted(
                    {_restored(stack, "cluster"), rds_arn(stack, "cluster-pg", "*"), *settings}
                    | {rds_arn(stack, "cluster-snapshot", f"{i.name}-*") for i in aurora}
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
    return statements + snapshot_keys(stack, "rds")


def _volumes(stack: Stack) -> str:
    return stack.format_arn(service="ec2", resource="volume", resource_name="vol-*")


def _instances(stack: Stack) -> str:
    return stack.format_arn(service="ec2", resource="instance", resource_name="*")


def restore_home(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    if not any(_ebs(i) for i in instances):
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
        *snapshot_keys(stack, "ec2"),
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
    condition = retag_own(stack, instances, keys=(STATUS_TAG,), was=[RESTORING], to=list(to))
    statements = []
    if any(_ebs(i) for i in instances):
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
    if any(_ebs(i) for i in instances):
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
    return run_commands_on(stack, hosts, documents)


def _ebs(instance: InstanceConfig) -> bool:
    """A home of the instance (the shared one or a Mesh node's) is restored as EBS volumes."""
    return any(isinstance(home, EbsHomeConfig) for home in instance.homes.values())


def _rsync(instance: InstanceConfig) -> bool:
    """A home of the instance (the shared one or a Mesh node's) is restored from an archive."""
    return any(isinstance(home, RsyncHomeConfig) for home in instance.homes.values())
