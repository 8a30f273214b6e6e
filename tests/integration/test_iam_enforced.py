"""IAM in the rehearsal (rehearsal/iam.py): every function calls AWS as its own role, and moto refuses an action the
role does not allow, as AWS would after `cdk deploy`. A happy path needs no refusal; a role missing one action fails
its step visibly, with Bitbucket unlocked and one notification."""

from __future__ import annotations

import json
from typing import Any

from rehearsal.fake_account import ACCOUNT, REGION
from tests.integration.conftest import World


def _roles_allowing(world: World, action: str) -> list[tuple[str, str, dict[str, Any]]]:
    iam = world.r.client("iam")
    found = []
    for role in iam.list_roles()["Roles"]:
        for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
            document = json.loads(document) if isinstance(document, str) else document
            if any(action in json.dumps(s.get("Action")) for s in document["Statement"]):
                found.append((role["RoleName"], name, document))
    return found


def test_a_backup_runs_with_each_function_as_its_own_role_and_nothing_denied(world: World) -> None:
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert world.r.iam.denied == []
    # Each function has a role of its own from the template, not one shared by all.
    from moto.awslambda_simple.models import lambda_simple_backends as lambda_backends

    functions = lambda_backends[ACCOUNT][REGION]
    roles = {functions.get_function(i.function).role for i in world.r.runtime.invocations}
    assert len(roles) >= 5


def test_a_role_without_one_action_fails_its_step_with_access_denied(world: World) -> None:
    ((owner, policy, document),) = _roles_allowing(world, "ec2:CreateSnapshots")
    for statement in document["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        statement["Action"] = [a for a in actions if a != "ec2:CreateSnapshots"] or ["ec2:DescribeSnapshots"]
    world.r.client("iam").put_role_policy(RoleName=owner, PolicyName=policy, PolicyDocument=json.dumps(document))
    before = len(world.r.notifications())

    result = world.r.run_backup()
    assert result.status == "FAILED"
    assert "AccessDenied" in str(result.cause)
    assert [str(d) for d in world.r.iam.denied if d.action == "ec2:CreateSnapshots"], world.r.iam.denied
    assert all(owner in d.caller for d in world.r.iam.denied)
    assert not world.sim.locked
    new = world.r.notifications()[before:]
    assert len(new) == 1 and "FAILED" in new[0]["subject"]
