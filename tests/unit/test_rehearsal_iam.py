"""IAM in the rehearsal (rehearsal/iam.py): the template's policies reduced to what moto evaluates, and tests that fail
once moto evaluates resources and conditions itself, so that the reduction can be dropped then."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from rehearsal import iam
from rehearsal.fake_account import ACCOUNT, REGION, set_fake_credentials


@pytest.fixture
def enforced() -> Iterator[iam.Enforcement]:
    set_fake_credentials()
    with mock_aws(config={"core": {"mock_credentials": False}}):
        iam.create_harness_identities()
        enforcement = iam.Enforcement()
        with enforcement.enforced():
            yield enforcement


def _user_with(policy: dict[str, Any]) -> Any:
    """A client signing as a new IAM user whose only policy is this one."""
    admin = boto3.client("iam", region_name=REGION)
    admin.create_user(UserName="probe")
    admin.put_user_policy(UserName="probe", PolicyName="only", PolicyDocument=json.dumps(policy))
    key = admin.create_access_key(UserName="probe")["AccessKey"]
    return boto3.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], region_name=REGION
    )


def _statement(**fields: Any) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", **fields}]}


def test_the_reduction_keeps_actions_and_drops_resources_conditions_and_conditional_denies() -> None:
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Tagged",
                "Effect": "Allow",
                "Action": ["ec2:CreateSnapshots"],
                "Resource": "arn:aws:ec2:*::snapshot/*",
                "Condition": {"StringEquals": {"aws:RequestTag/tool": "x"}},
            },
            {"Effect": "Deny", "Action": "ec2:DeleteSnapshot", "Resource": "*", "Condition": {"Bool": {"a": "b"}}},
            {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"},
        ],
    }
    assert iam.for_moto(document)["Statement"] == [
        {"Effect": "Allow", "Action": ["ec2:CreateSnapshots"], "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"},
    ]


def test_an_allowed_action_passes_and_another_is_denied_and_recorded(enforced: iam.Enforcement) -> None:
    session = _user_with(_statement(Action="sqs:ListQueues", Resource="*"))
    session.client("sqs").list_queues()
    with pytest.raises(ClientError) as refused:
        session.client("sns").list_topics()
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "AuthorizationError")
    assert [d.action for d in enforced.denied] == ["sns:ListTopics"]
    assert enforced.denied[0].caller == f"arn:aws:iam::{ACCOUNT}:user/probe"


@pytest.mark.parametrize("operator", ["StringEquals", "ForAllValues:StringEquals", "Bool", "Null"])
def test_moto_still_ignores_conditions_it_has_no_context_for(enforced: iam.Enforcement, operator: str) -> None:
    """The stack's condition operators: moto applies the statement as if it had none (so the reduction only makes
    that explicit). Fails once moto evaluates them: then tag conditions need the tags' context in moto."""
    value: Any = ["no-such-key"] if operator.startswith("ForAllValues") else "no-such-value"
    key = "aws:TagKeys" if operator.startswith("ForAllValues") else "aws:ResourceTag/tool"
    session = _user_with(_statement(Action="sqs:ListQueues", Resource="*", Condition={operator: {key: value}}))
    session.client("sqs").list_queues()
    assert enforced.denied == []


def test_moto_still_matches_no_statement_scoped_to_an_arn(enforced: iam.Enforcement) -> None:
    """Why resources become "*": moto checks SQS calls against the resource "*". Fails once moto passes the ARN."""
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:*"
    session = _user_with(_statement(Action="sqs:ListQueues", Resource=arn))
    with pytest.raises(ClientError):
        session.client("sqs").list_queues()


def test_lambda_hands_credentials_only_to_a_role_that_trusts_it(enforced: iam.Enforcement) -> None:
    admin = boto3.client("iam", region_name=REGION)
    trusts_ec2 = _statement(Principal={"Service": "ec2.amazonaws.com"}, Action="sts:AssumeRole")
    trusts_lambda = _statement(Principal={"Service": iam.LAMBDA_SERVICE}, Action="sts:AssumeRole")
    ec2_role = admin.create_role(RoleName="ec2-role", AssumeRolePolicyDocument=json.dumps(trusts_ec2))["Role"]
    lambda_role = admin.create_role(RoleName="fn-role", AssumeRolePolicyDocument=json.dumps(trusts_lambda))["Role"]
    with pytest.raises(PermissionError, match=r"does not trust lambda\.amazonaws\.com"):
        iam.lambda_credentials(ec2_role["Arn"])
    first = iam.lambda_credentials(lambda_role["Arn"])
    assert first.access_key_id.startswith("ASIA") and first == iam.lambda_credentials(lambda_role["Arn"])
