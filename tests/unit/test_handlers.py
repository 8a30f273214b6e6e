"""The Lambda handlers, called directly with the events the state machine passes, over moto and the simulator."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto import mock_aws

from functions import observability, runs
from functions.clients import aws
from functions.errors import (
    BackupInProgress,
    InvalidInput,
    LockNotConfirmed,
    PreflightFailed,
    RunDiscarded,
    UnknownInstance,
)
from functions.handlers.backup import (
    copy_database,
    copy_home,
    copy_mesh,
    finalize,
    handle_failure,
    lock,
    progress,
    start_backup,
    unlock,
    validate,
    wait_drained,
    wait_snapshots,
)
from functions.models.config import InstanceConfig
from functions.models.events import RunContext
from functions.strategies import (
    BACKUP_ID_TAG,
    COMPLETE,
    INSTANCE_TAG,
    PART_TAG,
    STATUS_TAG,
    TOOL_TAG,
    TOOL_VALUE,
    catalog_tags,
    strategy_for,
)
from rehearsal.bitbucket_simulator import BitbucketSimulator
from rehearsal.fake_account import ACCOUNT, REGION
from tests.conftest import create_runs_table

# Powertools warns when a handler published no metric; most steps publish none.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

PASSWORD = "s3cret-Passw0rd"
TABLE = "bitbucket-backup-runs"
PREFIX = "/bitbucket-backup/instances"
SECRET = "bitbucket/demo/backup-user"
DB = "bitbucket-demo"
EXECUTION = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:bitbucket-backup:run-1"
START_TIME = "2026-11-23T08:28:18.000Z"
BACKUP_ID = "demo-20261123-082818"


@dataclass
class Context:
    """What Powertools' inject_lambda_context reads from the Lambda context."""

    function_name: str = "bitbucket-backup-step"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:bitbucket-backup-step"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class World:
    sim: BitbucketSimulator
    topic_arn: str
    ec2_instance: str
    volume: str
    config: dict[str, Any]

    def store_config(self, **overrides: Any) -> dict[str, Any]:
        """What the stack writes to SSM for an instance (InstanceConfig(...).model_dump_json())."""
        raw = {**self.config, **overrides}
        aws.client("ssm").put_parameter(
            Name=f"{PREFIX}/{raw['name']}",
            Value=InstanceConfig(**raw).model_dump_json(),
            Type="String",
            Overwrite=True,
        )
        return raw

    def notifications(self) -> list[tuple[str, str]]:
        from moto.sns.models import sns_backends

        topic = sns_backends[ACCOUNT][REGION].topics[self.topic_arn]
        return [(n[2], n[1]) for n in topic.sent_notifications]  # (subject, message)

    def run_item(self) -> dict[str, Any] | None:
        item = aws.client("dynamodb").get_item(TableName=TABLE, Key={"instance": {"S": "demo"}}).get("Item")
        return dict(item) if item else None

    def ebs_snapshots(self) -> dict[str, dict[str, str]]:
        snaps = aws.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]
        return {s["SnapshotId"]: {t["Key"]: t["Value"] for t in s.get("Tags", [])} for s in snaps if s.get("Tags")}

    def rds_snapshots(self) -> dict[str, dict[str, str]]:
        snaps = aws.client("rds").describe_db_snapshots(DBInstanceIdentifier=DB)["DBSnapshots"]
        return {s["DBSnapshotIdentifier"]: {t["Key"]: t["Value"] for t in s.get("TagList", [])} for s in snaps}


# The functions' clients are passed in, made against moto once for the module's tests (tests/conftest.py).
pytestmark = [pytestmark, pytest.mark.usefixtures("moto_clients")]


@pytest.fixture
def world(simulator: BitbucketSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # seconds per test, and public snapshots we don't need
    with mock_aws():
        create_runs_table(TABLE)
        topic_arn = aws.client("sns").create_topic(Name="bitbucket-backup")["TopicArn"]
        aws.client("secretsmanager").create_secret(
            Name=SECRET, SecretString=json.dumps({"username": "admin", "password": PASSWORD})
        )
        ec2 = aws.client("ec2")
        instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m5.large")[
            "Instances"
        ][0]
        volume = ec2.create_volume(AvailabilityZone=instance["Placement"]["AvailabilityZone"], Size=100)["VolumeId"]
        ec2.attach_volume(VolumeId=volume, InstanceId=instance["InstanceId"], Device="/dev/xvdf")
        aws.client("rds").create_db_instance(
            DBInstanceIdentifier=DB,
            DBInstanceClass="db.t3.medium",
            Engine="postgres",
            AllocatedStorage=50,
            MasterUsername="bitbucket",
            MasterUserPassword="not-a-real-secret-1",
        )
        monkeypatch.setenv("RUNS_TABLE", TABLE)
        monkeypatch.setenv("TOPIC_ARN", topic_arn)
        monkeypatch.setenv("CONFIG_PARAMETER_PREFIX", PREFIX)
        config = {
            "name": "demo",
            "base_url": simulator.url,
            "insecure_connection_allowed_for_testing": True,  # the simulator speaks http on 127.0.0.1
            "credentials_secret": SECRET,
            "home": {
                "strategy": "amazon-ebs",
                "instance_id": instance["InstanceId"],
                "volumes": ["/dev/xvdf"],
                "mount_points": [],
            },
            "database": {"strategy": "amazon-rds", "instance_id": DB},
            "keep_backups": 3,
            "timing": {"http_timeout_seconds": 1.0, "http_retries": 1, "http_backoff_seconds": 0.01},
        }
        w = World(simulator, topic_arn, instance["InstanceId"], volume, config)
        w.store_config()
        yield w


def validate_event(
    instance_input: Any = None, start_time: str = START_TIME, execution: str = EXECUTION
) -> dict[str, Any]:
    return {
        "input": {"instance": "demo"} if instance_input is None else instance_input,
        "execution": execution,
        "start_time": start_time,
    }


def call(handler: Any, event: dict[str, Any]) -> dict[str, Any]:
    result = handler(event, Context())
    json.dumps(result)  # what Step Functions receives must be JSON
    return dict(result)


def drained(run: dict[str, Any], deadline_s: float = 2.0) -> dict[str, Any]:
    """The state machine's poll loop without its Wait state."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        result = call(wait_drained, {"run": run})
        if result["drained"]:
            return result
    raise AssertionError("never DRAINED")


def names_field(error: BaseException, field: str) -> bool:
    """InvalidInput texts read "<step>: invalid input: <field>: <problem>; <field>: <problem>"."""
    return re.search(rf"(invalid input: |; ){re.escape(field)}: ", str(error)) is not None


def tags_of(tags: dict[str, str]) -> dict[str, str]:
    return {k: tags[k] for k in (TOOL_TAG, INSTANCE_TAG, BACKUP_ID_TAG, PART_TAG, STATUS_TAG) if k in tags}


# ---------------------------------------------------------------------------------------------------- validate


def test_validate_prepares_the_run_and_takes_the_guard(world: World) -> None:
    run = call(validate, validate_event())
    assert run["backup_id"] == BACKUP_ID
    assert run["instance"] == "demo" and run["execution"] == EXECUTION
    # The run names the instance and the configuration's version, never the configuration itself.
    assert "config" not in run and run["config_version"] == 1
    assert world.sim.url not in json.dumps(run) and world.ec2_instance not in json.dumps(run)
    assert run["flow"]["zero_downtime"] is False and run["flow"]["home"] == {"strategy": "amazon-ebs"}
    item = world.run_item()
    assert item is not None
    assert item["backup_id"]["S"] == BACKUP_ID and item["phase"]["S"] == "preparing"
    assert "unlock_token" not in item
    assert not world.sim.locked  # prepared while live
    assert PASSWORD not in json.dumps(run)


def test_validate_unknown_instance(world: World) -> None:
    with pytest.raises(UnknownInstance, match="'nope'"):
        call(validate, validate_event({"instance": "nope"}))
    assert world.run_item() is None


@pytest.mark.parametrize(
    ("execution_input", "named"),
    [
        ({}, "instance"),
        ({"instance": "demo", "force": True}, "force"),
        ({"instance": 5}, "instance"),
        ({"instance": "Demo Prod"}, "instance"),
    ],
    ids=["missing", "extra field", "number", "bad name"],
)
def test_validate_malformed_input(world: World, execution_input: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidInput) as error:
        call(validate, validate_event(execution_input))
    assert names_field(error.value, named) and str(error.value).startswith("validate: ")
    assert world.run_item() is None
    assert world.sim.requests == []  # refused before talking to anyone


def test_validate_event_without_execution(world: World) -> None:
    event = validate_event()
    event.pop("execution")
    with pytest.raises(InvalidInput, match="execution"):
        call(validate, event)


def test_validate_volume_not_attached(world: World) -> None:
    world.store_config(home={**world.config["home"], "volumes": ["/dev/xvdh"]})
    with pytest.raises(PreflightFailed) as error:
        call(validate, validate_event())
    assert "/dev/xvdh" in str(error.value) and world.ec2_instance in str(error.value)
    assert world.run_item() is None
    assert not world.sim.locked


def test_validate_bitbucket_unreachable_is_preflight(world: World) -> None:
    world.sim.inject("poll", status=503, times=None)
    with pytest.raises(PreflightFailed, match="503"):
        call(validate, validate_event())
    assert world.run_item() is None


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("username=admin password=" + PASSWORD, "not JSON"),
        (json.dumps({"username": "admin"}), "'password'"),
        (json.dumps({"username": "admin", "password": "wrong-Passw0rd-42"}), "401"),
    ],
    ids=["not json", "no password", "wrong password"],
)
def test_validate_secret_problems_are_preflight_without_the_secret(world: World, secret: str, expected: str) -> None:
    aws.client("secretsmanager").put_secret_value(SecretId=SECRET, SecretString=secret)
    with pytest.raises(PreflightFailed) as error:
        call(validate, validate_event())
    assert expected in str(error.value)
    for leaked in (PASSWORD, "wrong-Passw0rd-42"):
        assert leaked not in str(error.value)
    assert world.run_item() is None
    assert not world.sim.locked


def test_validate_secret_missing(world: World) -> None:
    world.store_config(credentials_secret="bitbucket/demo/nope")
    with pytest.raises(PreflightFailed, match="bitbucket/demo/nope"):
        call(validate, validate_event())


@pytest.mark.parametrize(
    ("handler", "change", "named"),
    [
        (lock, lambda run: run.pop("backup_id"), "run.backup_id"),
        (lock, lambda run: run.update(backup_id="demo-yesterday"), "run.backup_id"),
        (copy_home, lambda run: None, "part"),
        (unlock, lambda run: run.update(config={"keep_backups": 3}), "run.config"),
        (unlock, lambda run: run.update(config_version=0), "run.config_version"),
    ],
    ids=["no backup id", "bad backup id", "bad part", "a config", "bad config version"],
)
def test_steps_refuse_malformed_events(world: World, handler: Any, change: Any, named: str) -> None:
    run = call(validate, validate_event())
    change(run)
    with pytest.raises(InvalidInput) as error:
        call(handler, {"run": run, "part": "logs"})
    assert names_field(error.value, named)
    assert not world.sim.locked


OTHER_SECRET = "bitbucket/elsewhere/admin"


def test_a_crafted_config_in_a_step_event_is_refused_and_reaches_nobody(world: World) -> None:
    """A lock event whose configuration points base_url at another server (and another secret) must neither talk to
    that server nor read that secret: the steps take the configuration only from the deployed parameter."""
    aws.client("secretsmanager").create_secret(
        Name=OTHER_SECRET, SecretString=json.dumps({"username": "admin", "password": "other-Passw0rd-7"})
    )
    secret_reads: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        secret_reads.append(str(params.get("SecretId")))

    # A real botocore hook on the functions' own Secrets Manager client: which secrets do the steps read?
    hooks = aws.client("secretsmanager").meta.events
    hooks.register("provide-client-params.secretsmanager.GetSecretValue", record, unique_id="test-secret-reads")
    try:
        _crafted_lock_events(world, secret_reads)
    finally:
        hooks.unregister("provide-client-params.secretsmanager.GetSecretValue", unique_id="test-secret-reads")


def _crafted_lock_events(world: World, secret_reads: list[str]) -> None:
    with BitbucketSimulator(username="admin", password=PASSWORD, drain_seconds=0.05) as elsewhere:
        run = call(validate, validate_event())
        crafted = {**world.config, "base_url": elsewhere.url, "credentials_secret": OTHER_SECRET}
        for event in (
            {"run": {**run, "config": crafted}},  # the old shape: run.config
            {"run": run, "config": crafted},  # beside the run
            {"run": {**run, "base_url": elsewhere.url}},
        ):
            with pytest.raises(InvalidInput) as error:
                call(lock, event)
            assert "Extra inputs are not permitted" in str(error.value)
        assert elsewhere.requests == []
        assert not world.sim.locked
        assert OTHER_SECRET not in secret_reads

        # The run as validate made it locks the configured Bitbucket, and only that one.
        call(lock, {"run": run})
        assert world.sim.locked and elsewhere.requests == []
        assert OTHER_SECRET not in secret_reads and SECRET in secret_reads  # the hook does see what is read


def test_later_steps_use_the_configuration_version_validate_read(world: World) -> None:
    run = call(validate, validate_event())
    with BitbucketSimulator(username="admin", password=PASSWORD, drain_seconds=0.05) as elsewhere:
        # A redeploy in the middle of the run: the run goes on with the configuration it was validated with.
        world.store_config(base_url=elsewhere.url)
        call(lock, {"run": run})
        assert world.sim.locked and elsewhere.requests == []
    with pytest.raises(UnknownInstance, match="version 7"):
        call(unlock, {"run": {**run, "config_version": 7}})


def test_second_validate_while_a_run_holds_the_guard(world: World) -> None:
    call(validate, validate_event())
    with pytest.raises(BackupInProgress) as error:
        call(validate, validate_event(start_time="2026-11-23T09:00:00Z", execution=EXECUTION + "-scheduled"))
    assert BACKUP_ID in str(error.value)
    item = world.run_item()
    assert item is not None and item["backup_id"]["S"] == BACKUP_ID  # the first run's guard is untouched
    assert item["execution"]["S"] == EXECUTION


def test_validate_retried_by_the_same_execution_is_not_blocked_by_its_own_guard(world: World) -> None:
    # Step Functions retries the task on Lambda.ServiceException & co. even when the first attempt ran; the
    # retry must not report "backup in progress" (the execution would end as skipped, the guard left for hours).
    first = call(validate, validate_event())
    again = call(validate, validate_event())
    assert again["backup_id"] == first["backup_id"] == BACKUP_ID
    item = world.run_item()
    assert item is not None and item["execution"]["S"] == EXECUTION and item["phase"]["S"] == "preparing"


def test_validate_after_lock_by_the_same_execution_is_refused(world: World) -> None:
    # The tolerance above is for a run that has not locked yet: a locked run's item (and token) is never reset.
    run = call(validate, validate_event())
    call(lock, {"run": run})
    with pytest.raises(BackupInProgress):
        call(validate, validate_event())
    item = world.run_item()
    assert item is not None and item["phase"]["S"] == "locked" and item["unlock_token"]["S"] == world.sim.unlock_token


def test_an_expired_guard_does_not_block(world: World) -> None:
    # A crashed run's guard expires (TTL); the next backup takes it over.
    aws.client("dynamodb").put_item(
        TableName=TABLE,
        Item={
            "instance": {"S": "demo"},
            "backup_id": {"S": "demo-20261122-082818"},
            "execution": {"S": EXECUTION + "-crashed"},
            "phase": {"S": "unlocked"},
            "expires_at": {"N": str(int(time.time()) - 60)},
        },
    )
    run = call(validate, validate_event())
    item = world.run_item()
    assert item is not None and item["backup_id"]["S"] == run["backup_id"] == BACKUP_ID


# ------------------------------------------------------------------------------------------ the whole sequence


def test_a_copy_step_copies_only_its_own_parts(world: World) -> None:
    """A crafted event cannot make one step copy another's part (its role may not) or a part the instance lacks."""
    run = call(validate, validate_event())
    for handler, part in (
        (copy_home, "database"),
        (copy_database, "home"),
        (copy_mesh, "home"),
        (copy_mesh, "mesh-node1"),  # this instance has no Mesh nodes
        (copy_home, "mesh-node1"),
    ):
        with pytest.raises(InvalidInput, match="is not a part this step copies"):
            call(handler, {"run": run, "part": part})
    with pytest.raises(InvalidInput, match="has no part 'mesh'"):
        call(progress, {"run": run, "part": "mesh"})
    with pytest.raises(InvalidInput):
        call(copy_mesh, {"run": run, "part": "mesh-../../etc"})


def test_backup_sequence_produces_complete_tagged_snapshots(world: World, caplog: pytest.LogCaptureFixture) -> None:
    run = call(validate, validate_event())
    step = {"run": run}
    locked = call(lock, step)
    assert world.sim.locked and "locked_at" in locked
    item = world.run_item()
    assert item is not None and item["phase"]["S"] == "locked"
    assert item["unlock_token"]["S"] == world.sim.unlock_token  # kept in the table, not in the state

    task = call(start_backup, step)
    assert task["task_id"] == world.sim.task["id"]
    assert drained(run)["drained"] is True

    home = call(copy_home, {"run": run, "part": "home"})
    database = call(copy_database, {"run": run, "part": "database"})
    assert [a["kind"] for a in home["artifacts"]] == ["ebs-snapshot"]
    assert home["artifacts"][0]["volume_id"] == world.volume  # the root volume is not part of the backup
    # The copy answers from CreateSnapshots (no DescribeSnapshots under the lock): what the catalog lists, exactly.
    # Only the state may differ: CreateSnapshots answers "pending", and moto completes a snapshot once described.
    listed = strategy_for(RunContext.model_validate(run).config, "home").artifacts(BACKUP_ID)
    assert [{**a, "state": "?"} for a in home["artifacts"]] == [{**a.summary(), "state": "?"} for a in listed]
    assert {a["state"] for a in home["artifacts"]} == {"pending"}
    assert [a["id"] for a in database["artifacts"]] == [BACKUP_ID]

    assert call(progress, {"run": run, "part": "home"})["percentage"] == 50
    assert call(progress, {"run": run, "part": "database"})["percentage"] == 90
    with pytest.raises(InvalidInput):  # the 100 is the unlock's, after every part
        call(progress, {"run": run})
    assert world.sim.progress_history == [50, 90]

    unlocked = call(unlock, step)
    assert world.sim.progress_history == [50, 90, 100]  # reported by the unlock step, before the unlock
    assert not world.sim.locked
    assert unlocked["lock_window_s"] >= unlocked["drain_s"] >= 0
    item = world.run_item()
    assert item is not None and item["phase"]["S"] == "unlocked"
    assert "unlock_token" not in item and "cancel_token" not in item

    # A snapshot still being made: its completion as RDS reports it becomes a progress line (the command line's bar).
    from moto.rds.models import rds_backends

    made = rds_backends[ACCOUNT][REGION].database_snapshots[BACKUP_ID]
    made.status, made.percent_progress = "creating", 45
    caplog.clear()
    assert call(wait_snapshots, step) == {"complete": False, "pending": [BACKUP_ID]}
    said = [vars(r) for r in caplog.records if hasattr(r, "seed")]
    assert [(r["part"], r["percent"]) for r in said] == [("database", 45)], said
    assert said[0]["seed"].endswith(f"INFO: database snapshot {BACKUP_ID}: 45%")
    made.status, made.percent_progress = "available", 100
    caplog.clear()
    assert call(wait_snapshots, step) == {"complete": True, "pending": []}
    lines = [str(vars(r)["seed"]) for r in caplog.records if hasattr(r, "seed")]
    assert len(lines) == 1 and "snapshots completed: " in lines[0] and f"database {BACKUP_ID}" in lines[0], lines
    summary = call(finalize, {"run": run, "unlocked": unlocked})
    assert summary["status"] == "complete" and summary["backup_id"] == BACKUP_ID
    assert summary["pruned"] == []
    assert {a["status"] for a in summary["artifacts"]} == {COMPLETE}
    assert world.run_item() is None  # the guard is released

    expected = {TOOL_TAG: TOOL_VALUE, INSTANCE_TAG: "demo", BACKUP_ID_TAG: BACKUP_ID, STATUS_TAG: COMPLETE}
    ebs = [tags_of(t) for t in world.ebs_snapshots().values()]
    assert ebs == [{**expected, PART_TAG: "home"}]
    assert tags_of(world.rds_snapshots()[BACKUP_ID]) == {**expected, PART_TAG: "database"}
    assert world.notifications() == []  # notify_on_success is off

    everything = json.dumps([run, locked, task, home, database, unlocked, summary])
    for secret in (PASSWORD, world.sim.task["cancelToken"]):
        assert secret not in everything


# ------------------------------------------------------------------------------------------------ failure path


def test_handle_failure_after_lock_unlocks_and_notifies_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    run = call(validate, validate_event())
    call(lock, {"run": run})
    call(start_backup, {"run": run})
    unlock_token, cancel_token = world.sim.unlock_token, world.sim.task["cancelToken"]
    assert unlock_token and world.sim.locked
    # A fresh Lambda process knows no secret yet; and the cause carries a URL with the token in it.
    monkeypatch.setattr(observability, "_secrets", set())
    leaky = f"wait-drained: GET /mvc/maintenance?token={unlock_token}"
    cause = json.dumps({"errorType": "BitbucketUnavailable", "errorMessage": leaky})
    event = {
        "input": {"instance": "demo"},
        "run": run,
        "failure": {"step": "wait-drained", "Error": "BitbucketUnavailable", "Cause": cause},
    }
    outcome = call(handle_failure, event)

    assert not world.sim.locked
    assert world.sim.task["state"] == "CANCELLED"
    assert "cancelled" in world.sim.event_names() and "unlocked" in world.sim.event_names()
    assert outcome["error"] == "BitbucketUnavailable" and outcome["unlocked"] == "yes"
    assert world.run_item() is None

    sent = world.notifications()
    assert len(sent) == 1
    subject, message = sent[0]
    assert "wait-drained" in subject and "demo" in subject and "FAILED" in subject
    assert "step: wait-drained" in message and "unlocked: yes" in message and BACKUP_ID in message
    for secret in (PASSWORD, unlock_token, cancel_token):
        for text in (subject, message, json.dumps(outcome)):
            assert secret not in text


def test_handle_failure_before_lock_touches_nobody_elses_lock(world: World) -> None:
    run = call(validate, validate_event())
    world.sim.lock_by_other("someone-else")
    with pytest.raises(Exception, match="already locked"):
        call(lock, {"run": run})
    event = {
        "input": {"instance": "demo"},
        "run": run,
        "failure": {"step": "lock", "Error": "AlreadyLocked", "Cause": "lock: already locked (HTTP 409)"},
    }
    outcome = call(handle_failure, event)
    assert world.sim.locked and world.sim.lock_owner == "someone-else"
    assert not [r for r in world.sim.requests if r[0] == "DELETE"]
    assert outcome["unlocked"].startswith("yes")
    assert world.run_item() is None
    assert len(world.notifications()) == 1


def test_handle_failure_when_unlock_fails_keeps_the_guard_and_says_so(world: World) -> None:
    run = call(validate, validate_event())
    call(lock, {"run": run})
    token = world.sim.unlock_token
    assert token
    world.sim.inject("unlock", status=500, times=None)
    event = {
        "input": {"instance": "demo"},
        "run": run,
        "failure": {"step": "start-backup", "Error": "BitbucketUnavailable", "Cause": "start-backup: HTTP 503"},
    }
    outcome = call(handle_failure, event)
    assert world.sim.locked
    assert outcome["unlocked"].startswith("NO") and "by hand" in outcome["unlocked"]
    item = world.run_item()
    assert item is not None and item["unlock_token"]["S"] == token  # kept for whoever unlocks by hand
    sent = world.notifications()
    assert len(sent) == 1
    subject, message = sent[0]
    assert "start-backup" in subject and "unlocked: NO" in message
    for secret in (PASSWORD, token):
        assert secret not in message and secret not in json.dumps(outcome)


def test_lock_not_confirmed_is_reported_as_still_locked(world: World) -> None:
    run = call(validate, validate_event())
    world.sim.inject("lock", drop=True, after_action=True)
    with pytest.raises(LockNotConfirmed):
        call(lock, {"run": run})
    assert world.sim.locked
    event = {
        "input": {"instance": "demo"},
        "run": run,
        "failure": {"step": "lock", "Error": "LockNotConfirmed", "Cause": "lock: connection failed"},
    }
    outcome = call(handle_failure, event)
    assert not outcome["unlocked"].startswith("yes") and "by hand" in outcome["unlocked"]
    assert world.run_item() is not None  # no new run may lock while this one is unresolved
    [(subject, message)] = world.notifications()
    assert "lock" in subject and "unlock by hand" in message


def test_handle_failure_without_a_run_notifies_about_the_input(world: World) -> None:
    event = {
        "input": {"instance": "nope"},
        "failure": {
            "step": "validate",
            "Error": "UnknownInstance",
            "Cause": json.dumps({"errorMessage": "validate: no instance 'nope' is configured in this deployment"}),
        },
    }
    outcome = call(handle_failure, event)
    assert outcome["error"] == "UnknownInstance"
    [(subject, message)] = world.notifications()
    assert "nope" in subject and "validate" in subject
    assert "no instance 'nope' is configured" in message
    assert world.sim.requests == []


# ---------------------------------------------------------------------- a copy that ends after its run failed


def test_the_failure_path_marks_the_run_discarded_before_it_lists_what_the_run_made(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step Functions does not stop a copy step still running when another branch failed: the failure path marks the
    run before each listing of its artifacts, so that such a copy can tell it must undo what it makes."""
    from functions.strategies.amazon_ebs import EbsStrategy
    from functions.strategies.amazon_rds import RdsStrategy

    run = call(validate, validate_event())
    call(lock, {"run": run})
    marked_when_listed: list[bool] = []
    for strategy in (EbsStrategy, RdsStrategy):

        def listing(self: Any, backup_id: str | None = None, original: Any = strategy.artifacts) -> Any:
            item = world.run_item()
            marked_when_listed.append(item is not None and "discarding_at" in item)
            return original(self, backup_id)

        monkeypatch.setattr(strategy, "artifacts", listing)
    failure = {"step": "copy", "Error": "SnapshotFailed", "Cause": "copy database: snapshot failed"}
    outcome = call(handle_failure, {"input": {"instance": "demo"}, "run": run, "failure": failure})
    assert outcome["unlocked"] == "yes" and world.run_item() is None
    assert marked_when_listed == [True, True]


def test_a_copy_that_ends_after_its_run_was_discarded_removes_what_it_made(world: World) -> None:
    """Read after its snapshot was made: the mark (or no run record at all) makes the copy delete that snapshot and
    fail, saying so in the user's words."""
    run = call(validate, validate_event())
    call(lock, {"run": run})
    runs.mark_discarding("demo", BACKUP_ID)  # what the failure path does first
    with pytest.raises(RunDiscarded) as raised:
        call(copy_home, {"run": run, "part": "home"})
    message = str(raised.value)
    (snapshot,) = re.findall(r"deleted (snap-[0-9a-f]+)$", message)
    assert message == (
        f"copy-home: the home copy was made after backup {BACKUP_ID} had already failed (its failure path is "
        f"removing what the run made), so it was removed again: deleted {snapshot}"
    )
    assert world.ebs_snapshots() == {}

    runs.release("demo", BACKUP_ID)  # the failure path ended
    with pytest.raises(RunDiscarded) as raised:
        call(copy_database, {"run": run, "part": "database"})
    assert str(raised.value) == (
        f"copy-database: the database copy was made after backup {BACKUP_ID} had already failed (its run record is "
        f"gone), so it was removed again: deleted {BACKUP_ID}"
    )
    assert BACKUP_ID not in world.rds_snapshots()


def test_a_copy_that_failed_half_way_for_a_discarded_run_removes_what_its_tags_find(world: World) -> None:
    """CreateSnapshots made the snapshot, then its Device tags were refused: the copy finds what it made by its catalog
    tags and deletes it. For a run still open the same failure is left to the failure path (Step Functions)."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses.tags import TagResponse

    from tests.integration.conftest import fail_backend

    run = call(validate, validate_event())
    call(lock, {"run": run})
    # CreateTags, the call after CreateSnapshots (whose own tags moto writes with the same backend method)
    refused = EC2ClientError("UnauthorizedOperation", "injected")
    with fail_backend(TagResponse, "create_tags", refused), pytest.raises(Exception, match="UnauthorizedOperation"):
        call(copy_home, {"run": run, "part": "home"})
    assert len(world.ebs_snapshots()) == 1  # an open run: the failure path lists and removes it

    runs.mark_discarding("demo", BACKUP_ID)
    with fail_backend(TagResponse, "create_tags", refused), pytest.raises(RunDiscarded) as raised:
        call(copy_home, {"run": run, "part": "home"})
    assert "(its failure path is removing what the run made), so it was removed again: deleted snap-" in str(
        raised.value
    )
    assert world.ebs_snapshots() == {}  # the first attempt's snapshot too: the run is being discarded anyway


# -------------------------------------------------------------------------------------------------------- prune


def _seed_backup(world: World, backup_id: str, instance: str = "demo", status: str = COMPLETE) -> str:
    """A backup made earlier: an EBS snapshot and an RDS snapshot carrying the catalog tags."""
    home = [{"Key": k, "Value": v} for k, v in catalog_tags(instance, backup_id, "home", status).items()]
    snap = aws.client("ec2").create_snapshot(
        VolumeId=world.volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": home}]
    )["SnapshotId"]
    db = [{"Key": k, "Value": v} for k, v in catalog_tags(instance, backup_id, "database", status).items()]
    aws.client("rds").create_db_snapshot(DBSnapshotIdentifier=backup_id, DBInstanceIdentifier=DB, Tags=db)
    return snap


def test_prune_keeps_the_newest_complete_backups_and_nothing_else_is_touched(world: World) -> None:
    old = [f"demo-202611{day:02d}-020000" for day in range(1, 6)]  # five complete backups before this one
    home_of = {backup_id: _seed_backup(world, backup_id) for backup_id in old}
    unfinished = _seed_backup(world, "demo-20261102-120000", status="failed")
    other = _seed_backup(world, "other-20261101-020000", instance="other")
    # The same catalog tags, but without the tool's marker: someone else's snapshot.
    foreign_tags = [
        {"Key": k, "Value": v}
        for k, v in catalog_tags("demo", "demo-20261101-010000", "home", COMPLETE).items()
        if k != TOOL_TAG
    ]
    foreign = aws.client("ec2").create_snapshot(
        VolumeId=world.volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": foreign_tags}]
    )["SnapshotId"]
    aws.client("rds").create_db_snapshot(DBSnapshotIdentifier="manual-before-upgrade", DBInstanceIdentifier=DB)

    run = call(validate, validate_event())
    for part, copy in (("home", copy_home), ("database", copy_database)):
        call(copy, {"run": run, "part": part})
    summary = call(finalize, {"run": run, "unlocked": None})

    # keep_backups=3: this one and the two newest earlier ones stay.
    assert summary["pruned"] == old[:3]
    ebs = world.ebs_snapshots()
    rds = world.rds_snapshots()
    for backup_id in old[:3]:
        assert home_of[backup_id] not in ebs and backup_id not in rds
    for backup_id in old[3:]:
        assert home_of[backup_id] in ebs and backup_id in rds
    assert BACKUP_ID in rds and any(t.get(BACKUP_ID_TAG) == BACKUP_ID for t in ebs.values())
    for survivor in (unfinished, other, foreign):
        assert survivor in ebs
    for survivor in ("demo-20261102-120000", "other-20261101-020000", "manual-before-upgrade"):
        assert survivor in rds
