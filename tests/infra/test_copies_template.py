"""Disaster-recovery copies in the template: the copy step's place and error handling, its IAM (copy only this
tool's resources into the configured regions, the configured keys and roles only; share and unshare only this tool's
originals, only for cross-account targets), the archive bucket's grant to cross-account roles, cdk-nag; and the
synth-time validation of copy targets."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from functions.models.config import ConfigError, parse_instance_config, parse_project_config
from functions.models.steps import BACKUP
from functions.strategies import INSTANCE_TAG, TOOL_TAG, TOOL_VALUE
from tests.infra.asl import happy_path
from tests.infra.conftest import PROD, STAGING, placeholder, resolve_join, state_machines_of

ACCOUNT, REGION = "123456789012", "eu-west-1"
DR_KEY = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
REMOTE = "210987654321"
REMOTE_ROLE = f"arn:aws:iam::{REMOTE}:role/bitbucket-dr-copies"
REMOTE_KEY = f"arn:aws:kms:us-east-1:{REMOTE}:key/0987dcba-12ab-34cd-56ef-1234567890ab"
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bitbucket-db-AbCdEf"

SNAPSHOTS = {**PROD, "network": None, "copies": [{"region": "eu-central-1", "kms_key_id": DR_KEY, "keep_backups": 14}]}
ARCHIVES = {
    "name": "archived",
    "base_url": "https://bitbucket-archived.example.com",
    "credentials_secret": "bitbucket/archived",
    "home": {
        "strategy": "rsync",
        "instance_id": "i-0123456789abcdef1",
        "home_path": "/var/atlassian/application-data/bitbucket",
        "staging_path": "/backup/staging",
    },
    "database": {
        "strategy": "postgresql",
        "instance_id": "i-0123456789abcdef1",
        "user": "bitbucket",
        "dbname": "bitbucket",
        "password_secret": SECRET,
        "dump_path": "/backup/dumps",
    },
    "copies": [
        {"region": "eu-central-1", "archive_bucket": "dr-archives-eu-central-1"},
        {
            "region": "us-east-1",
            "account_id": REMOTE,
            "role_arn": REMOTE_ROLE,
            "kms_key_id": REMOTE_KEY,
            "archive_bucket": "dr-archives-us-east-1",
        },
    ],
}

# Snapshots (EBS + Aurora) copied into another account only.
CROSS = {
    **STAGING,
    "copies": [{"region": "us-east-1", "account_id": REMOTE, "role_arn": REMOTE_ROLE, "kms_key_id": REMOTE_KEY}],
}


@pytest.fixture(scope="module")
def synthesized() -> tuple[dict[str, Any], set[str | None]]:
    from rehearsal.synth import synthesized
    from stacks import nag

    # Raises on any cdk-nag finding stacks/nag.py does not acknowledge.
    made = synthesized({"bundling": "none", "instances": [SNAPSHOTS, ARCHIVES, CROSS]}, checks=True)
    return made.template, {nag.pattern_for(rule) for rule in made.acknowledged}


def _policies_of(template: dict[str, Any], function_prefix: str) -> list[dict[str, Any]]:
    resources = template["Resources"]
    role = next(
        k for k in resources if k.startswith(f"{function_prefix}Role") and resources[k]["Type"] == "AWS::IAM::Role"
    )
    return [
        statement
        for r in resources.values()
        # A role's statements beyond the inline policy's size limit go to CDK's overflow managed policies.
        if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        and {"Ref": role} in r["Properties"].get("Roles", [])
        for statement in r["Properties"]["PolicyDocument"]["Statement"]
    ]


def _text(value: Any, template: dict[str, Any]) -> str:
    return resolve_join(value, template) if "Fn::Join" in value else placeholder(value, template)


def _allows(statements: list[dict[str, Any]], action: str, template: dict[str, Any]) -> list[tuple[list[str], Any]]:
    found = []
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        if action in actions:
            resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
            found.append(([_text(r, template) if isinstance(r, dict) else r for r in resources], s.get("Condition")))
    return found


def test_copy_step_runs_after_the_archives_and_before_finalize_and_is_guarded(synthesized: Any) -> None:
    template, _ = synthesized
    (sm,) = state_machines_of(template).values()
    states = sm.definition["States"]
    path = happy_path(sm.definition)
    assert path.index("Archive done?") < path.index(BACKUP.copy_regions.state) < path.index(BACKUP.finalize.state)
    copy = states[BACKUP.copy_regions.state]
    retried = {e: r for r in copy["Retry"] for e in r["ErrorEquals"]}
    assert retried["AwsRateLimited"]["BackoffRate"] >= 2 and retried["AwsRateLimited"]["MaxAttempts"] >= 3
    assert states[copy["Catch"][-1]["Next"]]["Next"] == BACKUP.handle_failure.state
    assert states[copy["Catch"][-1]["Next"]]["Parameters"]["failure"]["step"] == "copy-regions"
    choice = states[copy["Next"]]
    assert choice["Choices"][0]["Next"] == BACKUP.finalize.state
    wait = states[choice["Default"]]
    assert wait["SecondsPath"] == "$.run.flow.timing.copy_poll_interval_seconds"
    assert wait["Next"] == BACKUP.copy_regions.state


def test_cdk_nag_passes_with_copies_and_their_acknowledgment_is_used(synthesized: Any) -> None:
    from stacks import nag

    _, used = synthesized
    assert used >= nag.COPIES_ONLY


def test_copy_function_copies_only_this_tools_snapshots_into_the_configured_regions(synthesized: Any) -> None:
    template, _ = synthesized
    statements = _policies_of(template, "CopyRegions")
    copies = _allows(statements, "ec2:CopySnapshot", template)
    by_resource = {r: c for resources, c in copies for r in resources}
    source, target = "arn:aws:ec2:eu-west-1::snapshot/*", "arn:aws:ec2:eu-central-1::snapshot/*"
    assert by_resource[source]["StringEquals"][f"aws:ResourceTag/{TOOL_TAG}"] == TOOL_VALUE
    assert by_resource[target]["StringEquals"][f"aws:RequestTag/{TOOL_TAG}"] == TOOL_VALUE
    ((tag_resources, tag_condition),) = _allows(statements, "ec2:CreateTags", template)
    assert tag_resources == [target] and tag_condition["StringEquals"]["ec2:CreateAction"] == "CopySnapshot"
    rds = {r for resources, _ in _allows(statements, "rds:CopyDBSnapshot", template) for r in resources}
    assert rds == {
        "arn:aws:rds:eu-west-1:123456789012:snapshot:prod-*",
        "arn:aws:rds:eu-central-1:123456789012:snapshot:prod-*",
    }
    # The configured destination key (same account) only; the cross-account target's key is its role's business.
    kms = {
        r for resources, _ in _allows(statements, "kms:ReEncryptTo", template) for r in resources if "key/*" not in r
    }
    assert kms == {DR_KEY}
    ((roles, _),) = _allows(statements, "sts:AssumeRole", template)
    assert roles == [REMOTE_ROLE]
    puts = {r for resources, _ in _allows(statements, "s3:PutObject", template) for r in resources}
    assert puts == {"arn:aws:s3:::dr-archives-eu-central-1/archived/*"}
    assert not _allows(statements, "ec2:DeleteSnapshot", template)


def test_copies_are_deleted_only_when_they_carry_the_tool_tag(synthesized: Any) -> None:
    template, _ = synthesized
    for function in ("Finalize", "HandleFailure"):
        statements = _policies_of(template, function)
        for action in ("ec2:DeleteSnapshot", "rds:DeleteDBSnapshot", "s3:DeleteObjectVersion"):
            found = _allows(statements, action, template)
            assert found, (function, action)
            for _, condition in found:
                equals = condition["StringEquals"]
                assert TOOL_VALUE in (
                    equals.get(f"aws:ResourceTag/{TOOL_TAG}"),
                    equals.get(f"s3:ExistingObjectTag/{TOOL_TAG}"),
                )
        regions = {r for resources, _ in _allows(statements, "ec2:DeleteSnapshot", template) for r in resources}
        assert regions == {"arn:aws:ec2:eu-west-1::snapshot/*", "arn:aws:ec2:eu-central-1::snapshot/*"}
        assert _allows(statements, "sts:AssumeRole", template)


def test_only_this_tools_originals_of_cross_account_instances_are_shared_and_unshared(synthesized: Any) -> None:
    template, _ = synthesized
    # The copy step shares; finalize unshares once the copies are complete; the failure path and the safety net
    # unshare the originals they keep.
    for function in ("CopyRegions", "Finalize", "HandleFailure", "SafetyNetFn"):
        statements = _policies_of(template, function)
        ((ebs, ebs_condition),) = _allows(statements, "ec2:ModifySnapshotAttribute", template)
        assert ebs == ["arn:aws:ec2:eu-west-1::snapshot/*"], function
        ((rds, rds_condition),) = _allows(statements, "rds:ModifyDBClusterSnapshotAttribute", template)
        assert rds == ["arn:aws:rds:eu-west-1:123456789012:cluster-snapshot:staging-*"], function
        for condition in (ebs_condition, rds_condition):
            assert condition["StringEquals"][f"aws:ResourceTag/{TOOL_TAG}"] == TOOL_VALUE
            assert condition["StringEquals"][f"aws:ResourceTag/{INSTANCE_TAG}"] in ("staging", ["staging"])
        # prod copies within its own account only: its snapshots are never shared.
        shared = {
            r for resources, _ in _allows(statements, "rds:ModifyDBSnapshotAttribute", template) for r in resources
        }
        assert not any(":prod-" in r for r in shared), function
    for function in ("CheckSnapshots", "Validate"):
        assert not _allows(_policies_of(template, function), "ec2:ModifySnapshotAttribute", template), function


def test_cross_account_role_may_read_the_archives(synthesized: Any) -> None:
    template, _ = synthesized
    policies = [r for r in template["Resources"].values() if r["Type"] == "AWS::S3::BucketPolicy"]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    readers = [s for s in statements if s.get("Principal", {}).get("AWS") == REMOTE_ROLE]
    assert readers and all(s["Effect"] == "Allow" and "s3:GetObject" in s["Action"] for s in readers)
    keys = [r for r in template["Resources"].values() if r["Type"] == "AWS::KMS::Key"]
    assert any(REMOTE_ROLE in json.dumps(k["Properties"]["KeyPolicy"]) for k in keys)


# --- synth-time validation ----------------------------------------------------------------------------------------


def _instance(copies: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    return {**PROD, "network": None, "copies": copies, **overrides}


@pytest.mark.parametrize(
    ("copies", "expected"),
    [
        ([{"region": "eu-central-1"}], "kms_key_id (a key in eu-central-1) is required"),
        ([{"region": "eu-central-1", "kms_key_id": "alias/dr"}], "is not a KMS key ARN"),
        ([{"region": "us-east-1", "kms_key_id": DR_KEY}], "kms_key_id is a key of eu-central-1, not us-east-1"),
        ([{"region": "Frankfurt", "kms_key_id": DR_KEY}], "copies.0.region"),
        ([{"region": "eu-central-1", "kms_key_id": DR_KEY}] * 2, "eu-central-1 is listed twice"),
        (
            [{"region": "us-east-1", "kms_key_id": REMOTE_KEY, "account_id": REMOTE}],
            "account_id and role_arn go together",
        ),
        (
            [{"region": "us-east-1", "kms_key_id": REMOTE_KEY, "account_id": REMOTE, "role_arn": "bitbucket-dr"}],
            "is not an IAM role ARN",
        ),
        (
            [
                {
                    "region": "us-east-1",
                    "kms_key_id": REMOTE_KEY,
                    "account_id": "111122223333",
                    "role_arn": "arn:aws:iam::111122223333:role/dr",
                }
            ],
            "kms_key_id is not a key of account 111122223333",
        ),
        ([{"region": "eu-central-1", "kms_key_id": DR_KEY, "keep_backups": -1}], "copies.0.keep_backups"),
    ],
)
def test_bad_copy_targets_are_refused_with_one_line(copies: list[dict[str, Any]], expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)) as raised:
        parse_project_config({"instances": [_instance(copies)]})
    assert "instance 'prod'" in str(raised.value) and "\n" not in str(raised.value)


def test_archives_need_a_bucket_in_the_target() -> None:
    raw = {**ARCHIVES, "copies": [{"region": "eu-central-1"}]}
    with pytest.raises(ConfigError, match=r"archive_bucket \(a bucket in eu-central-1\) is required"):
        parse_instance_config(raw)


def test_keep_backups_of_a_target_defaults_to_the_instances() -> None:
    config = parse_instance_config(ARCHIVES)
    local, remote = config.copies
    assert config.keep_copies(local) == config.keep_backups
    assert parse_instance_config(SNAPSHOTS).keep_copies(parse_instance_config(SNAPSHOTS).copies[0]) == 14
    assert remote.label == f"us-east-1/{REMOTE}"
    assert config.longest_run_seconds == config.timing.longest_run_seconds + config.timing.copy_timeout_seconds


def test_a_copy_in_the_stacks_own_region_is_refused_at_synth() -> None:
    from aws_cdk import Environment

    from stacks.app_builder import build_app

    own = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    project = {"bundling": "none", "instances": [_instance([{"region": REGION, "kms_key_id": own}])]}
    with pytest.raises(ConfigError, match="eu-west-1 is this stack's own region"):
        build_app(project, env=Environment(account=ACCOUNT, region=REGION), checks=False)
