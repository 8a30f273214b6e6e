"""Infrastructure tests share one synthesis (it costs seconds): a two-instance config that exercises both network
groups, every storage strategy the stack has permissions for, schedules and per-instance e-mail subscriptions.

The synthesis runs with cdk-nag on (checks=True), so reaching any test at all means the AwsSolutions checks passed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pytest

from rehearsal.cfn_resolver import Resolver

ACCOUNT = "123456789012"
REGION = "eu-west-1"
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::URLSuffix": "amazonaws.com"}

PROD = {
    "name": "prod",
    "base_url": "https://bitbucket.example.com",
    "credentials_secret": "bitbucket/prod/backup-user",
    "network": {"subnet_ids": ["subnet-0123456789abcdef0"], "security_group_ids": ["sg-0123456789abcdef0"]},
    "home": {
        "strategy": "amazon-ebs",
        "instance_id": "i-0123456789abcdef0",
        "volumes": ["/dev/xvdf"],
        "mount_points": ["/var/atlassian/application-data/bitbucket"],
        "freeze": True,
    },
    "database": {"strategy": "amazon-rds", "instance_id": "bitbucket-prod"},
    "schedule": "cron(30 2 * * ? *)",
    "schedule_timezone": "Europe/Dublin",
    "keep_backups": 7,
    "notification_emails": ["prod-oncall@example.com"],
}
STAGING = {
    "name": "staging",
    "base_url": "https://bitbucket-staging.example.com",
    "credentials_secret": "bitbucket/staging/backup-user",
    "home": {"strategy": "amazon-ebs", "instance_id": "i-0fedcba9876543210", "volumes": ["vol-0123456789abcdef0"]},
    "database": {"strategy": "amazon-aurora", "cluster_id": "bitbucket-staging"},
    "keep_backups": 3,
}
CONFIG: dict[str, Any] = {
    "bundling": "none",
    "notification_emails": ["bitbucket-admins@example.com"],
    "instances": [PROD, STAGING],
}


@dataclass(frozen=True)
class StateMachine:
    logical_id: str
    properties: dict[str, Any]
    definition: dict[str, Any]  # the ASL, with every Ref/GetAtt replaced by a placeholder ARN
    definition_json: str
    instances: list[str]  # the instances this state machine backs up (from the stack's outputs)


@dataclass(frozen=True)
class Synth:
    config: dict[str, Any]
    template: dict[str, Any]
    acknowledged: dict[str, str]  # the cdk-nag findings stacks/nag.py acknowledged on this stack
    violations: list[Any]  # cdk-nag's report: none, or the synthesis would have failed
    checks: bool


def placeholder(value: Any, template: dict[str, Any]) -> str:
    """A Ref or Fn::GetAtt as a plausible ARN: Lambda functions become function ARNs, anything else a fake ARN."""
    ((kind, arg),) = value.items()
    if kind == "Ref" and arg in PSEUDO:
        return PSEUDO[arg]
    logical = arg if kind == "Ref" else (arg[0] if isinstance(arg, list) else arg.split(".", 1)[0])
    resource_type = template["Resources"].get(logical, {}).get("Type", "")
    if resource_type == "AWS::Lambda::Function":
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical}"
    return f"arn:aws:placeholder:{REGION}:{ACCOUNT}:{logical}"


def resolve_join(value: Any, template: dict[str, Any]) -> str:
    """A string or an Fn::Join of strings, Refs and GetAtts, as one plain string (the rehearsal's resolver, with
    no resource created: every Ref and GetAtt is a placeholder)."""
    if isinstance(value, str):
        return value
    return str(Resolver(PSEUDO, lambda intrinsic: placeholder(intrinsic, template))(value))


def state_machines_of(template: dict[str, Any]) -> dict[str, StateMachine]:
    owners: dict[str, list[str]] = {}
    for output in template.get("Outputs", {}).values():
        ref = output.get("Value", {}).get("Ref") if isinstance(output.get("Value"), dict) else None
        description = output.get("Description", "")
        if ref and description.startswith("Backup state machine for: "):
            owners[ref] = description.removeprefix("Backup state machine for: ").split(", ")
    machines = {}
    for logical, resource in template["Resources"].items():
        if resource["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        if logical not in owners:  # the restore state machines: tests/infra/test_restore_template.py
            continue
        text = resolve_join(resource["Properties"]["DefinitionString"], template)
        machines[logical] = StateMachine(
            logical_id=logical,
            properties=resource["Properties"],
            definition=json.loads(text),
            definition_json=text,
            instances=owners.get(logical, []),
        )
    return machines


@pytest.fixture(scope="session")
def synth() -> Synth:
    """One synthesis for every worker of the run (rehearsal/synth.py caches it on disk, keyed by what shapes it)."""
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from rehearsal.synth import synthesized

    made = synthesized(CONFIG, checks=True)  # raises if a cdk-nag finding is not acknowledged in stacks/nag.py
    return Synth(
        config=CONFIG, template=made.template, acknowledged=made.acknowledged, violations=made.violations, checks=True
    )


@pytest.fixture(scope="session")
def template(synth: Synth) -> dict[str, Any]:
    return synth.template


@pytest.fixture(scope="session")
def assertions(template: dict[str, Any]) -> Any:
    from aws_cdk.assertions import Template

    return Template.from_json(template)


@pytest.fixture(scope="session")
def state_machines(template: dict[str, Any]) -> dict[str, StateMachine]:
    return state_machines_of(template)


@pytest.fixture(scope="session")
def resources(template: dict[str, Any]) -> Any:
    """resources(type) -> {logical id: resource} of that CloudFormation type."""

    def of_type(resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}

    return of_type
