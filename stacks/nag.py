"""cdk-nag AwsSolutions checks and checkov's skips, every acknowledgment with its reason, in one place.

cdk-nag 3 matches acknowledgments by exact finding id (IAM5 findings name the resource), so the reasons here
are keyed by a pattern and applied to the findings of this stack that match it; a finding no pattern explains
still fails the synth.

checkov (tests/infra/test_checkov.py) reads a skip from the resource's own template metadata; `skip_checkov` writes
it where the resource is made, with one of the reasons below, so a resource added later is checked in full.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aws_cdk import Acknowledgment, App, CfnResource, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

# Region and account as they appear in a finding: literal for a stack with a concrete env, CDK's token name for an
# environment-agnostic one (`cdk synth` without credentials).
_REGION = r"([a-z0-9-]+|<AWS::Region>)"
_ACCOUNT = r"(\d{12}|<AWS::AccountId>)"

ACKNOWLEDGMENTS: list[tuple[str, str]] = [
    (
        r"AwsSolutions-IAM5\[Resource::\*\]",
        "EC2/RDS Describe*, ssm:GetCommandInvocation, ssm:ListCommands, ssm:CancelCommand and X-Ray "
        "PutTraceSegments support no resource-level "
        "permissions; every mutating action is scoped to named resources or to this tool's tag.",
    ),
    (
        r"AwsSolutions-IAM5\[Resource::<[A-Za-z0-9]+\.Arn>:\*\]",
        "The state machine invokes its own functions, including their versions (Lambda ARN with a qualifier).",
    ),
    (
        r"AwsSolutions-IAM5\[Action::kms:(GenerateDataKey|ReEncrypt)\*\]",
        "CDK's grant on the stack's own KMS key (run table, topic): data-key generation for DynamoDB and SNS.",
    ),
    (
        rf"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:ec2:{_REGION}:{_ACCOUNT}?:(snapshot|volume)/\*\]",
        "Snapshot ids are not known before creation: CreateSnapshots requires this tool's tag in the request, "
        "CreateTags only during CreateSnapshots or on resources carrying the tool's tag, DeleteSnapshot only on "
        "resources carrying the tool's tag. Volumes are chosen by the call's exclusions on a named instance.",
    ),
    (
        rf"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:rds:{_REGION}:{_ACCOUNT}:(cluster-)?snapshot:"
        r"([a-z][a-z0-9-]*-)?\*\]",
        "The snapshot name is the backup id, made at run time: creating and tagging are limited to names starting "
        "with the instance name, deleting and re-tagging require this tool's tag.",
    ),
    (
        r"AwsSolutions-IAM4\[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
        r"AWSLambdaVPCAccessExecutionRole\]",
        "AWS's minimal policy for the network interfaces of Lambdas in a VPC (only when network is configured).",
    ),
    (
        r"AwsSolutions-L1",
        "Python 3.13 is the product's target runtime; it moves forward deliberately after testing.",
    ),
    (
        r"AwsSolutions-S1",
        "The archive bucket's access is by the backup Lambdas and the configured hosts only; object-level events are "
        "in CloudTrail when the account enables data events, so no second bucket for server access logs is created.",
    ),
    (
        r"AwsSolutions-IAM5\[Resource::<Archives[A-Za-z0-9]*\.Arn>/\*\]",
        "Archive keys are made at run time (instance/backup-id/...): the catalog reads their tags; re-tagging and "
        "deleting require this tool's marker tag on the object (s3:ExistingObjectTag).",
    ),
    (
        r"AwsSolutions-IAM5\[Resource::<Archives[A-Za-z0-9]*\.Arn>/[a-z][a-z0-9-]*/\*\]",
        "Archive keys are made at run time under the instance's prefix (instance/backup-id/...): re-tagging and "
        "deleting are limited to that prefix and require this deployment's tags on the object (s3:ExistingObjectTag).",
    ),
    (
        rf"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:states:{_REGION}:{_ACCOUNT}:execution:"
        r"<[A-Za-z0-9]+\.Name>:\*\]",
        "The operator's unlock asks whether the run that locked is still running (DescribeExecution): execution "
        "names are made at run time; only the executions of the instance's own backup state machine.",
    ),
    # --- disaster-recovery copies -------------------------------------------------------------------------------------
    (
        r"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:s3:::[a-z0-9][a-z0-9.-]+/[a-z][a-z0-9-]*/\*\]",
        "Archive copies in a copy target's bucket are keyed by the backup id made at run time: writing is limited to "
        "the instance's own prefix, re-tagging and deleting additionally require this tool's marker tag on the object.",
    ),
    # --- the restore workflow -----------------------------------------------------------------------------------------
    (
        rf"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:rds:{_REGION}:{_ACCOUNT}:"
        r"(db|cluster|subgrp|pg|cluster-pg|og|secgrp):\*\]",
        "A restore creates a NEW database under a name the operator picks at run time, with the original's or the "
        "operator's subnet, security and parameter groups: creating requires this tool's tag in the request, deleting "
        "requires this tool's tag with the status 'restoring' (only what a failed restore made).",
    ),
    (
        rf"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:rds:{_REGION}:{_ACCOUNT}:(db|cluster):restored-\*\]",
        "A restore creates a NEW database under a name the operator picks at run time, always with the fixed prefix "
        "'restored-': creating and tagging require this deployment's tags (status 'restoring') on a resource not yet "
        "tagged, deleting requires the status 'restoring' (only what a failed restore made).",
    ),
    (
        rf"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:ec2:{_REGION}:{_ACCOUNT}:instance/\*\]",
        "The restore's target instance is named at run time: attaching, starting, stopping and Run Command are allowed "
        "only on instances the operator tagged bitbucket-backup:restore-target with one of these Bitbucket instances.",
    ),
    (
        rf"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:ec2:{_REGION}:{_ACCOUNT}?:(volume/vol|snapshot/snap)-\*\]",
        "Restored volumes get their ids at creation: CreateVolume requires this tool's tag in the request and only "
        "this tool's snapshots of these instances as sources; attach and re-tag need the tool's tag, detach and "
        "delete additionally the status 'restoring'.",
    ),
    (
        rf"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:kms:{_REGION}:{_ACCOUNT}:key/\*\]",
        "An encrypted snapshot's customer-managed key is known only at run time; the restore uses it only through "
        "EC2 or RDS (kms:ViaService), and grants only for AWS resources (kms:GrantIsForAWSResource).",
    ),
    # --- the restore's executions: its safety net and the restore drill ----------------------------------------------
    (
        rf"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:states:{_REGION}:{_ACCOUNT}:execution:"
        r'\{"Fn::Select":\[6,\{"Fn::Split":\[":",\{"Ref":"Restore[0-9]*(ForDrills)?StateMachine[0-9A-F]{8}"\}\]\}\]\}:?\*\]',
        "Executions of a restore state machine (the operators' or the drill's own), whose names are made at run time: "
        "the restore's safety net reads a stopped execution's history (its plan), and CDK's grant for "
        "startExecution.sync lets the drill wait for (DescribeExecution) and stop the restore it starts.",
    ),
]


# Findings only a stack with an archive bucket (an rsync or postgresql instance) has.
ARCHIVE_ONLY = {
    r"AwsSolutions-S1",
    r"AwsSolutions-IAM5\[Resource::<Archives[A-Za-z0-9]*\.Arn>/\*\]",
    r"AwsSolutions-IAM5\[Resource::<Archives[A-Za-z0-9]*\.Arn>/[a-z][a-z0-9-]*/\*\]",
}
# Findings only a stack that copies archives to other regions has (tests/infra/test_copies_template.py).
COPIES_ONLY = {r"AwsSolutions-IAM5\[Resource::arn:<AWS::Partition>:s3:::[a-z0-9][a-z0-9.-]+/[a-z][a-z0-9-]*/\*\]"}


def pattern_for(rule: str) -> str | None:
    """The first pattern of the table that explains this finding id, if any."""
    for pattern, _ in ACKNOWLEDGMENTS:
        if re.fullmatch(pattern, rule):
            return pattern
    return None


def reason_for(rule: str) -> str | None:
    pattern = pattern_for(rule)
    return dict(ACKNOWLEDGMENTS)[pattern] if pattern else None


def acknowledged(stack: Stack) -> dict[str, str]:
    """The finding ids `check` acknowledged on this stack, with their reasons, read back from the construct
    metadata `Validations.acknowledge` writes; lets a test tell which table entries are still used."""
    found: dict[str, str] = {}
    for entry in stack.node.metadata:
        if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY and isinstance(entry.data, dict):
            for key, reason in entry.data.items():
                found[re.sub(r"^annotation::", "", key, flags=re.IGNORECASE)] = str(reason)
    return found


def check(app: App, stack: Stack) -> None:
    """Acknowledge the findings the table explains; the rest fail `app.synth()`."""
    pack = AwsSolutionsChecks(app)
    report = pack.validate_scope(stack)
    for violation in report.violations:
        reason = reason_for(violation.rule_name)
        if reason:
            Validations.of(stack).acknowledge(Acknowledgment(id=violation.rule_name, reason=reason))
    Validations.of(app).add_plugins(pack)


# --- checkov ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckovSkip:
    id: str  # checkov's check id, e.g. CKV_AWS_116
    comment: str  # why the check does not apply to the resources that carry this skip


LAMBDA_CONCURRENCY = CheckovSkip(
    "CKV_AWS_115",
    "Reserved concurrency is taken from the account's shared pool (as little as 10 in a new account) and every "
    "function runs a few times per backup, started only by its own state machine or rule.",
)
LAMBDA_SYNCHRONOUS = CheckovSkip(
    "CKV_AWS_116",
    "Invoked synchronously by its state machine, whose Retry and Catch handle every error; a dead-letter queue "
    "only receives failed asynchronous invocations.",
)
LAMBDA_NO_NETWORK = CheckovSkip(
    "CKV_AWS_117",
    "Runs in a VPC when the configuration names one (network: subnet_ids, security_group_ids); without one it calls "
    "AWS APIs and Bitbucket's configured URL directly.",
)
LAMBDA_ENVIRONMENT = CheckovSkip(
    "CKV_AWS_173",
    "The environment holds no secret, only names (run table, topic, parameter path, bucket, log level); "
    "credentials are read from Secrets Manager when a step runs.",
)
STALENESS_CHECK_ASYNC = CheckovSkip(
    "CKV_AWS_116",
    "A failed staleness check publishes no metric, and the staleness alarms treat missing data as breaching: the "
    "failure alarms without a dead-letter queue.",
)
ARCHIVE_ACCESS_LOGS = CheckovSkip("CKV_AWS_18", dict(ACKNOWLEDGMENTS)[r"AwsSolutions-S1"])

CHECKOV_SKIPS = [
    LAMBDA_CONCURRENCY,
    LAMBDA_SYNCHRONOUS,
    LAMBDA_NO_NETWORK,
    LAMBDA_ENVIRONMENT,
    STALENESS_CHECK_ASYNC,
    ARCHIVE_ACCESS_LOGS,
]


def skip_checkov(construct: IConstruct, *skips: CheckovSkip) -> None:
    """Writes `Metadata: checkov: skip: [{id, comment}]` on the construct's CloudFormation resource (or on the
    resource itself), keeping skips written earlier."""
    resource = construct if isinstance(construct, CfnResource) else construct.node.default_child
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to carry a checkov skip")
    current = resource.get_metadata("checkov") or {}
    entries: list[dict[str, str]] = list(current.get("skip", []))
    for skip in skips:
        if all(e["id"] != skip.id for e in entries):
            entries.append({"id": skip.id, "comment": skip.comment})
    resource.add_metadata("checkov", {**current, "skip": entries})
