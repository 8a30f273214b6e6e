"""IAM for the search index's snapshots: the functions' requests to the cluster (Amazon OpenSearch Service: es:ESHttp*
on the configured domains, only under the paths the snapshot API and the restored indices need; self-managed: the
credentials' secret), the catalog entries in the archive bucket, and the role the domain assumes to write its
snapshot repository there."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam

from functions.models.config import InstanceConfig
from functions.models.part_config import AmazonOpenSearchConfig, SelfManagedSearchConfig
from functions.strategies import DEPLOYMENT_TAG, FAILED, IN_PROGRESS, STATUS_TAG, TOOL_TAG, TOOL_VALUE
from functions.strategies.search_snapshot import REPOSITORY_PREFIX
from stacks import permissions

HTTP = {"GET": "es:ESHttpGet", "PUT": "es:ESHttpPut", "POST": "es:ESHttpPost", "DELETE": "es:ESHttpDelete"}


def domains(instances: list[InstanceConfig]) -> list[AmazonOpenSearchConfig]:
    return [i.search for i in instances if isinstance(i.search, AmazonOpenSearchConfig)]


def cluster(stack: Stack, instances: list[InstanceConfig], *methods: str) -> list[iam.PolicyStatement]:
    """Requests to the instances' clusters with these HTTP methods: on an Amazon OpenSearch domain, the snapshot API
    (`_snapshot/…`), the index listing and recovery (`_cat/…`, `<index>/_recovery`) and, with DELETE, indices (the
    restore's failure path deletes the indices it restored, by name); on a self-managed cluster, its secret."""
    statements = []
    arns = sorted({d.domain_arn for d in domains(instances)})
    if arns:
        actions = sorted(HTTP[m] for m in methods)
        statements.append(iam.PolicyStatement(actions=actions, resources=[f"{arn}/*" for arn in arns]))
    secrets = sorted(
        {
            permissions.secret_arn(stack, i.search.credentials_secret)
            for i in instances
            if isinstance(i.search, SelfManagedSearchConfig)
        }
    )
    if secrets:
        statements.append(iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=secrets))
    return statements


def register_repository(role: iam.IRole | None) -> list[iam.PolicyStatement]:
    """The validate step registers a domain's snapshot repository with the stack's role: it passes that role."""
    if role is None:
        return []
    return [
        iam.PolicyStatement(
            actions=["iam:PassRole"],
            resources=[role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "es.amazonaws.com"}},
        )
    ]


def new_entries(stack: Stack, bucket_arn: str, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """The copy step writes each snapshot's catalog entry, tagged in-progress by this deployment, under its instance's
    prefix only (never a repository file: those are under REPOSITORY_PREFIX)."""
    objects = sorted(f"{bucket_arn}/{i.name}/*" for i in instances if i.search_index is not None)
    if not objects:
        return []
    return [
        iam.PolicyStatement(
            actions=["s3:PutObject", "s3:PutObjectTagging"],
            resources=objects,
            conditions={
                "StringEquals": {
                    f"s3:RequestObjectTag/{TOOL_TAG}": TOOL_VALUE,
                    f"s3:RequestObjectTag/{DEPLOYMENT_TAG}": permissions.deployment(stack),
                    f"s3:RequestObjectTag/{STATUS_TAG}": IN_PROGRESS,
                }
            },
        )
    ]


def undo_entries(stack: Stack, bucket_arn: str, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """A copy step that finds its run already discarded removes the catalog entry it wrote: this deployment's entries
    that are not complete, under its instances' prefixes only."""
    objects = sorted(f"{bucket_arn}/{i.name}/*" for i in instances if i.search_index is not None)
    if not objects:
        return []
    return [
        iam.PolicyStatement(
            actions=["s3:DeleteObject", "s3:DeleteObjectVersion"],
            resources=objects,
            conditions={
                "StringEquals": {
                    f"s3:ExistingObjectTag/{TOOL_TAG}": TOOL_VALUE,
                    f"s3:ExistingObjectTag/{DEPLOYMENT_TAG}": permissions.deployment(stack),
                    f"s3:ExistingObjectTag/{STATUS_TAG}": [IN_PROGRESS, FAILED],
                }
            },
        )
    ]


def repository_access(bucket_arn: str, instances: list[InstanceConfig]) -> list[iam.PolicyStatement]:
    """What the domain may do with its role: its instances' repository paths in the archive bucket, nothing else."""
    prefixes = sorted(
        f"{REPOSITORY_PREFIX}/{i.name}" for i in instances if isinstance(i.search, AmazonOpenSearchConfig)
    )
    return [
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[bucket_arn],
            conditions={"StringLike": {"s3:prefix": [p for prefix in prefixes for p in (prefix, f"{prefix}/*")]}},
        ),
        iam.PolicyStatement(
            actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            resources=[f"{bucket_arn}/{prefix}/*" for prefix in prefixes],
        ),
    ]
