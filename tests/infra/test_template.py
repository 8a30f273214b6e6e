"""Assertions on the synthesized template: the backup state machine's shape and error handling, and the safety
properties of the resources around it (encryption, least privilege, no secrets in plain sight)."""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

from aws_cdk.assertions import Match

from functions.models.config import InstanceConfig, parse_project_config
from functions.models.events import FlowTiming
from functions.models.steps import BACKUP, OPERATIONS, OPERATOR_UNLOCK_FOR
from functions.strategies import TOOL_TAG, TOOL_VALUE
from stacks.app_builder import STACK_NAME
from stacks.backup_stack import network_groups
from tests.infra.asl import function_of, happy_path, path_where
from tests.infra.conftest import CONFIG, PROD, STAGING, StateMachine

HAPPY_PATH = [
    "Start",
    BACKUP.validate.state,
    BACKUP.prepare.state,
    "Host preparation done?",
    "Zero downtime?",
    BACKUP.warm_up.state,
    BACKUP.lock.state,
    BACKUP.start_backup.state,
    BACKUP.wait_drained.state,
    "Drained?",
    BACKUP.copy.state,
    "Locked for the copy?",
    BACKUP.unlock.state,
    BACKUP.wait_snapshots.state,
    "Snapshots complete?",
    BACKUP.archive.state,
    "Archive done?",
    BACKUP.copy_regions.state,
    "Copies complete?",
    BACKUP.finalize.state,
    "Backup complete",
]
FAILURE_HANDLER = BACKUP.handle_failure.state
DELETE_ACTIONS = ["ec2:DeleteSnapshot", "rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"]
# Error names that would make Step Functions re-run a task that failed with BitbucketUnavailable.
MATCHES_BITBUCKET_UNAVAILABLE = {"BitbucketUnavailable", "States.ALL", "States.TaskFailed"}


def _by_instance(state_machines: dict[str, StateMachine]) -> dict[str, StateMachine]:
    return {name: sm for sm in state_machines.values() for name in sm.instances}


def _transitions(state: dict[str, Any]) -> list[str]:
    """Where a state goes when it does not fail (Next, Choice rules and Default), not its Catch targets."""
    targets = [state["Next"]] if "Next" in state else []
    targets += [choice["Next"] for choice in state.get("Choices", [])]
    targets += [state["Default"]] if "Default" in state else []
    return targets


def _reachable(states: dict[str, Any], start: str) -> list[str]:
    seen: list[str] = []
    todo = [start]
    while todo:
        name = todo.pop(0)
        if name not in seen:
            seen.append(name)
            todo += _transitions(states[name])
    return seen


def _lambda_tasks(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every Task state, including those inside Parallel branches."""
    found = {}
    for name, state in definition["States"].items():
        if state["Type"] == "Task":
            found[name] = state
        for branch in [*state.get("Branches", []), *([state["ItemProcessor"]] if "ItemProcessor" in state else [])]:
            found |= _lambda_tasks(branch)
    return found


def done_name(states: dict[str, Any]) -> str:
    (name,) = [n for n, st in states.items() if n.endswith("copy done?")]
    return name


def _retried_errors(task: dict[str, Any]) -> set[str]:
    return {error for retry in task.get("Retry", []) for error in retry["ErrorEquals"]}


# --- the state machines ------------------------------------------------------------------------------------------


def test_one_standard_state_machine_per_network_group(assertions: Any, state_machines: dict[str, StateMachine]) -> None:
    groups = network_groups(parse_project_config(CONFIG).instances)
    assert len(groups) == 2
    # A backup and a restore state machine per group (the restore one: test_restore_template.py).
    assertions.resource_count_is("AWS::StepFunctions::StateMachine", 2 * len(groups))
    assertions.all_resources_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "StateMachineType": "STANDARD",
            "LoggingConfiguration": Match.object_like({"Level": "ALL"}),
            "TracingConfiguration": {"Enabled": True},
        },
    )
    # Each group's instances are backed up by exactly one state machine (named in the stack's outputs).
    assert sorted(sorted(sm.instances) for sm in state_machines.values()) == sorted(
        sorted(i.name for i in group) for group in groups
    )
    for sm in state_machines.values():
        log_group = sm.properties["LoggingConfiguration"]["Destinations"][0]["CloudWatchLogsLogGroup"]
        assert "Fn::GetAtt" in log_group["LogGroupArn"], "logs go to a log group of this stack"
        assert sm.definition.get("TimeoutSeconds", 0) > 0, "an execution must not run forever"


def test_states_follow_the_designed_order(state_machines: dict[str, StateMachine]) -> None:
    for sm in state_machines.values():
        states = sm.definition["States"]
        assert happy_path(sm.definition) == HAPPY_PATH, sm.logical_id

        drained = states["Drained?"]
        assert drained["Type"] == "Choice"
        assert drained["Choices"] == [{"Variable": "$.drain.drained", "BooleanEquals": True, "Next": BACKUP.copy.state}]
        assert drained["Default"] == "Wait for drain"
        assert states["Wait for drain"] == {
            "Type": "Wait",
            "SecondsPath": "$.run.flow.timing.poll_interval_seconds",
            "Next": BACKUP.wait_drained.state,
        }

        complete = states["Snapshots complete?"]
        assert complete["Choices"][0]["Variable"] == "$.snapshots.complete"
        assert complete["Default"] == "Wait for snapshots"
        assert states["Wait for snapshots"]["SecondsPath"] == "$.run.flow.timing.snapshot_poll_interval_seconds"
        assert states["Wait for snapshots"]["Next"] == BACKUP.wait_snapshots.state

        # The paths the Wait states read exist in what the validate step puts into $.run.flow.
        for wait in ("Wait for drain", "Wait for snapshots"):
            assert states[wait]["SecondsPath"].rsplit(".", 1)[-1] in FlowTiming.model_fields

        parallel = states[BACKUP.copy.state]
        assert parallel["Type"] == "Parallel"
        # Without Mesh nodes, no third branch (tests/infra/test_mesh_template.py has one).
        assert [b["StartAt"] for b in parallel["Branches"]] == ["Home configured?", "Database configured?"]
        assert parallel["ResultSelector"] == {"home.$": "$[0].part_result", "database.$": "$[1].part_result"}
        for branch, part in zip(parallel["Branches"], ("home", "database"), strict=True):
            inner = branch["States"]
            choice = inner[branch["StartAt"]]
            assert choice["Choices"][0]["Variable"] == f"$.run.flow.{part}.strategy"
            assert inner[choice["Choices"][0]["Next"]]["Type"] == "Pass", "an unconfigured part is skipped"
            assert choice["Default"] == f"Copy {part}"
            # A host copy (rsync, pg_dump) is waited for in its own function, called again (no Wait state) until
            # done; a snapshot strategy answers done at once.
            done = inner[inner[f"Copy {part}"]["Next"]]
            assert done["Type"] == "Choice" and done["Choices"][0]["Variable"] == "$.part_result.done"
            configured = {f"$.run.flow.{part}.strategy": "configured"}
            locked = path_where(branch, {**configured, "$.run.flow.zero_downtime": False})
            assert locked[-1] == f"Report {part} progress", locked
            again = inner[done["Default"]]
            assert again["Type"] == "Task" and function_of(again) == function_of(inner[f"Copy {part}"])
            assert again["Parameters"]["progress.$"] == "$.part_result" and again["Next"] == done_name(inner)
            assert not [n for n, st in inner.items() if st["Type"] == "Wait"], "no Wait state under the lock"
            assert inner[f"Report {part} progress"].get("End") is True
        # Unlock (which reports progress 100 first) comes only after both copies.
        assert states[BACKUP.copy.state]["Next"] == "Locked for the copy?"
        assert [c["Next"] for c in states["Locked for the copy?"]["Choices"]] == [BACKUP.unlock.state]
        assert BACKUP.progress.state not in states, "no separate progress-100 invocation under the lock"


ZERO_DOWNTIME = {"$.run.flow.zero_downtime": True}
# What a zero-downtime run must never enter: everything that needs (or takes, or releases) the lock.
NEEDS_THE_LOCK = {
    BACKUP.warm_up.state,
    BACKUP.lock.state,
    BACKUP.start_backup.state,
    BACKUP.wait_drained.state,
    "Wait for drain",
    BACKUP.unlock.state,
}


def test_zero_downtime_goes_from_validate_to_the_copy_without_the_lock(
    state_machines: dict[str, StateMachine],
) -> None:
    for sm in state_machines.values():
        states = sm.definition["States"]
        path = path_where(sm.definition, ZERO_DOWNTIME)
        # The locked path without what needs the lock, and a Pass standing in for the Unlock.
        expected = [name for name in HAPPY_PATH if name not in {*NEEDS_THE_LOCK, "Drained?"}]
        expected.insert(expected.index("Locked for the copy?") + 1, "Nothing to unlock")
        assert path == expected, path
        assert expected[expected.index("Zero downtime?") + 1] == BACKUP.copy.state
        assert not NEEDS_THE_LOCK & set(path)
        # Every decision is taken on the configuration validate put into $.run, never on a step's result.
        for choice in ("Zero downtime?", "Locked for the copy?"):
            assert [c["Variable"] for c in states[choice]["Choices"]] == ["$.run.flow.zero_downtime"]
        # finalize reads $.unlocked: the skip fills it with a lock window of zero.
        assert states["Nothing to unlock"]["ResultPath"] == "$.unlocked"
        assert states["Nothing to unlock"]["Result"] == {"lock_window_s": 0, "drain_s": 0}
        # Inside the copy, no progress report (it needs the lock's token): each branch ends in a Pass.
        for branch, part in zip(states[BACKUP.copy.state]["Branches"], ("home", "database"), strict=True):
            inner = path_where(branch, {**ZERO_DOWNTIME, f"$.run.flow.{part}.strategy": "configured"})
            assert f"Copy {part}" in inner and f"Report {part} progress" not in inner, inner
            assert branch["States"][inner[-1]] == {"Type": "Pass", "End": True}, inner
        # The path with the lock is still there for everybody else, and unchanged.
        assert path_where(sm.definition, {"$.run.flow.zero_downtime": False}) == HAPPY_PATH


def test_every_task_after_validate_catches_into_the_failure_path(state_machines: dict[str, StateMachine]) -> None:
    for sm in state_machines.values():
        states = sm.definition["States"]
        after_validate = _reachable(states, states[BACKUP.validate.state]["Next"])
        guarded = [n for n in after_validate if states[n]["Type"] in ("Task", "Parallel")]
        assert set(guarded) >= {
            BACKUP.lock.state,
            BACKUP.start_backup.state,
            BACKUP.wait_drained.state,
            BACKUP.copy.state,
            BACKUP.unlock.state,
            BACKUP.wait_snapshots.state,
            BACKUP.copy_regions.state,
            BACKUP.finalize.state,
        }
        for name in guarded:
            catches = states[name].get("Catch", [])
            assert catches, f"{sm.logical_id}: '{name}' has no Catch"
            catch = catches[-1]
            assert catch["ErrorEquals"] == ["States.ALL"], f"'{name}' does not catch States.ALL last"
            assert catch["ResultPath"] == "$.failure", f"'{name}' loses its input on failure"
            note = states[catch["Next"]]
            assert note["Type"] == "Pass", f"'{name}' catches into {catch['Next']}, not a Pass"
            assert note["Next"] == FAILURE_HANDLER, f"'{name}' does not lead to '{FAILURE_HANDLER}'"
            assert note["Parameters"]["run.$"] == "$.run", f"'{name}': the failure path needs the run context"
            assert "step" in note["Parameters"]["failure"]
        # Inside the Parallel nothing catches: an error in a branch fails the Parallel, whose Catch handles it.
        for branch in states[BACKUP.copy.state]["Branches"]:
            for name, state in branch["States"].items():
                assert "Catch" not in state, f"'{name}' would hide a failed copy from the Parallel's Catch"

        # Before the lock: a concurrent run is a skip, anything else goes to the pre-lock failure handler.
        validate = states[BACKUP.validate.state]
        assert [c["ErrorEquals"] for c in validate["Catch"]] == [["BackupInProgress"], ["States.ALL"]]
        assert states[states[validate["Catch"][0]["Next"]]["Next"]]["Type"] == "Succeed"
        assert states[validate["Catch"][1]["Next"]]["Next"] == "Handle failure before lock"

        # The failure handlers end the execution as failed, whatever happens to them.
        for handler in (FAILURE_HANDLER, "Handle failure before lock"):
            assert states[states[handler]["Next"]]["Type"] == "Fail"
            assert [states[c["Next"]]["Type"] for c in states[handler]["Catch"]] == ["Fail"]


def test_lock_is_not_retried_but_idempotent_bitbucket_calls_are(state_machines: dict[str, StateMachine]) -> None:
    for sm in state_machines.values():
        tasks = _lambda_tasks(sm.definition)
        # A retried lock cannot get the first attempt's unlock token back: Bitbucket would stay locked.
        assert not _retried_errors(tasks[BACKUP.lock.state]) & MATCHES_BITBUCKET_UNAVAILABLE, _retried_errors(
            tasks[BACKUP.lock.state]
        )
        for name in (
            BACKUP.wait_drained.state,
            "Report home progress",
            "Report database progress",
            BACKUP.unlock.state,
        ):
            assert "BitbucketUnavailable" in _retried_errors(tasks[name]), f"'{name}' gives up on a blip"
        for name, task in tasks.items():
            for retry in task.get("Retry", []):
                assert retry["MaxAttempts"] <= 6 and retry.get("BackoffRate", 1) >= 1, name
            assert "Lambda.ServiceException" in _retried_errors(task), f"'{name}' does not retry Lambda's own errors"


# --- schedules and notifications -----------------------------------------------------------------------------------


def test_schedules_start_the_right_state_machine_with_the_instance(
    resources: Any, state_machines: dict[str, StateMachine]
) -> None:
    scheduled = [i for i in CONFIG["instances"] if i.get("schedule")]
    # The backup schedules (the staleness check's has no input: tests/infra/test_monitoring.py).
    schedules = {k: v for k, v in resources("AWS::Scheduler::Schedule").items() if "Input" in v["Properties"]["Target"]}
    assert len(schedules) == len(scheduled) == 1
    by_instance = {json.loads(s["Properties"]["Target"]["Input"])["instance"]: s for s in schedules.values()}
    assert set(by_instance) == {i["name"] for i in scheduled}
    owner = _by_instance(state_machines)
    for instance in scheduled:
        props = by_instance[instance["name"]]["Properties"]
        assert json.loads(props["Target"]["Input"]) == {"instance": instance["name"]}
        assert props["ScheduleExpression"] == instance["schedule"]
        assert props["ScheduleExpressionTimezone"] == instance["schedule_timezone"]
        assert props["State"] == "ENABLED"
        assert props["Target"]["Arn"] == {"Ref": owner[instance["name"]].logical_id}


def test_topic_is_kms_encrypted(assertions: Any) -> None:
    assertions.resource_count_is("AWS::SNS::Topic", 1)
    assertions.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": Match.object_like({"Fn::GetAtt": [Match.any_value(), "Arn"]})}
    )
    assertions.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_email_subscriptions_are_filtered_per_instance(resources: Any) -> None:
    subscriptions = {s["Properties"]["Endpoint"]: s["Properties"] for s in resources("AWS::SNS::Subscription").values()}
    assert set(subscriptions) == {*CONFIG["notification_emails"], *PROD["notification_emails"]}
    for email in CONFIG["notification_emails"]:
        assert "FilterPolicy" not in subscriptions[email], "project-wide addresses hear about every instance"
    for email in PROD["notification_emails"]:
        assert subscriptions[email]["Protocol"] == "email"
        assert subscriptions[email].get("FilterPolicy") == {"instance": [PROD["name"]]}
        assert subscriptions[email].get("FilterPolicyScope", "MessageAttributes") == "MessageAttributes"


def test_run_table_is_kms_encrypted_with_ttl(assertions: Any) -> None:
    assertions.resource_count_is("AWS::DynamoDB::Table", 1)
    assertions.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": Match.any_value()},
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        },
    )


# --- IAM ------------------------------------------------------------------------------------------------------------


def _statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every policy statement of the template, with the logical id it comes from."""
    found = []
    for logical, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(props["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            documents += [p["PolicyDocument"] for p in props.get("Policies", [])]
        for document in documents:
            statements = document["Statement"]
            found += [(logical, s) for s in (statements if isinstance(statements, list) else [statements])]
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_one_role_per_lambda(resources: Any) -> None:
    functions = resources("AWS::Lambda::Function")
    roles = resources("AWS::IAM::Role")
    role_of = {logical: fn["Properties"]["Role"]["Fn::GetAtt"][0] for logical, fn in functions.items()}
    assert len(functions) >= 22, "at least 11 step functions per state machine"
    assert len(set(role_of.values())) == len(functions), "a role shared by two functions"
    for role in role_of.values():
        trust = roles[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert [s["Principal"] for s in trust] == [{"Service": "lambda.amazonaws.com"}]


def test_exactly_the_steps_that_call_bitbucket_read_its_secret(resources: Any) -> None:
    """A step row's `bitbucket` says its warm-up reads the Bitbucket secret ahead: its role must allow that read, and
    no other backup function's role may."""
    rows = {row.handler: row for row in (*BACKUP.functions, OPERATIONS.safety_net)}
    policies = resources("AWS::IAM::Policy").values()
    checked = set()
    for fn in resources("AWS::Lambda::Function").values():
        row = rows.get(fn["Properties"]["Handler"])
        if row is None:
            continue
        role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
        statements = [
            st
            for policy in policies
            if {"Ref": role} in policy["Properties"]["Roles"]
            for st in _as_list(policy["Properties"]["PolicyDocument"]["Statement"])
        ]
        reads = any(
            "secretsmanager:GetSecretValue" in _as_list(st["Action"]) and "backup-user" in json.dumps(st["Resource"])
            for st in statements
        )
        assert reads == row.bitbucket, (row.name, reads)
        checked.add(row.name)
    # No instance here has Mesh nodes or a search index: the stack deploys neither's copy.
    assert {row.name for row in rows.values()} - {BACKUP.copy_mesh.name, BACKUP.copy_search.name} == checked


def test_snapshots_are_deleted_only_when_they_carry_the_tool_tag(template: dict[str, Any]) -> None:
    granted = []
    for logical, statement in _statements(template):
        if statement["Effect"] != "Allow":
            continue
        assert "NotAction" not in statement, f"{logical}: Allow with NotAction can grant anything"
        patterns = [a.lower() for a in _as_list(statement.get("Action", []))]
        deletes = [d for d in DELETE_ACTIONS if any(fnmatch.fnmatchcase(d.lower(), p) for p in patterns)]
        if not deletes:
            continue
        granted += deletes
        conditions = statement.get("Condition", {})
        tag_values = [
            values
            for operator, keys in conditions.items()
            if operator in ("StringEquals", "ForAllValues:StringEquals")
            for key, values in keys.items()
            if key == f"aws:ResourceTag/{TOOL_TAG}"
        ]
        assert tag_values == [TOOL_VALUE], f"{logical} allows {deletes} without requiring the tool's tag"
    # Not vacuous: pruning and the failure path do need to delete, in both groups.
    assert sorted(set(granted)) == sorted(DELETE_ACTIONS)
    managed = {
        json.dumps(arn)
        for r in template["Resources"].values()
        if r["Type"] == "AWS::IAM::Role"
        for arn in r["Properties"].get("ManagedPolicyArns", [])
    }
    assert all("AWSLambdaVPCAccessExecutionRole" in arn for arn in managed), managed


# --- Lambdas and configuration ---------------------------------------------------------------------------------------

SECRET_NAME = re.compile(r"PASS(W|_|$)|PWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|AUTH", re.IGNORECASE)
# A password-ish word, a PEM key, an AWS access key id, or a long blob of letters and digits (a token or a key).
SECRET_VALUE = re.compile(
    r"passw|PRIVATE KEY|AKIA[0-9A-Z]{16}|^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9+/=_]{24,}$", re.IGNORECASE
)


def _functions_watching(state_machine: str, resources: Any) -> set[str]:
    """Lambdas that EventBridge rules on this state machine's executions invoke (the safety net, if any)."""
    found = set()
    for rule in resources("AWS::Events::Rule").values():
        watched = rule["Properties"].get("EventPattern", {}).get("detail", {}).get("stateMachineArn", [])
        if {"Ref": state_machine} in watched:
            found |= {t["Arn"]["Fn::GetAtt"][0] for t in rule["Properties"]["Targets"] if "Fn::GetAtt" in t["Arn"]}
    return found


def test_lambdas_runtime_network_and_environment(
    resources: Any, state_machines: dict[str, StateMachine], template: dict[str, Any]
) -> None:
    functions = resources("AWS::Lambda::Function")
    owner = _by_instance(state_machines)
    covered = set()
    for instance in (PROD, STAGING):
        sm = owner[instance["name"]]
        steps = {function_of(task) for task in _lambda_tasks(sm.definition).values()}
        assert len(steps) == 15  # no Mesh nodes here: no Mesh node copy (tests/infra/test_mesh_template.py)
        # The operator's unlock (the safety net) reaches Bitbucket from where the steps do (the output names it).
        (unlock,) = [
            o["Value"]["Ref"]
            for key, o in template["Outputs"].items()
            if key.startswith("OperatorUnlockFunction")
            and instance["name"] in o["Description"].split(OPERATOR_UNLOCK_FOR, 1)[1].split(", ")
        ]
        used = steps | _functions_watching(sm.logical_id, resources) | {unlock}
        covered |= used
        for logical in used:
            vpc = functions[logical]["Properties"].get("VpcConfig")
            if "network" in instance:
                assert vpc == {
                    "SubnetIds": instance["network"]["subnet_ids"],
                    "SecurityGroupIds": instance["network"]["security_group_ids"],
                }, logical
            else:
                assert vpc is None, f"{logical} of '{instance['name']}' must not be in a VPC"
    restore_steps = {f for f in functions if re.fullmatch(r"(Functions\d+)?Restore[A-Za-z]+[0-9A-F]{8}", f)}
    monitoring = {f for f in functions if re.fullmatch(r"StalenessCheck[0-9A-F]{8}", f)}  # test_monitoring.py
    assert covered | restore_steps | monitoring == set(functions), "every Lambda is a step, watches one or monitors"

    parameter_names = [p["Properties"]["Name"] for p in resources("AWS::SSM::Parameter").values()]
    for logical, fn in functions.items():
        props = fn["Properties"]
        assert props["Runtime"] == "python3.13", logical
        assert props["Handler"].startswith("functions.handlers."), logical
        assert props["TracingConfig"] == {"Mode": "Active"}
        variables = props["Environment"]["Variables"]
        for name, value in variables.items():
            assert not SECRET_NAME.search(name), f"{logical}: environment variable {name} looks like a secret"
            if isinstance(value, str):
                assert not SECRET_VALUE.search(value), f"{logical}: {name}={value!r} looks like a secret"
            else:
                assert set(value) <= {"Ref", "Fn::GetAtt"}, f"{logical}: {name} is neither text nor a reference"
        # The functions find each instance's configuration under the prefix the parameters use.
        prefix = variables["CONFIG_PARAMETER_PREFIX"]
        assert all(name.startswith(prefix + "/") for name in parameter_names)


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in _keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def test_ssm_parameters_hold_each_instance_config_without_secrets(resources: Any, template: dict[str, Any]) -> None:
    parameters = {p["Properties"]["Name"]: p["Properties"] for p in resources("AWS::SSM::Parameter").values()}
    prefix = f"/bitbucket-diy-backup/{STACK_NAME}/instances"
    assert set(parameters) == {f"{prefix}/{i['name']}" for i in CONFIG["instances"]}
    for raw in CONFIG["instances"]:
        props = parameters[f"{prefix}/{raw['name']}"]
        assert props["Type"] == "String"
        stored = json.loads(props["Value"])
        # credentials_secret is the secret's name (checked below); nothing else may even look like a credential.
        suspicious = [k for k in _keys(stored) if k != "credentials_secret" and SECRET_NAME.search(k)]
        assert not suspicious, f"{raw['name']}: secret-looking fields {suspicious}"
        assert InstanceConfig.model_validate(stored) == InstanceConfig.model_validate(raw)
        assert stored["credentials_secret"] == raw["credentials_secret"], "the secret's name, never its value"
    assert "password" not in json.dumps(template).lower()


def test_the_command_line_finds_the_archive_bucket_as_the_stack_names_it() -> None:
    """`bitbucket-backup list` reads the archive bucket from the stack's output, or (no stack outputs: the local
    runtime) from the bucket's name, which CloudFormation makes from the stack's name and the logical id."""
    from bitbucket_backup_cli.base import ARCHIVE_CONSTRUCT, ARCHIVE_OUTPUT, DEFAULT_STACK
    from rehearsal.synth import rehearsal_project_config, synth_template

    template = synth_template(rehearsal_project_config("rsync", "postgresql"))
    buckets = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::S3::Bucket"]
    (archives,) = [k for k in buckets if re.fullmatch(ARCHIVE_CONSTRUCT + "[0-9A-F]{8}", k)]
    assert template["Outputs"][ARCHIVE_OUTPUT]["Value"] == {"Ref": archives}
    assert DEFAULT_STACK == STACK_NAME


def test_the_hosts_report_progress_to_a_log_group_the_command_line_finds() -> None:
    """The stack's HostProgress group (encrypted, kept, its retention) is in every function's environment and an
    output; the command line finds it by that output, or by its name, which CloudFormation makes as the bucket's."""
    from bitbucket_backup_cli.base import HOST_PROGRESS_CONSTRUCT, HOST_PROGRESS_OUTPUT
    from functions.models.environment import HOST_PROGRESS_LOG_GROUP
    from rehearsal.synth import rehearsal_project_config, synth_template

    template = synth_template(rehearsal_project_config("rsync", "postgresql"))
    groups = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Logs::LogGroup"}
    (name,) = [k for k in groups if re.fullmatch(HOST_PROGRESS_CONSTRUCT + "[0-9A-F]{8}", k)]
    group = groups[name]
    assert group["DeletionPolicy"] == "Retain" and group["Properties"]["RetentionInDays"] == 90
    assert "KmsKeyId" in group["Properties"]
    assert template["Outputs"][HOST_PROGRESS_OUTPUT]["Value"] == {"Ref": name}
    functions = [v for v in template["Resources"].values() if v["Type"] == "AWS::Lambda::Function"]
    assert functions and all(
        f["Properties"]["Environment"]["Variables"][HOST_PROGRESS_LOG_GROUP] == {"Ref": name} for f in functions
    )
    # Nothing of the stack writes there: only the hosts' own roles may (README, "instance role").
    assert name not in json.dumps([_statements(template)])
    snapshots_only = synth_template(rehearsal_project_config())
    assert HOST_PROGRESS_OUTPUT not in snapshots_only["Outputs"]


def test_the_configuration_is_read_through_one_managed_policy_per_workflow(resources: Any) -> None:
    """Every function reads its instances' configuration parameters; the statement is one managed policy attached to
    a workflow's roles, not a copy in each role's own policy (a fleet's template would exceed 1 MB)."""
    shared = {
        k: v for k, v in resources("AWS::IAM::ManagedPolicy").items() if re.match(r"(Drill)?ReadsConfiguration\d*", k)
    }
    assert shared
    attached = {role["Ref"] for policy in shared.values() for role in policy["Properties"]["Roles"]}
    for policy in shared.values():
        (statement,) = _as_list(policy["Properties"]["PolicyDocument"]["Statement"])
        assert "ssm:GetParameter" in statement["Action"] and "ssm:PutParameter" not in statement["Action"]
    reads = {"ssm:GetParameter", "ssm:GetParameters"}
    for logical, policy in resources("AWS::IAM::Policy").items():
        for statement in _as_list(policy["Properties"]["PolicyDocument"]["Statement"]):
            assert not reads & set(_as_list(statement["Action"])), f"{logical} repeats the configuration's read"
    for logical, fn in resources("AWS::Lambda::Function").items():
        role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
        if logical.startswith("StalenessCheck"):  # reads the whole path (GetParametersByPath), its own statement
            continue
        assert role in attached, f"{logical} cannot read its configuration"
