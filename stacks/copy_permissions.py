"""IAM statements of the disaster-recovery copies: into other regions of this account, or through a target
account's role."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam

from functions.models.config import CopyTarget, InstanceConfig
from functions.models.part_config import AuroraDatabaseConfig, EbsHomeConfig, RdsDatabaseConfig
from functions.strategies import (
    COMPLETE,
    DEPLOYMENT_TAG,
    IN_PROGRESS,
    STATUS_TAG,
    TOOL_TAG,
    TOOL_VALUE,
)
from stacks.permissions import (
    COPY_KEYS,
    PRUNE,
    RULES,
    archive_rules,
    arn_format,
    delete_condition,
    deployment,
    new_catalog_entry,
    own_resources,
    retag_own,
    snapshot_keys,
)

# --- disaster-recovery copies -----------------------------------------------------------------------------------------
# Same-account targets: this stack's functions copy into the target region themselves. Cross-account targets: they
# share the source with the account and assume the target's role, which makes (and later prunes) the copies there;
# that role's own permissions live in the destination account (README, Disaster-recovery copies).


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
            arn_format=arn_format("rds", ""),
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
    ebs = [i for i in copying if _on_ebs(i)]
    cross = _cross_account(copying)
    local = _local_targets(copying)
    regions = sorted({t.region for _, t in local})
    if ebs:
        statements.append(iam.PolicyStatement(actions=["ec2:DescribeSnapshots"], resources=["*"]))
        if any(_on_ebs(i) for i, _ in local):
            statements += [
                # The source: only this tool's snapshots of these instances.
                iam.PolicyStatement(
                    actions=["ec2:CopySnapshot"],
                    resources=_snapshot_arns(stack, stack.region),
                    conditions=own_resources(stack, ebs),
                ),
                # The copy: only with this deployment's catalog tags in the request; tags only as part of the copy.
                iam.PolicyStatement(
                    actions=["ec2:CopySnapshot"],
                    resources=[a for r in regions for a in _snapshot_arns(stack, r)],
                    conditions=new_catalog_entry(stack, ebs, IN_PROGRESS, COPY_KEYS),
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
                    conditions=new_catalog_entry(stack, databases, IN_PROGRESS, COPY_KEYS),
                ),
                iam.PolicyStatement(
                    actions=["rds:AddTagsToResource"],
                    resources=sorted(copied),
                    conditions=new_catalog_entry(stack, databases, IN_PROGRESS, COPY_KEYS, untagged=True),
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
        statements += snapshot_keys(stack, "ec2") + snapshot_keys(stack, "rds")
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
    ebs = [i for i in cross if _on_ebs(i)]
    if ebs:
        statements.append(
            iam.PolicyStatement(
                actions=["ec2:ModifySnapshotAttribute"],
                resources=_snapshot_arns(stack, stack.region),
                conditions=own_resources(stack, ebs),
            )
        )
    databases = [i for i in cross if isinstance(i.database, (RdsDatabaseConfig, AuroraDatabaseConfig))]
    if databases:
        statements.append(
            iam.PolicyStatement(
                actions=["rds:ModifyDBSnapshotAttribute", "rds:ModifyDBClusterSnapshotAttribute"],
                resources=sorted({a for i in databases for a in _db_snapshot_arns(stack, stack.region, i)}),
                conditions=own_resources(stack, databases),
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
    retag = retag_own(stack, copying, keys=rule.keys, was=rule.was, to=rule.to)
    deletes = rule.deletable if rule.deletable is not None else None
    if any(_on_ebs(i) for i, _ in local):
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
                    conditions=delete_condition(stack, copying, deletes),
                )
            )
        if role == PRUNE:
            statements.append(
                iam.PolicyStatement(
                    actions=["ec2:LockSnapshot"],
                    resources=snapshots,
                    conditions=delete_condition(stack, copying, [COMPLETE]),
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
                    conditions=delete_condition(stack, copying, deletes),
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
            *archive_rules(stack, objects, rule),
        ]
    return statements + _target_keys(copying)


def cross_account_readers(instances: list[InstanceConfig]) -> list[str]:
    """Roles of cross-account targets that read the archive bucket (and its key) to copy archives."""
    return sorted({t.role_arn for i in instances if i.uses_archive for t in i.copies if t.role_arn})


def _on_ebs(instance: InstanceConfig) -> bool:
    """Whether a home of the instance (the shared one or a Mesh node's) is copied as EBS snapshots."""
    return any(isinstance(home, EbsHomeConfig) for home in instance.homes.values())
