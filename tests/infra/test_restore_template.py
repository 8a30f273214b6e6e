"""Assertions on the restore state machine in the synthesized template (the session synthesis of conftest.py, made
with cdk-nag on): its shape, its one failure path, its bounded wait, and the least privilege of its functions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from functions.models.config import parse_project_config
from functions.models.steps import FAILED_PREFIX, RESTORE
from functions.strategies import RESTORE_TARGET_TAG, RESTORING, STATUS_TAG, TOOL_TAG, TOOL_VALUE
from stacks import nag
from stacks.backup_stack import network_groups
from tests.infra.asl import function_of, happy_path
from tests.infra.conftest import CONFIG, PROD, STAGING, placeholder, resolve_join

HAPPY_PATH = [
    "Start",
    RESTORE.validate.state,
    "Restore database?",
    RESTORE.restore_database.state,
    "Restore home?",
    RESTORE.restore_home.state,
    RESTORE.wait_restore.state,
    "Restored?",
    "Attach home?",
    RESTORE.attach_home.state,
    "Mount home?",
    RESTORE.mount_home.state,
    RESTORE.finish.state,
    "Restore complete",
]
STEP_OF_TASK = {
    RESTORE.validate.state: "validate",
    RESTORE.restore_database.state: "restore-database",
    RESTORE.restore_home.state: "restore-home",
    RESTORE.wait_restore.state: "wait-restore",
    RESTORE.attach_home.state: "attach-home",
    RESTORE.mount_home.state: "mount-home",
    RESTORE.finish.state: "finish",
}
HANDLER = RESTORE.handle_failure.state
BROAD_ERRORS = {"States.ALL", "States.TaskFailed"}


@dataclass(frozen=True)
class Machine:
    logical_id: str
    properties: dict[str, Any]
    definition: dict[str, Any]
    instances: list[str]


@pytest.fixture(scope="module")
def machines(template: dict[str, Any]) -> dict[str, Machine]:
    owners = {}
    for output in template["Outputs"].values():
        description = output.get("Description", "")
        if description.startswith("Restore state machine for: "):
            owners[output["Value"]["Ref"]] = description.removeprefix("Restore state machine for: ").split(", ")
    return {
        logical: Machine(
            logical_id=logical,
            properties=template["Resources"][logical]["Properties"],
            definition=json.loads(
                resolve_join(template["Resources"][logical]["Properties"]["DefinitionString"], template)
            ),
            instances=instances,
        )
        for logical, instances in owners.items()
    }


def _tasks(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in definition["States"].items() if s["Type"] == "Task"}


def _text(value: Any, template: dict[str, Any]) -> str:
    if isinstance(value, dict) and "Fn::Join" in value:
        return resolve_join(value, template)
    return placeholder(value, template) if isinstance(value, dict) else str(value)


def _role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Every Allow statement of one role (inline policies and AWS::IAM::Policy resources attached to it)."""
    found = []
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and {"Ref": role} in props.get(
            "Roles", []
        ):
            statements = props["PolicyDocument"]["Statement"]
            found += statements if isinstance(statements, list) else [statements]
    return [s for s in found if s["Effect"] == "Allow"]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _restore_statements(template: dict[str, Any], machines: dict[str, Machine]) -> list[dict[str, Any]]:
    """Every Allow statement of the restore functions' roles, with resources as plain strings."""
    functions = {function_of(t) for m in machines.values() for t in _tasks(m.definition).values()}
    found = []
    for fn in sorted(functions):
        role = template["Resources"][fn]["Properties"]["Role"]["Fn::GetAtt"][0]
        for statement in _role_statements(template, role):
            found.append(statement | {"Resource": [_text(r, template) for r in _list(statement["Resource"])], "fn": fn})
    return found


# --- the state machine ------------------------------------------------------------------------------------------------


def test_one_restore_state_machine_per_network_group(machines: dict[str, Machine]) -> None:
    groups = network_groups(parse_project_config(CONFIG).instances)
    assert sorted(sorted(m.instances) for m in machines.values()) == sorted(
        sorted(i.name for i in group) for group in groups
    )
    longest = max(i.timing.restore_timeout_seconds for i in parse_project_config(CONFIG).instances)
    for machine in machines.values():
        props = machine.properties
        assert props["StateMachineType"] == "STANDARD"
        assert props["LoggingConfiguration"]["Level"] == "ALL"
        assert props["TracingConfiguration"] == {"Enabled": True}
        assert machine.definition["TimeoutSeconds"] > longest, "the execution outlives the restore's own timeout"


def test_states_follow_the_designed_order(machines: dict[str, Machine]) -> None:
    for machine in machines.values():
        states = machine.definition["States"]
        assert happy_path(machine.definition) == HAPPY_PATH
        # Parts and steps not asked for are skipped by the plan's flags, set by the validate step.
        for choice, flag, skipped in (
            ("Restore database?", "$.plan.restore_database", "No database to restore"),
            ("Restore home?", "$.plan.restore_home", "No home to restore"),
            ("Attach home?", "$.plan.attach", "Hand over and notify"),
            ("Mount home?", "$.plan.mount", "Hand over and notify"),
        ):
            assert states[choice]["Choices"][0]["Variable"] == flag
            assert states[choice]["Default"] == skipped
        assert states["No database to restore"]["Next"] == "Restore home?"
        # Without Mesh nodes, no Map state for them (tests/infra/test_mesh_template.py has one).
        assert states["No home to restore"]["Next"] == RESTORE.wait_restore.state
        assert "Restore Mesh nodes" not in states
        assert states["Restore complete"] == {"Type": "Succeed", "OutputPath": "$.summary"}


def test_the_wait_is_a_bounded_loop_timed_by_the_instance_config(machines: dict[str, Machine]) -> None:
    for machine in machines.values():
        states = machine.definition["States"]
        restored = states["Restored?"]
        assert restored["Choices"][0] == {"Variable": "$.status.ready", "BooleanEquals": True, "Next": "Attach home?"}
        wait = states[restored["Default"]]
        assert wait == {
            "Type": "Wait",
            "SecondsPath": "$.plan.flow.restore_poll_interval_seconds",
            "Next": RESTORE.wait_restore.state,
        }


def test_every_task_catches_into_the_one_failure_path(machines: dict[str, Machine]) -> None:
    for machine in machines.values():
        states = machine.definition["States"]
        for name, task in _tasks(machine.definition).items():
            if name == HANDLER:
                continue
            step = STEP_OF_TASK[name]
            assert task["Catch"] == [
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": FAILED_PREFIX + step}
            ]
            note = states[FAILED_PREFIX + step]
            assert note["Parameters"]["state.$"] == "$", "the failure path sees what was created so far"
            assert note["Parameters"]["failure"]["step"] == step
            assert note["Next"] == HANDLER
        handler = states[HANDLER]
        assert handler["Next"] == "Restore failed"
        assert states["Restore failed"] == {
            "Type": "Fail",
            "ErrorPath": "$.outcome.error",
            "CausePath": "$.outcome.cause",
        }
        assert handler["Catch"][0]["ErrorEquals"] == ["States.ALL"]
        assert states[handler["Catch"][0]["Next"]]["Type"] == "Fail"
        assert set(STEP_OF_TASK) | {HANDLER} == set(_tasks(machine.definition))


def test_retries_are_narrow(machines: dict[str, Machine]) -> None:
    """A refusal or a failed restore is not retried; only transient Lambda errors, rate limits, and (for the
    mount) a target instance that is still booting."""
    for machine in machines.values():
        tasks = _tasks(machine.definition)
        for name, task in tasks.items():
            retried = {e for r in task.get("Retry", []) for e in r["ErrorEquals"]}
            assert not retried & BROAD_ERRORS, name
            assert not retried & {"RestoreRefused", "RestoreFailed", "RestoreTimeout", "InvalidInput"}, name
        for name in (RESTORE.restore_database.state, "Create home volumes"):
            assert any("AwsRateLimited" in r["ErrorEquals"] for r in tasks[name]["Retry"])
        (booting,) = [r for r in tasks[RESTORE.mount_home.state]["Retry"] if r["ErrorEquals"] == ["TargetNotReady"]]
        total = sum(booting["IntervalSeconds"] * booting["BackoffRate"] ** i for i in range(booting["MaxAttempts"]))
        assert 120 <= total <= 900, f"a fresh instance's SSM agent gets {total:.0f} s to come online"


def test_statelint_accepts_each_restore_definition(machines: dict[str, Machine], tmp_path: Path) -> None:
    assert machines
    for logical, machine in machines.items():
        path = tmp_path / f"{logical}.asl.json"
        path.write_text(json.dumps(machine.definition, indent=1))
        statelint = Path(sys.executable).parent / "statelint"
        result = subprocess.run(
            [str(statelint), "--ignore=FLOAT", str(path)], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- the functions and their permissions ------------------------------------------------------------------------------


def test_restore_functions_sit_in_their_groups_network_and_have_their_own_roles(
    template: dict[str, Any], machines: dict[str, Machine]
) -> None:
    resources = template["Resources"]
    by_name: dict[str, dict[str, Any]] = {str(i["name"]): i for i in (PROD, STAGING)}
    roles = []
    for machine in machines.values():
        functions = {function_of(t) for t in _tasks(machine.definition).values()}
        assert len(functions) == 8
        network = by_name[machine.instances[0]].get("network")
        for fn in functions:
            props = resources[fn]["Properties"]
            assert props["Handler"] in {s.handler for s in RESTORE.functions}, fn
            expected = (
                {"SubnetIds": network["subnet_ids"], "SecurityGroupIds": network["security_group_ids"]}
                if network
                else None
            )
            assert props.get("VpcConfig") == expected, fn
            roles.append(props["Role"]["Fn::GetAtt"][0])
    assert len(roles) == len(set(roles)), "one role per function"


def test_restore_functions_read_no_secret_and_no_run_table(
    template: dict[str, Any], machines: dict[str, Machine]
) -> None:
    for statement in _restore_statements(template, machines):
        actions = " ".join(_list(statement["Action"]))
        assert "secretsmanager" not in actions and "dynamodb" not in actions, statement["fn"]


def _conditions(statement: dict[str, Any]) -> dict[str, Any]:
    return dict(statement.get("Condition", {}).get("StringEquals", {}))


def test_creating_requires_the_tools_tag_in_the_request(template: dict[str, Any], machines: dict[str, Machine]) -> None:
    creates = {"rds:RestoreDBInstanceFromDBSnapshot", "rds:RestoreDBClusterFromSnapshot", "rds:CreateDBInstance"}
    seen = set()
    for statement in _restore_statements(template, machines):
        actions = set(_list(statement["Action"]))
        volume_create = "ec2:CreateVolume" in actions and any(":volume/" in r for r in statement["Resource"])
        for action in (actions & creates) | ({"ec2:CreateVolume"} if volume_create else set()):
            assert _conditions(statement).get(f"aws:RequestTag/{TOOL_TAG}") == TOOL_VALUE, (statement["fn"], action)
            seen.add(action)
        if "ec2:CreateVolume" in actions and any(":snapshot/" in r for r in statement["Resource"]):
            assert _conditions(statement)[f"aws:ResourceTag/{TOOL_TAG}"] == TOOL_VALUE, "only from the tool's snapshots"
    assert seen == creates | {"ec2:CreateVolume"}


def test_deleting_and_detaching_require_the_tool_tag_and_the_restoring_status(
    template: dict[str, Any], machines: dict[str, Machine]
) -> None:
    """The failure path may remove only what a failed restore made: a `restored` database or volume (handed over)
    and anything without the tool's tag cannot be deleted by these roles."""
    removals = {"ec2:DeleteVolume", "rds:DeleteDBInstance", "rds:DeleteDBCluster"}
    seen: dict[str, set[str]] = {}
    for statement in _restore_statements(template, machines):
        actions = set(_list(statement["Action"]))
        on_volumes = all(":volume/" in r for r in statement["Resource"])
        guarded = (actions & removals) | (
            {"ec2:DetachVolume"} if "ec2:DetachVolume" in actions and on_volumes else set()
        )
        for action in guarded:
            condition = _conditions(statement)
            assert condition[f"aws:ResourceTag/{TOOL_TAG}"] == TOOL_VALUE, (statement["fn"], action)
            assert condition[f"aws:ResourceTag/{STATUS_TAG}"] == RESTORING, (statement["fn"], action)
            seen.setdefault(action, set()).add(statement["fn"])
    assert set(seen) == removals | {"ec2:DetachVolume"}
    assert all(all("RestoreFailure" in fn for fn in fns) for fns in seen.values()), "only the failure path removes"


def test_instances_are_touched_only_when_tagged_as_restore_targets(
    template: dict[str, Any], machines: dict[str, Machine]
) -> None:
    touched = set()
    for statement in _restore_statements(template, machines):
        if not any(":instance/" in r for r in statement["Resource"]):
            continue
        keys = _conditions(statement)
        values = [v for k, v in keys.items() if k.endswith(f"/{RESTORE_TARGET_TAG}")]
        assert values, (statement["fn"], statement["Action"])
        assert all(set(_list(v)) <= {"prod", "staging"} for v in values)
        touched |= set(_list(statement["Action"]))
    assert {"ec2:AttachVolume", "ec2:StartInstances", "ec2:StopInstances", "ssm:SendCommand"} <= touched


@pytest.mark.parametrize(
    "resource",
    [
        "rds:{r}:{a}:db:*",
        "rds:{r}:{a}:cluster:*",
        "rds:{r}:{a}:subgrp:*",
        "ec2:{r}:{a}:instance/*",
        "ec2:{r}:{a}:volume/vol-*",
        "ec2:{r}::snapshot/snap-*",
        "kms:{r}:{a}:key/*",
    ],
)
def test_restore_acknowledgments_explain_the_restore(resource: str) -> None:
    for region, account in (("eu-west-1", "123456789012"), ("<AWS::Region>", "<AWS::AccountId>")):
        rule = f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:{resource.format(r=region, a=account)}]"
        reason = nag.reason_for(rule)
        assert reason and re.search(r"restore", reason, re.IGNORECASE), rule
