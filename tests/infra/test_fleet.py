"""Fleet scale: one deployment for 50 instances stays within CloudFormation's limits, and instances that share a
schedule do not all start (and call the snapshot APIs) in the same minute.

One synthesis (with cdk-nag) for the module: 48 instances in the main VPC sharing one cron expression and one on-call
address, two in a second network; a configuration with too many networks is refused before it reaches CloudFormation.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from typing import Any

import pytest

from functions.models.config import ConfigError, parse_project_config
from functions.models.schedule import plain_minute
from stacks.constructs.schedules import MAX_STARTS_PER_MINUTE, plan
from tests.infra.conftest import PROD, resolve_join

FLEET = 50
SHARED_CRON = "cron(30 2 * * ? *)"
# CloudFormation quotas: https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-limits.html
MAX_RESOURCES, MAX_TEMPLATE_BYTES, MAX_PARAMETERS, MAX_OUTPUTS = 500, 1_000_000, 200, 200
MAX_ROLE_POLICY_CHARS = 10_240  # IAM: inline policies of one role, whitespace not counted
# Lambda: a function's environment variables, together, at most 4 KB (measured here as JSON with spaces, the larger
# of the ways to count them); CreateFunction refuses more, and moto does not.
MAX_ENVIRONMENT_BYTES = 4096


def fleet_instance(n: int, network: int = 0) -> dict[str, Any]:
    raw = copy.deepcopy(PROD)
    raw.update(
        name=f"bitbucket-{n:02d}",
        credentials_secret=f"bitbucket/{n:02d}/backup-user",
        schedule=SHARED_CRON,
        schedule_timezone="UTC",
        notification_emails=["oncall@example.com"],  # one address for the whole fleet
    )
    raw["home"]["instance_id"] = f"i-{n:017x}"
    raw["database"]["instance_id"] = f"bitbucket-{n:02d}"
    raw["network"] = {"subnet_ids": [f"subnet-{network:017x}"], "security_group_ids": ["sg-0123456789abcdef0"]}
    return raw


def fleet_config(networks: list[int]) -> dict[str, Any]:
    return {"bundling": "none", "instances": [fleet_instance(n, net) for n, net in enumerate(networks)]}


CONFIG = fleet_config([0] * 48 + [1] * 2)


@pytest.fixture(scope="module")
def fleet() -> dict[str, Any]:
    from rehearsal.synth import synthesized

    # cdk-nag runs on synth: a finding this size of fleet brings and stacks/nag.py does not explain fails here.
    return synthesized(CONFIG, checks=True).template


def _resolved_size(document: Any, template: dict[str, Any]) -> int:
    """A policy document's size as IAM counts it: intrinsic functions resolved (placeholder ARNs), no whitespace."""

    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("Ref", "Fn::GetAtt", "Fn::Join"):
            key = next(iter(value))
            return resolve_join(value if key == "Fn::Join" else {"Fn::Join": ["", [value]]}, template)
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    return len(json.dumps(resolve(document), separators=(",", ":")))


@pytest.mark.slow
def test_fifty_instances_fit_in_one_stack(fleet: dict[str, Any]) -> None:
    assert len(fleet["Resources"]) < MAX_RESOURCES
    assert len(json.dumps(fleet, separators=(",", ":")).encode()) < MAX_TEMPLATE_BYTES
    assert len(fleet.get("Parameters", {})) <= MAX_PARAMETERS
    assert len(fleet.get("Outputs", {})) <= MAX_OUTPUTS
    kinds = Counter(r["Type"] for r in fleet["Resources"].values())
    assert kinds["AWS::SSM::Parameter"] == FLEET and kinds["AWS::Scheduler::Schedule"] == FLEET + 1  # + the check
    # Two networks: two backup and two restore state machines, not fifty.
    assert kinds["AWS::StepFunctions::StateMachine"] == 4


@pytest.mark.slow
def test_every_role_policy_stays_within_iam_limits(fleet: dict[str, Any]) -> None:
    per_role: Counter[str] = Counter()
    for resource in fleet["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy":
            size = _resolved_size(resource["Properties"]["PolicyDocument"], fleet)
            for role in resource["Properties"].get("Roles", []):
                per_role[role["Ref"]] += size
    assert per_role and max(per_role.values()) < MAX_ROLE_POLICY_CHARS, per_role.most_common(3)


@pytest.mark.slow
def test_no_functions_environment_grows_with_the_fleet_past_lambdas_limit(fleet: dict[str, Any]) -> None:
    sizes = {}
    for logical, resource in fleet["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function":
            variables = resource["Properties"].get("Environment", {}).get("Variables", {})
            resolved = {name: resolve_join(value, fleet) for name, value in variables.items()}
            sizes[logical] = len(json.dumps(resolved).encode())
    assert sizes and max(sizes.values()) < MAX_ENVIRONMENT_BYTES // 2, max(sizes.items(), key=lambda i: i[1])


@pytest.mark.slow
def test_one_subscription_for_an_address_shared_by_the_fleet(fleet: dict[str, Any]) -> None:
    subscriptions = [r["Properties"] for r in fleet["Resources"].values() if r["Type"] == "AWS::SNS::Subscription"]
    assert len(subscriptions) == 1
    assert len(subscriptions[0]["FilterPolicy"]["instance"]) == FLEET


@pytest.mark.slow
def test_shared_schedules_are_staggered(fleet: dict[str, Any]) -> None:
    schedules = {
        json.loads(r["Properties"]["Target"]["Input"])["instance"]: r["Properties"]
        for r in fleet["Resources"].values()
        if r["Type"] == "AWS::Scheduler::Schedule" and "Input" in r["Properties"]["Target"]
    }
    assert len(schedules) == FLEET
    starts = Counter(p["ScheduleExpression"] for p in schedules.values())
    # Only the minute differs: the same hour, days and time zone as configured.
    assert {re.sub(r"^cron\(\d+ ", "cron(M ", e) for e in starts} == {"cron(M 2 * * ? *)"}
    assert max(starts.values()) <= MAX_STARTS_PER_MINUTE
    assert len(starts) == FLEET // MAX_STARTS_PER_MINUTE
    assert all(p["FlexibleTimeWindow"] == {"Mode": "OFF"} for p in schedules.values())
    # The first instances keep the configured minute; the others follow, wrapping within the hour.
    assert schedules["bitbucket-00"]["ScheduleExpression"] == SHARED_CRON


@pytest.mark.slow
def test_a_staleness_alarm_per_instance(fleet: dict[str, Any]) -> None:
    alarms = [r["Properties"] for r in fleet["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    stale = [a for a in alarms if a.get("MetricName") == "HoursSinceLastCompleteBackup"]
    assert len(stale) == FLEET
    # The dashboard does not grow with the fleet: SEARCH expressions, not one widget per instance.
    (dashboard,) = [r for r in fleet["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    body = resolve_join(dashboard["Properties"]["DashboardBody"], fleet)
    widgets = json.loads(body)["widgets"]
    assert len(body) < 100_000
    assert sum(w["type"] == "metric" for w in widgets) == 7 + 4  # per-instance SEARCH graphs + one per state machine


def test_explicit_offsets_and_other_expressions() -> None:
    config = parse_project_config(
        {
            "instances": [
                fleet_instance(0) | {"schedule_offset_minutes": 0},
                fleet_instance(1) | {"schedule_offset_minutes": 0},
                fleet_instance(2),  # minute 0 is full: the next free one
                fleet_instance(3) | {"schedule": "rate(1 day)"},
                fleet_instance(4) | {"schedule": "rate(1 day)"},
                fleet_instance(5) | {"schedule": "cron(0/30 * * * ? *)"},
                fleet_instance(6) | {"schedule": "cron(45 23 ? * SUN *)"},
            ]
        }
    )
    slots = plan(config.instances)
    assert [plain_minute(slots[f"bitbucket-0{n}"].expression) for n in range(3)] == [30, 30, 31]
    assert slots["bitbucket-03"].flexible_minutes == slots["bitbucket-04"].flexible_minutes == 15
    assert slots["bitbucket-05"].expression == "cron(0/30 * * * ? *)" and slots["bitbucket-05"].flexible_minutes == 0
    assert slots["bitbucket-06"].expression == "cron(45 23 ? * SUN *)"


@pytest.mark.slow
def test_too_many_networks_are_refused_at_synth() -> None:
    from stacks.app_builder import build_app

    with pytest.raises(ConfigError, match=r"more than the 500 one stack may have \(50 instances in 5 networks"):
        build_app(fleet_config([n % 5 for n in range(FLEET)]), checks=False)
