"""IAM statements per capability, so the stack can give each function exactly what its step needs.

Deleting and re-tagging snapshots is allowed only on resources that carry this tool's marker tag: a bug (or a
wrong config) cannot delete or relabel anybody else's snapshots.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam

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
    INSTANCE_TAG,
    RESTORE_TARGET_TAG,
    RESTORING,
    STATUS_TAG,
    TOOL_TAG,
    TOOL_VALUE,
)


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
            conditions={"StringEquals": {f"aws:RequestTag/{TOOL_TAG}": TOOL_VALUE}},
        ),
        iam.PolicyStatement(
            actions=["ec2:CreateTags"],
            resources=[f"arn:{stack.partition}:ec2:{stack.region}::snapshot/*"],
            conditions={"StringEquals": {"ec2:CreateAction": "CreateSnapshots"}},
        ),
        # Flush and unfreeze: the stack's own documents only, on the configured instances only.
        *_run_commands_on(stack, ec2_instances, documents),
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


def manage_own_snapshots(
    stack: Stack, instances: list[InstanceConfig], *, delete: bool = True
) -> list[iam.PolicyStatement]:
    """Re-tag and (unless delete=False: the restore drill's verified tags) delete, only where the tool's marker tag
    is present and names one of these instances."""
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
                actions=["ec2:CreateTags", *(["ec2:DeleteSnapshot"] if delete else [])],
                resources=[f"arn:{stack.partition}:ec2:{stack.region}::snapshot/*"],
                conditions=own,
            )
        )
    if any(isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig)) for i in instances):
        statements.append(
            iam.PolicyStatement(
                actions=[
                    "rds:AddTagsToResource",
                    *(["rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"] if delete else []),
                ],
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


# --- restore ---------------------------------------------------------------------------------------------------------
# A restore creates only NEW resources, each tagged at creation with this tool's tag and the status `restoring`;
# it may delete only what still carries both (what a failed restore made), never what a restore handed over
# (`restored`), and it attaches volumes to, starts and runs commands on only instances the operator tagged as
# restore targets of one of these Bitbucket instances.


def _rds_arn(stack: Stack, resource: str, name: str) -> str:
    return stack.format_arn(service="rds", resource=resource, resource_name=name, arn_format=_format("rds", ""))


def _own_restored(instances: list[InstanceConfig], *, restoring: bool = False) -> dict[str, dict[str, object]]:
    condition: dict[str, object] = {
        f"aws:ResourceTag/{TOOL_TAG}": TOOL_VALUE,
        f"aws:ResourceTag/{INSTANCE_TAG}": sorted(i.name for i in instances),
    }
    if restoring:
        condition[f"aws:ResourceTag/{STATUS_TAG}"] = RESTORING
    return {"StringEquals": condition}


def _tagged_request() -> dict[str, dict[str, object]]:
    return {"StringEquals": {f"aws:RequestTag/{TOOL_TAG}": TOOL_VALUE}}


def _restore_targets(instances: list[InstanceConfig], key: str = "aws:ResourceTag") -> dict[str, dict[str, object]]:
    return {"StringEquals": {f"{key}/{RESTORE_TARGET_TAG}": sorted(i.name for i in instances)}}


def restore_describe(instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    actions = set()
    if any(isinstance(i.home, EbsHomeConfig) for i in instances):
        actions |= {"ec2:DescribeInstances", "ec2:DescribeSnapshots", "ec2:DescribeVolumes"}
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
    statements = []
    if rds:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:RestoreDBInstanceFromDBSnapshot"],
                resources=sorted(
                    {_rds_arn(stack, "db", "*"), *settings} | {_rds_arn(stack, "snapshot", f"{i.name}-*") for i in rds}
                ),
                conditions=_tagged_request(),
            )
        )
    if aurora:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:RestoreDBClusterFromSnapshot"],
                resources=sorted(
                    {_rds_arn(stack, "cluster", "*"), _rds_arn(stack, "cluster-pg", "*"), *settings}
                    | {_rds_arn(stack, "cluster-snapshot", f"{i.name}-*") for i in aurora}
                ),
                conditions=_tagged_request(),
            )
        )
        statements.append(
            iam.PolicyStatement(
                actions=["rds:CreateDBInstance"],
                resources=[_rds_arn(stack, "db", "*"), _rds_arn(stack, "cluster", "*"), *settings],
                conditions=_tagged_request(),
            )
        )
    statements.append(
        iam.PolicyStatement(
            actions=["rds:AddTagsToResource"],
            resources=[_rds_arn(stack, "db", "*"), _rds_arn(stack, "cluster", "*")],
            conditions=_tagged_request(),
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
        iam.PolicyStatement(actions=["ec2:CreateVolume"], resources=[_volumes(stack)], conditions=_tagged_request()),
        iam.PolicyStatement(
            actions=["ec2:CreateVolume"],
            # Only from this tool's snapshots of these instances.
            resources=[f"arn:{stack.partition}:ec2:{stack.region}::snapshot/snap-*"],
            conditions=_own_restored(instances),
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
            actions=["ec2:AttachVolume"], resources=[_volumes(stack)], conditions=_own_restored(instances)
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


def retag_restored(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """Hand over (`restored`) or mark for inspection (`restore-failed`): only the tool's own restored resources."""
    statements = []
    if any(isinstance(i.home, EbsHomeConfig) for i in instances):
        statements.append(
            iam.PolicyStatement(
                actions=["ec2:CreateTags"], resources=[_volumes(stack)], conditions=_own_restored(instances)
            )
        )
    if any(isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig)) for i in instances):
        statements.append(
            iam.PolicyStatement(
                actions=["rds:AddTagsToResource"],
                resources=[_rds_arn(stack, "db", "*"), _rds_arn(stack, "cluster", "*")],
                conditions=_own_restored(instances),
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
                conditions=_own_restored(instances, restoring=True),
            ),
            iam.PolicyStatement(
                actions=["ec2:DetachVolume"],
                resources=[_volumes(stack)],
                conditions=_own_restored(instances, restoring=True),
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
                resources=[_rds_arn(stack, "db", "*"), _rds_arn(stack, "cluster", "*")],
                conditions=_own_restored(instances, restoring=True),
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
            actions=["s3:GetObject", "s3:GetObjectTagging", "s3:GetObjectRetention"], resources=[f"{bucket_arn}/*"]
        ),
    ]


def manage_own_archives(bucket_arn: str, *, delete: bool = True) -> list[iam.PolicyStatement]:
    """Re-tagging and (unless delete=False) deleting archives: only objects carrying this tool's marker tag."""
    return [
        iam.PolicyStatement(
            actions=["s3:PutObjectTagging", *(["s3:DeleteObject", "s3:DeleteObjectVersion"] if delete else [])],
            resources=[f"{bucket_arn}/*"],
            conditions={"StringEquals": {f"s3:ExistingObjectTag/{TOOL_TAG}": TOOL_VALUE}},
        ),
    ]


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


def _own(instances: list[InstanceConfig]) -> dict[str, dict[str, object]]:
    return {
        "StringEquals": {
            f"aws:ResourceTag/{TOOL_TAG}": TOOL_VALUE,
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
                    actions=["ec2:CopySnapshot"], resources=_snapshot_arns(stack, stack.region), conditions=_own(ebs)
                ),
                # The copy: only with this tool's tag in the request; tags only as part of the copy.
                iam.PolicyStatement(
                    actions=["ec2:CopySnapshot"],
                    resources=[a for r in regions for a in _snapshot_arns(stack, r)],
                    conditions={"StringEquals": {f"aws:RequestTag/{TOOL_TAG}": TOOL_VALUE}},
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
            # The sources and copies of same-account targets only (a cross-account target's role copies its own).
            statements.append(
                iam.PolicyStatement(
                    actions=["rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot", "rds:AddTagsToResource"],
                    resources=sorted(
                        {a for i, _ in local_db for a in _db_snapshot_arns(stack, stack.region, i)}
                        | {a for i, t in local_db for a in _db_snapshot_arns(stack, t.region, i)}
                    ),
                )
            )
    if archive_bucket_arn and any(i.uses_archive for i, _ in local):
        statements += [
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectTagging", "s3:GetObjectVersion"],
                resources=[f"{archive_bucket_arn}/*"],
            ),
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:PutObjectTagging", "s3:AbortMultipartUpload"],
                resources=_copied_archives(stack, local),
            ),
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
                conditions=_own(ebs),
            )
        )
    databases = [i for i in cross if isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig))]
    if databases:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:ModifyDBSnapshotAttribute", "rds:ModifyDBClusterSnapshotAttribute"],
                resources=sorted({a for i in databases for a in _db_snapshot_arns(stack, stack.region, i)}),
                conditions=_own(databases),
            )
        )
    return statements


def _cross_account(instances: list[InstanceConfig]) -> list[InstanceConfig]:
    return [i for i in instances if any(t.role_arn for t in i.copies)]


def _assume_roles(instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    roles = sorted({t.role_arn for i in instances for t in i.copies if t.role_arn})
    return [iam.PolicyStatement(actions=["sts:AssumeRole"], resources=roles)] if roles else []


def manage_own_copies(stack: Stack, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """Finalize, the failure path and the safety net: list, re-tag and delete this tool's copies in the targets."""
    copying = [i for i in instances if i.copies]
    local = _local_targets(copying)
    statements = _assume_roles(copying) + _share_originals(stack, _cross_account(copying))
    if not local:
        return statements
    regions = sorted({t.region for _, t in local})
    own = _own(copying)
    if any(isinstance(i.home, EbsHomeConfig) for i, _ in local):
        statements += [
            iam.PolicyStatement(actions=["ec2:DescribeSnapshots"], resources=["*"]),
            iam.PolicyStatement(
                actions=["ec2:CreateTags", "ec2:DeleteSnapshot"],
                resources=[a for r in regions for a in _snapshot_arns(stack, r)],
                conditions=own,
            ),
        ]
    if any(isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig)) for i, _ in local):
        statements += [
            iam.PolicyStatement(actions=["rds:DescribeDBSnapshots", "rds:DescribeDBClusterSnapshots"], resources=["*"]),
            iam.PolicyStatement(
                actions=["rds:AddTagsToResource", "rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"],
                resources=sorted({a for i, t in local for a in _db_snapshot_arns(stack, t.region, i)}),
                conditions=own,
            ),
        ]
    objects = _copied_archives(stack, local)
    if objects:
        buckets = sorted({t.archive_bucket for i, t in local if i.uses_archive and t.archive_bucket})
        statements += [
            iam.PolicyStatement(
                actions=["s3:ListBucket", "s3:ListBucketVersions"],
                resources=[f"arn:{stack.partition}:s3:::{b}" for b in buckets],
            ),
            iam.PolicyStatement(actions=["s3:GetObject", "s3:GetObjectTagging"], resources=objects),
            iam.PolicyStatement(
                actions=["s3:PutObjectTagging", "s3:DeleteObject", "s3:DeleteObjectVersion"],
                resources=objects,
                conditions={"StringEquals": {f"s3:ExistingObjectTag/{TOOL_TAG}": TOOL_VALUE}},
            ),
        ]
    return statements + _target_keys(copying)


def cross_account_readers(instances: list[InstanceConfig]) -> list[str]:
    """Roles of cross-account targets that read the archive bucket (and its key) to copy archives."""
    return sorted({t.role_arn for i in instances if i.uses_archive for t in i.copies if t.role_arn})
