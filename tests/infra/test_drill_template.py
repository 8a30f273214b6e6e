"""The restore drill in the synthesized template (its own synthesis, with cdk-nag on): the drill state machine (the
restore run with `startExecution.sync:2`, one finish step for every outcome), its schedule, its alarm, the least
privilege of its functions; and the synth-time refusals of a drill config that cannot work."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.models import metrics as names
from functions.models.config import ConfigError, parse_project_config
from functions.models.steps import DRILL, failed_label
from functions.strategies import RESTORING, STATUS_TAG, TOOL_TAG
from stacks import nag
from tests.infra.asl import happy_path
from tests.infra.conftest import ACCOUNT, PROD, REGION, resolve_join

DRILL_HOST = "i-0d0d0d0d0d0d0d0d0"
DB_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:bitbucket/prod/rds-master-AbCdEf"
ARCHIVED = {
    "name": "archived",
    "base_url": "https://bitbucket-archived.example.com",
    "credentials_secret": "bitbucket/archived/backup-user",
    "home": {
        "strategy": "rsync",
        "instance_id": "i-0a0a0a0a0a0a0a0a0",
        "home_path": "/var/atlassian/application-data/bitbucket",
        "staging_path": "/var/tmp/bitbucket-staging",
    },
    "database": {
        "strategy": "postgresql",
        "instance_id": "i-0a0a0a0a0a0a0a0a0",
        "user": "bitbucket",
        "dbname": "bitbucket",
        "password_secret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:bitbucket/archived/db-AbCdEf",
        "dump_path": "/var/tmp/bitbucket-dumps",
    },
    "drill": {"schedule": "cron(0 6 ? * SUN *)", "host_instance_id": DRILL_HOST},
}
CONFIG: dict[str, Any] = {
    "bundling": "none",
    "instances": [
        {
            **PROD,
            "network": None,
            "drill": {
                "schedule": "rate(7 days)",
                "host_instance_id": DRILL_HOST,
                "database": {"secret": DB_SECRET, "user": "bitbucket"},
            },
        },
        ARCHIVED,
        {**ARCHIVED, "name": "undrilled", "drill": None},
    ],
}
HAPPY_PATH = [
    "Start",
    DRILL.plan.state,
    DRILL.restore.state,
    DRILL.check.state,
    "Anything to check on the host?",
    DRILL.check_status.state,
    "Checks done?",
    "Checks passed",
    DRILL.finish.state,
    "Verified?",
    "Drill passed",
]


@pytest.fixture(scope="module")
def synthesized() -> tuple[dict[str, Any], dict[str, str]]:
    from rehearsal.synth import synthesized

    made = synthesized(CONFIG, checks=True)  # raises on any cdk-nag finding stacks/nag.py does not acknowledge
    return made.template, made.acknowledged


@pytest.fixture(scope="module")
def template(synthesized: tuple[dict[str, Any], dict[str, str]]) -> dict[str, Any]:
    return synthesized[0]


def test_cdk_nag_passes_and_the_drill_acknowledgment_is_used(
    synthesized: tuple[dict[str, Any], dict[str, str]],
) -> None:
    used = {nag.pattern_for(rule) for rule in synthesized[1]}
    executions = {pattern for pattern, _ in nag.ACKNOWLEDGMENTS if ":states:" in pattern}
    assert executions and used >= executions


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def drill_machine(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    (logical, resource), *rest = [
        (k, v) for k, v in of_type(template, "AWS::StepFunctions::StateMachine").items() if k.startswith("Drill")
    ]
    assert rest == []
    return logical, json.loads(resolve_join(resource["Properties"]["DefinitionString"], template))


def policy_of(template: dict[str, Any], function_prefix: str) -> list[dict[str, Any]]:
    """Every statement of the role of the one function whose logical id starts with `function_prefix`."""
    (function,) = [v for k, v in of_type(template, "AWS::Lambda::Function").items() if k.startswith(function_prefix)]
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    # Its own policies, and the managed ones attached to it (the configuration's, shared by a workflow's roles).
    policies = [*of_type(template, "AWS::IAM::Policy").values(), *of_type(template, "AWS::IAM::ManagedPolicy").values()]
    return [
        statement
        for policy in policies
        if {"Ref": role} in policy["Properties"].get("Roles", [])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def actions(statements: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        value = statement["Action"]
        found |= {value} if isinstance(value, str) else set(value)
    return found


def test_the_drill_restores_with_the_restore_state_machine_and_always_finishes(template: dict[str, Any]) -> None:
    _, definition = drill_machine(template)
    assert happy_path(definition) == HAPPY_PATH
    states = definition["States"]
    restore = states[DRILL.restore.state]
    assert restore["Resource"].endswith(":states:::states:startExecution.sync:2")
    assert restore["Parameters"]["Input.$"] == "$.plan.restore"
    restore_machines = [k for k in of_type(template, "AWS::StepFunctions::StateMachine") if k.startswith("Restore")]
    assert any(k in restore["Parameters"]["StateMachineArn"] for k in restore_machines)
    # Every task but the finish step is caught into "Failed: <step>", which goes to the same finish step.
    for name, state in states.items():
        if state["Type"] != "Task" or name == DRILL.finish.state:
            continue
        (catch,) = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"] and failed_label(catch["Next"])
        assert states[catch["Next"]]["Next"] == DRILL.finish.state
    assert states["Verified?"]["Default"] == "Drill failed" and states["Drill failed"]["Type"] == "Fail"
    assert states[DRILL.finish.state]["Catch"][0]["Next"] == "Teardown failed"


def test_one_drill_schedule_per_drilled_instance(template: dict[str, Any]) -> None:
    drill_logical, _ = drill_machine(template)
    schedules = [
        v["Properties"]
        for v in of_type(template, "AWS::Scheduler::Schedule").values()
        if drill_logical in json.dumps(v["Properties"]["Target"])
    ]
    found = {json.loads(s["Target"]["Input"])["instance"]: s for s in schedules}
    assert sorted(found) == ["archived", "prod"]
    assert found["prod"]["ScheduleExpression"] == "rate(7 days)"
    assert found["archived"]["ScheduleExpression"] == "cron(0 6 ? * SUN *)"


def test_a_drill_failed_alarm_per_drilled_instance(template: dict[str, Any]) -> None:
    alarms = [
        v["Properties"]
        for v in of_type(template, "AWS::CloudWatch::Alarm").values()
        if v["Properties"].get("MetricName") == names.DRILL_FAILED
    ]
    by_instance = {next(d["Value"] for d in a["Dimensions"] if d["Name"] == "instance"): a for a in alarms}
    assert sorted(by_instance) == ["archived", "prod"]
    for alarm in by_instance.values():
        assert alarm["Threshold"] == 1 and alarm["AlarmActions"] and alarm["Namespace"] == names.NAMESPACE


def test_drill_functions_have_least_privilege(template: dict[str, Any]) -> None:
    check, finish = policy_of(template, "DrillCheck"), policy_of(template, "DrillFinish")
    # Besides its own log group, X-Ray and its instances' configuration parameters (every function), only Run
    # Command on the drill host.
    every = {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords",
             "ssm:GetParameter", "ssm:GetParameters", "ssm:GetParameterHistory", "ssm:DescribeParameters"}  # fmt: skip
    assert actions(check) - every == {"ssm:SendCommand", "ssm:GetCommandInvocation"}
    send = [s for s in check if s["Action"] == "ssm:SendCommand"]
    targets = json.dumps(send)
    assert DRILL_HOST in targets and "i-0a0a0a0a0a0a0a0a0" not in targets  # only the drill host
    # The finish step tags backups but never deletes one; it deletes only restored resources still `restoring`.
    assert not actions(finish) & {"ec2:DeleteSnapshot", "rds:DeleteDBSnapshot", "s3:DeleteObject"}
    assert {"ec2:CreateTags", "rds:AddTagsToResource", "s3:PutObjectTagging"} <= actions(finish)
    for statement in finish:
        granted = actions([statement])
        if granted & {"rds:DeleteDBInstance", "ec2:DeleteVolume"}:
            condition = statement["Condition"]["StringEquals"]
            assert condition[f"aws:ResourceTag/{STATUS_TAG}"] == RESTORING
            assert f"aws:ResourceTag/{TOOL_TAG}" in condition
        if "s3:PutObjectTagging" in granted:
            # Only complete archives of this tool and deployment, keeping its marker (tests/infra/test_catalog_iam.py).
            condition = statement["Condition"]["StringEquals"]
            assert condition[f"s3:ExistingObjectTag/{TOOL_TAG}"] == "bitbucket-diy-backup-aws"
            assert condition[f"s3:RequestObjectTag/{TOOL_TAG}"] == "bitbucket-diy-backup-aws"
    plan = actions(policy_of(template, "DrillPlan"))
    assert "ssm:GetParameter" in plan or "ssm:GetParameters" in plan
    assert not any(a.startswith(("ssm:Send", "ec2:Delete", "rds:Delete", "s3:Put")) for a in plan)


@pytest.mark.parametrize(
    ("drill", "message"),
    [
        ({"schedule": "at(2026-12-01T00:00:00)"}, "instance 'archived': drill.schedule 'at(2026-12-01T00:00:00)'"),
        ({"schedule": "rate(7 days)"}, "drill.host_instance_id is required to check the rsync home"),
        (
            {
                "schedule": "rate(7 days)",
                "host_instance_id": DRILL_HOST,
                "database": {"secret": DB_SECRET, "user": "u"},
            },
            "drill.database applies to amazon-rds and amazon-aurora only",
        ),
        ({"schedule": "rate(7 days)", "host_instance_id": "i-1", "sample_repositories": -1}, "drill.host_instance_id"),
    ],
)
def test_a_drill_that_cannot_work_is_refused_at_synth(drill: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_project_config({"instances": [{**ARCHIVED, "drill": drill}]})
    assert message in str(refused.value)
    assert "archived" in str(refused.value)
