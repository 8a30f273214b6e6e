"""The catalog's guarantees in IAM, asserted on the synthesized template (moto does not evaluate conditions):

- every artifact is this deployment's: each delete and re-tag requires the deployment's id (issue 10, finding 6);
- only the pruning step (finalize) may delete a complete backup; the failure path and the safety net delete only
  what is not complete, the drill nothing; immutable instances' snapshots are locked by finalize and nobody may unlock
  them or bypass an archive's retention (finding 7);
- restored databases live under a fixed prefix, tags are written only as resources are created or only forward
  (nothing becomes `restoring` or `in-progress` again), only with known keys; archive deletes are scoped to each
  instance's prefix (finding 9).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from functions.strategies import (
    COMPLETE,
    DEPLOYMENT_TAG,
    FAILED,
    IN_PROGRESS,
    PART_TAG,
    RESTORING,
    STATUS_TAG,
)
from tests.infra.conftest import PROD, STAGING, placeholder, resolve_join
from tests.infra.test_copies_template import ARCHIVES

ACCOUNT, REGION = "123456789012", "eu-west-1"
DEPLOYMENT = f"{ACCOUNT}/{REGION}/BitbucketDiyBackup"
DR_KEY = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
IMMUTABLE_PROD = {
    **PROD,
    "network": None,
    "immutable": {"mode": "compliance"},
    "copies": [{"region": "eu-central-1", "kms_key_id": DR_KEY}],
}
# The copies template's archiving instance (rsync and pg_dump on one host), immutable, with one DR copy.
ARCHIVED = {
    **ARCHIVES,
    "schedule": "rate(1 day)",
    "immutable": {"mode": "compliance"},
    "copies": [{"region": "eu-central-1", "archive_bucket": "dr-archives-eu-central-1"}],
}
DELETES = {
    "ec2:DeleteSnapshot",
    "rds:DeleteDBSnapshot",
    "rds:DeleteDBClusterSnapshot",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "ec2:DeleteVolume",
    "rds:DeleteDBInstance",
    "rds:DeleteDBCluster",
}
SNAPSHOT_DELETES = {"ec2:DeleteSnapshot", "rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"}
ARCHIVE_DELETES = {"s3:DeleteObject", "s3:DeleteObjectVersion"}
# The copy steps (their functions' construct ids) and the part each one's snapshots carry.
COPY_STEPS = {"BackupHome": "home", "BackupDatabase": "database", "BackupMeshNode": "mesh-*"}
RETAGS = {"ec2:CreateTags", "rds:AddTagsToResource", "s3:PutObjectTagging", "s3:PutObjectVersionTagging"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    from rehearsal.synth import synthesized

    project = {"bundling": "none", "instances": [IMMUTABLE_PROD, {**STAGING, "network": None}, ARCHIVED]}
    return synthesized(project, checks=True).template  # cdk-nag: every finding acknowledged


def _text(value: Any, template: dict[str, Any]) -> str:
    if isinstance(value, str):
        return value
    return resolve_join(value, template) if "Fn::Join" in value else placeholder(value, template)


def _roles(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every Lambda role's Allow statements (inline and overflow policies), by the function's logical id."""
    resources = template["Resources"]
    role_of = {
        fn["Properties"]["Role"]["Fn::GetAtt"][0]: re.sub(r"[0-9A-F]{8}$", "", name)  # the construct id
        for name, fn in resources.items()
        if fn["Type"] == "AWS::Lambda::Function"
    }
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in role_of.values()}
    for resource in resources.values():
        if resource["Type"] not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            continue
        for role in resource["Properties"].get("Roles", []):
            if role.get("Ref") in role_of:
                found[role_of[role["Ref"]]] += resource["Properties"]["PolicyDocument"]["Statement"]
    return found


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return set(actions if isinstance(actions, list) else [actions])


def _resources(statement: dict[str, Any], template: dict[str, Any]) -> list[str]:
    resources = statement["Resource"]
    return [_text(r, template) for r in (resources if isinstance(resources, list) else [resources])]


def _values(condition: dict[str, Any], operator: str, key: str) -> set[str] | None:
    value = condition.get(operator, {}).get(key)
    if value is None:
        return None
    return set(value if isinstance(value, list) else [value])


def _statements(template: dict[str, Any], actions: set[str]) -> list[tuple[str, dict[str, Any]]]:
    return [(fn, s) for fn, statements in _roles(template).items() for s in statements if _actions(s) & actions]


def test_every_function_knows_its_deployment_from_the_stack(template: dict[str, Any]) -> None:
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert functions
    for function in functions:
        assert _text(function["Properties"]["Environment"]["Variables"]["DEPLOYMENT_ID"], template) == DEPLOYMENT
    assert _text(template["Outputs"]["DeploymentId"]["Value"], template) == DEPLOYMENT


def test_every_delete_and_retag_requires_this_deployments_tag(template: dict[str, Any]) -> None:
    found = _statements(template, DELETES | RETAGS)
    assert found
    for fn, statement in found:
        condition = statement.get("Condition", {})
        if _values(condition, "StringEquals", "ec2:CreateAction"):
            continue  # tags written by the create call itself, which requires them (below)
        keys = {f"aws:ResourceTag/{DEPLOYMENT_TAG}", f"s3:ExistingObjectTag/{DEPLOYMENT_TAG}"}
        requested = {f"aws:RequestTag/{DEPLOYMENT_TAG}", f"s3:RequestObjectTag/{DEPLOYMENT_TAG}"}
        required = [_values(condition, "StringEquals", k) for k in keys | requested]
        assert {DEPLOYMENT} in required, (fn, statement)


def test_only_the_pruning_step_deletes_complete_backups(template: dict[str, Any]) -> None:
    deleting = _statements(template, SNAPSHOT_DELETES | ARCHIVE_DELETES)
    prune = {fn for fn, _ in deleting if fn.startswith("Finalize")}
    assert prune == {"Finalize"}
    for fn, statement in deleting:
        condition = statement["Condition"]
        statuses = _values(condition, "StringEquals", f"aws:ResourceTag/{STATUS_TAG}") or _values(
            condition, "StringEquals", f"s3:ExistingObjectTag/{STATUS_TAG}"
        )
        if fn == "Finalize":
            continue
        # Nothing else deletes a backup; a copy step only what it just made for a run already failed (below).
        assert fn.startswith(("HandleFailure", "SafetyNetFn", *COPY_STEPS)), fn
        assert statuses is not None and COMPLETE not in statuses, (fn, statement)
        assert statuses <= {IN_PROGRESS, FAILED}
    # The drill records its verdict and deletes none of the backup's artifacts.
    assert not [fn for fn, _ in deleting if fn.startswith("Drill")]


def test_a_copy_step_deletes_only_unfinished_snapshots_of_its_own_part(template: dict[str, Any]) -> None:
    """A copy step that finds its run already failed once its snapshot is made deletes that snapshot
    (functions/backup.py): of its own part only (the home's step no database snapshot, nor the reverse), never an
    archive, never a complete one (above)."""
    found = [(fn, s) for fn, s in _statements(template, DELETES) if fn.startswith(tuple(COPY_STEPS))]
    assert {fn for fn, _ in found} == {"BackupHome", "BackupDatabase"}  # this template has no Mesh node
    for fn, statement in found:
        assert _actions(statement) <= SNAPSHOT_DELETES, (fn, statement)
        part = COPY_STEPS[fn]
        operator = "StringLike" if part.endswith("*") else "StringEquals"
        assert _values(statement["Condition"], operator, f"aws:ResourceTag/{PART_TAG}") == {part}, statement
    home = {a for fn, s in found if fn == "BackupHome" for a in _actions(s)}
    assert home == {"ec2:DeleteSnapshot"}
    database = {a for fn, s in found if fn == "BackupDatabase" for a in _actions(s)}
    assert database == {"rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"}  # an RDS and an Aurora instance


def test_a_status_only_moves_forward(template: dict[str, Any]) -> None:
    """No role may give an existing resource the status `in-progress` or `restoring` (which the failure paths may
    delete): those are written only by the create call, or on a resource that has no status yet."""
    for fn, statement in _statements(template, RETAGS):
        condition = statement.get("Condition", {})
        wanted = (_values(condition, "StringEquals", f"aws:RequestTag/{STATUS_TAG}") or set()) | (
            _values(condition, "StringEquals", f"s3:RequestObjectTag/{STATUS_TAG}") or set()
        )
        if _values(condition, "StringEquals", "ec2:CreateAction"):
            continue
        if "s3:PutObjectTagging" in _actions(statement):
            continue  # the whole tag set is replaced: asserted below
        if wanted & {IN_PROGRESS, RESTORING}:
            assert condition.get("Null") == {f"aws:ResourceTag/{STATUS_TAG}": "true"}, (fn, statement)
            continue
        # Re-tagging an existing resource: only from a given status, only given keys.
        was = _values(condition, "StringEquals", f"aws:ResourceTag/{STATUS_TAG}")
        assert was and not (wanted & {IN_PROGRESS, RESTORING}), (fn, statement)
        assert condition.get("ForAllValues:StringEquals", {}).get("aws:TagKeys"), (fn, statement)


def test_archive_retags_keep_the_marker_and_never_go_back(template: dict[str, Any]) -> None:
    found = _statements(template, {"s3:PutObjectTagging"})
    assert found
    for fn, statement in found:
        condition = statement["Condition"]
        assert _values(condition, "StringEquals", f"s3:RequestObjectTag/{DEPLOYMENT_TAG}") == {DEPLOYMENT}
        was = _values(condition, "StringEquals", f"s3:ExistingObjectTag/{STATUS_TAG}")
        to = _values(condition, "StringEquals", f"s3:RequestObjectTag/{STATUS_TAG}") or set()
        if fn == "CopyRegions":
            # Writing an archive copy (PutObject with tags needs PutObjectTagging): new copies are in progress.
            assert to == {IN_PROGRESS} and "s3:PutObject" in _actions(statement), statement
            continue
        assert was and IN_PROGRESS not in to, (fn, statement)


def test_restored_databases_are_only_those_under_the_fixed_prefix(template: dict[str, Any]) -> None:
    rds_actions = {
        "rds:AddTagsToResource",
        "rds:DeleteDBInstance",
        "rds:DeleteDBCluster",
        "rds:RestoreDBInstanceFromDBSnapshot",
        "rds:RestoreDBClusterFromSnapshot",
        "rds:CreateDBInstance",
    }
    for fn, statement in _statements(template, rds_actions):
        for resource in _resources(statement, template):
            kind = resource.split(":")[5] if resource.count(":") >= 6 else ""
            if kind in ("db", "cluster"):
                assert resource.split(":", 6)[6].startswith("restored-"), (fn, resource)
    # The backup's database step tags only snapshots being created (no status yet), with this deployment's tags.
    tagging = [s for fn, s in _statements(template, {"rds:AddTagsToResource"}) if fn == "BackupDatabase"]
    assert len(tagging) == 2  # RDS and Aurora snapshots
    for statement in tagging:
        assert statement["Condition"]["Null"] == {f"aws:ResourceTag/{STATUS_TAG}": "true"}
        assert _values(statement["Condition"], "StringEquals", f"aws:RequestTag/{STATUS_TAG}") == {IN_PROGRESS}


def test_archive_deletes_are_scoped_to_each_instances_prefix(template: dict[str, Any]) -> None:
    found = _statements(template, ARCHIVE_DELETES)
    assert found
    for fn, statement in found:
        for resource in _resources(statement, template):
            assert resource.endswith("/archived/*"), (fn, resource)


def test_immutable_backups_are_locked_by_finalize_and_nobody_can_lift_a_lock(template: dict[str, Any]) -> None:
    locking = _statements(template, {"ec2:LockSnapshot", "s3:PutObjectRetention"})
    assert {fn for fn, _ in locking} == {"Finalize"}
    regions = {
        r.split(":")[3] for _, s in locking if "ec2:LockSnapshot" in _actions(s) for r in _resources(s, template)
    }
    assert regions == {REGION, "eu-central-1"}  # the originals and the same-account copies
    for lifting in ("ec2:UnlockSnapshot", "s3:BypassGovernanceRetention", "s3:PutBucketObjectLockConfiguration"):
        assert not _statements(template, {lifting}), lifting
    (bucket,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::S3::Bucket"]
    assert bucket["Properties"]["ObjectLockEnabled"] is True


def test_grants_must_name_exactly_the_constructs_functions() -> None:
    """A typed grant per function: a function without grants (or grants for a function that does not exist) fails
    the synth instead of being skipped."""
    from stacks.constructs.drill_workflow import DrillGrants
    from stacks.constructs.grants import FunctionGrants, apply

    grants = DrillGrants(
        plan=FunctionGrants(), check=FunctionGrants(), check_status=FunctionGrants(), finish=FunctionGrants()
    )
    functions: dict[str, Any] = {"plan": None, "check": None, "check_status": None, "finish": None, "extra": None}
    with pytest.raises(ValueError, match=r"without grants \['extra'\]"):
        apply(grants, functions, topic=None, key=None)  # type: ignore[arg-type]
    del functions["extra"], functions["finish"]
    with pytest.raises(ValueError, match=r"without a function \['finish'\]"):
        apply(grants, functions, topic=None, key=None)  # type: ignore[arg-type]
