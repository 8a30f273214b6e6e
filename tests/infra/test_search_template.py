"""The search index in the template: which functions may call the cluster and how, the role an Amazon OpenSearch
domain assumes for its repository, and the copy and restore branches only where an instance has a search index."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from functions.models.steps import BACKUP, RESTORE
from rehearsal.fake_account import set_fake_credentials
from rehearsal.synth import SEARCH_DOMAIN_ARN, SEARCH_SECRET, rehearsal_project_config, synth_template
from tests.infra.conftest import resolve_join
from tests.infra.test_drill_template import actions, of_type, policy_of

ES = {"es:ESHttpGet", "es:ESHttpPut", "es:ESHttpPost", "es:ESHttpDelete"}
# The functions that reach the cluster, and the HTTP methods each may use.
METHODS = {
    "Validate": {"es:ESHttpGet", "es:ESHttpPut"},  # registers the domain's repository
    # Looks for a start whose answer was lost; deletes its own snapshot when its run was discarded meanwhile.
    "BackupSearchIndex": {"es:ESHttpGet", "es:ESHttpPut", "es:ESHttpDelete"},
    "CheckSnapshots": {"es:ESHttpGet"},
    "Finalize": {"es:ESHttpGet", "es:ESHttpDelete"},  # prunes
    "HandleFailure": {"es:ESHttpGet", "es:ESHttpDelete"},
    "SafetyNetFn": {"es:ESHttpGet", "es:ESHttpDelete"},
    "RestoreValidate": {"es:ESHttpGet"},
    "RestoreSearchIndex": {"es:ESHttpGet", "es:ESHttpPost"},
    "RestoreCheck": {"es:ESHttpGet"},
    "RestoreFailure": {"es:ESHttpGet", "es:ESHttpDelete"},
    "RestoreSafetyNetFn": {"es:ESHttpGet", "es:ESHttpDelete"},
}


def _template(search: str) -> dict[str, Any]:
    set_fake_credentials()
    return synth_template(rehearsal_project_config("amazon-ebs", "amazon-rds", search=search))


@pytest.fixture(scope="module")
def amazon() -> dict[str, Any]:
    return _template("amazon-opensearch")


def _functions(template: dict[str, Any]) -> list[str]:
    return sorted(of_type(template, "AWS::Lambda::Function"))


def test_only_the_steps_that_need_the_domain_may_call_it_and_with_their_methods_only(amazon: dict[str, Any]) -> None:
    found = {}
    for logical in _functions(amazon):
        statements = policy_of(amazon, logical)
        granted = actions(statements) & ES
        if granted:
            found[next(p for p in sorted(METHODS, key=len, reverse=True) if logical.startswith(p))] = granted
            resources = json.dumps([s["Resource"] for s in statements if set(actions([s])) & ES])
            assert f"{SEARCH_DOMAIN_ARN}/*" in resources and "es:*" not in json.dumps(statements), logical
    assert found == METHODS


def test_the_domain_writes_its_repository_with_a_role_of_its_own_and_only_validate_passes_it(
    amazon: dict[str, Any],
) -> None:
    ((logical, role),) = [(k, v) for k, v in of_type(amazon, "AWS::IAM::Role").items() if "SearchSnapshotRole" in k]
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "es.amazonaws.com"}
    assert trust["Condition"]["ArnLike"]["aws:SourceArn"] == [SEARCH_DOMAIN_ARN]
    assert "aws:SourceAccount" in trust["Condition"]["StringEquals"]
    own = [
        s
        for p in of_type(amazon, "AWS::IAM::Policy").values()
        if {"Ref": logical} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    s3 = [s for s in own if any(a.startswith("s3:") for a in actions([s]))]
    assert actions(s3) == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    (objects,) = [s for s in s3 if "s3:PutObject" in actions([s])]
    resources = objects["Resource"] if isinstance(objects["Resource"], list) else [objects["Resource"]]
    assert resources and all("search-repository/demo/*" in json.dumps(r) for r in resources), resources
    passing = [f for f in _functions(amazon) if "iam:PassRole" in actions(policy_of(amazon, f))]
    assert len(passing) == 1 and passing[0].startswith("Validate"), passing
    (statement,) = [s for s in policy_of(amazon, passing[0]) if "iam:PassRole" in actions([s])]
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "es.amazonaws.com"}}
    assert logical in json.dumps(statement["Resource"])


def test_the_copy_step_writes_catalog_entries_of_this_deployment_in_progress_only(amazon: dict[str, Any]) -> None:
    statements = policy_of(amazon, "BackupSearchIndex")
    assert not {a for a in actions(statements) if a.startswith(("ec2:", "rds:", "ssm:SendCommand"))}
    (put,) = [s for s in statements if "s3:PutObject" in actions([s])]
    conditions = put["Condition"]["StringEquals"]
    assert conditions["s3:RequestObjectTag/bitbucket-backup:status"] == "in-progress"
    assert conditions["s3:RequestObjectTag/bitbucket-backup:tool"] == "bitbucket-diy-backup-aws"
    assert "/demo/*" in json.dumps(put["Resource"]) and "search-repository" not in json.dumps(put["Resource"])


def test_a_self_managed_clusters_secret_is_read_by_the_steps_that_reach_it_only() -> None:
    template = _template("opensearch")
    readers = sorted(
        next(p for p in sorted(METHODS, key=len, reverse=True) if f.startswith(p))
        for f in _functions(template)
        if SEARCH_SECRET in json.dumps(policy_of(template, f))
    )
    assert readers == sorted(METHODS)
    assert not [f for f in _functions(template) if actions(policy_of(template, f)) & ES]
    assert not [k for k in of_type(template, "AWS::IAM::Role") if "SearchSnapshotRole" in k]


def _machine(template: dict[str, Any], prefix: str) -> dict[str, Any]:
    (definition,) = [
        json.loads(resolve_join(r["Properties"]["DefinitionString"], template))
        for logical, r in of_type(template, "AWS::StepFunctions::StateMachine").items()
        if logical.startswith(prefix) and "Drill" not in logical
    ]
    return definition


def test_the_search_branch_and_step_exist_only_with_a_search_index(amazon: dict[str, Any]) -> None:
    copy = _machine(amazon, "BackupStateMachine")["States"][BACKUP.copy.state]
    (branch,) = [b for b in copy["Branches"] if "Search index configured?" in b["States"]]
    choice = branch["States"]["Search index configured?"]
    assert choice["Choices"][0]["Variable"] == "$.run.flow.search.strategy"
    assert branch["States"][choice["Default"]]["Parameters"]["part"] == "search"
    assert copy["ResultSelector"]["search.$"] == "$[2].part_result"
    warm = _machine(amazon, "BackupStateMachine")["States"][BACKUP.warm_up.state]
    assert any(f"Warm: {BACKUP.copy_search.state.lower()}" in b["States"] for b in warm["Branches"])
    restore = _machine(amazon, "RestoreStateMachine")["States"]
    assert restore[RESTORE.restore_search.state]["Parameters"]["part"] == "search"
    plain = _template("none")
    assert not [f for f in _functions(plain) if f.startswith(("BackupSearchIndex", "RestoreSearchIndex"))]
    assert "Search index configured?" not in json.dumps(_machine(plain, "BackupStateMachine"))


def test_a_domain_in_another_region_than_the_stack_is_refused_at_synth() -> None:
    from aws_cdk import Environment

    from functions.models.config import ConfigError
    from rehearsal.fake_account import ACCOUNT, REGION
    from stacks.app_builder import build_app

    project = rehearsal_project_config("amazon-ebs", "amazon-rds", search="amazon-opensearch")
    other = "us-west-2" if REGION != "us-west-2" else "eu-west-1"
    project["instances"][0]["search"]["domain_arn"] = f"arn:aws:es:{other}:{ACCOUNT}:domain/bitbucket-demo"
    with pytest.raises(ConfigError, match=f"is in {other}, but its snapshot repository is this stack's archive bucket"):
        build_app(project, env=Environment(account=ACCOUNT, region=REGION), checks=False)


@pytest.mark.parametrize("field", ["ca_bundle", "search.ca_bundle"])
def test_a_ca_bundle_missing_from_the_asset_is_refused_at_synth(field: str) -> None:
    from aws_cdk import Environment

    from functions.models.config import ConfigError
    from rehearsal.fake_account import ACCOUNT, REGION
    from stacks.app_builder import build_app

    project = rehearsal_project_config("amazon-ebs", "amazon-rds", search="opensearch")
    instance = project["instances"][0]
    (instance["search"] if field.startswith("search.") else instance)["ca_bundle"] = "functions/certs/missing.pem"
    said = re.escape(f"{field} 'functions/certs/missing.pem' is not a file")
    with pytest.raises(ConfigError, match=said):
        build_app(project, env=Environment(account=ACCOUNT, region=REGION), checks=False)
