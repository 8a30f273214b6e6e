"""The backup state machine end to end: the synthesized definition, real handlers, the simulator, moto."""

from __future__ import annotations

import json
import time
from typing import Any

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.rds.exceptions import RDSClientError
from moto.rds.models import RDSBackend

from functions.models.steps import BACKUP
from functions.strategies import COMPLETE
from tests.integration.conftest import PASSWORD, World, assert_failed_cleanly, backup_id_of, fail_backend


def test_happy_path_locks_drains_snapshots_and_unlocks(world: World) -> None:
    earlier = world.seed_earlier_backup()
    result = world.r.run_backup()

    assert result.status == "SUCCEEDED", result.cause
    sim = world.sim
    assert not sim.locked
    assert sim.progress_history == sorted(sim.progress_history) and sim.progress_history[-1] == 100
    names = sim.event_names()
    assert names.index("locked") < names.index("backup-started") < names.index("drained") < names.index("unlocked")
    backup_id = backup_id_of(result)
    assert backup_id and backup_id.startswith("demo-")
    snaps = world.r.snapshots(backup_id)
    # Only the configured home volume (/dev/xvdf), not the other attached one, plus the RDS snapshot.
    assert sorted((s["kind"], s["status"]) for s in snaps) == [("ebs-snapshot", COMPLETE), ("rds-snapshot", COMPLETE)]
    ebs = next(s for s in snaps if s["kind"] == "ebs-snapshot")
    assert ebs["volume_id"] == world.r.resources["volumes"]["/dev/xvdf"] and ebs["device"] == "/dev/xvdf"
    assert result.output and result.output["backup_id"] == backup_id
    assert result.output["lock_window_s"] >= result.output["drain_s"] > 0
    # The earlier backup is intact (keep_backups is 2, so nothing was pruned yet).
    assert {s["id"] for s in world.r.snapshots("demo-20200101-000000")} == set(earlier.values())
    assert world.r.notifications() == []
    assert world.r.run_record() is None
    text = world.all_text(result)
    assert not [s for s in sim.issued_secrets if s in text]


def test_seed_style_lines_in_order(world: World) -> None:
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED"
    seeds = [r["seed"] for r in world.r.logs.records() if "seed" in r]
    prefix = f"[{world.sim.url}]  INFO: "
    assert all(line.startswith(prefix) for line in seeds)
    messages = [line.removeprefix(prefix) for line in seeds]
    wanted = [
        "locked with",
        "backup started with",
        "db state 'DRAINED'",
        "scm state 'DRAINED'",
        "Backup progress updated to 100",
        "Bitbucket instance unlocked",
    ]
    positions = [next(i for i, m in enumerate(messages) if m.startswith(w)) for w in wanted]
    assert positions == sorted(positions), messages


def test_keep_backups_prunes_the_oldest_complete_backups_only(world: World) -> None:
    older = world.seed_earlier_backup("demo-20200101-000000")
    newer = world.seed_earlier_backup("demo-20200102-000000")
    world.r.configure(keep_backups=2)
    # Another tool's snapshot and another instance's: never touched.
    ec2 = world.r.client("ec2")
    foreign = ec2.create_snapshot(VolumeId=world.r.resources["volumes"]["/dev/xvdf"])["SnapshotId"]
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert result.output and result.output["pruned"] == ["demo-20200101-000000"]
    remaining = {s["id"] for s in world.r.snapshots()}
    assert not set(older.values()) & remaining
    assert set(newer.values()) <= remaining
    assert ec2.describe_snapshots(SnapshotIds=[foreign])["Snapshots"]


def test_wrong_password_fails_before_the_lock(world: World) -> None:
    world.r.client("secretsmanager").put_secret_value(
        SecretId="bitbucket/demo/backup-user", SecretString=json.dumps({"username": "admin", "password": "nope!"})
    )
    result = world.r.run_backup()
    assert_failed_cleanly(world, result, "validate")
    assert "locked" not in world.sim.event_names()
    assert "401" in world.failure_notifications()[0]["message"]


def test_already_locked_by_someone_else_leaves_their_lock_alone(world: World) -> None:
    world.sim.lock_by_other("nightly-script")
    their_token = world.sim.unlock_token
    earlier = world.seed_earlier_backup()
    result = world.r.run_backup()
    assert result.status == "FAILED"
    assert result.error == "AlreadyLocked"
    assert world.sim.locked and world.sim.unlock_token == their_token and world.sim.lock_owner == "nightly-script"
    # Nobody tried to unlock their lock.
    assert not [r for r in world.sim.requests if r[0] == "DELETE"]
    notes = world.failure_notifications()
    assert len(notes) == 1 and "never locked" in notes[0]["message"]
    assert {s["id"] for s in world.r.snapshots("demo-20200101-000000")} == set(earlier.values())
    assert world.r.run_record() is None


def test_never_drains_times_out_cancels_and_unlocks(world_factory: Any) -> None:
    w = world_factory(drain_seconds=None, timing={"drain_timeout_seconds": 1, "poll_interval_seconds": 0})
    result = w.r.run_backup()
    assert_failed_cleanly(w, result, "wait-drained")
    assert result.error == "DrainTimeout"
    assert not w.sim.locked
    assert w.sim.task and w.sim.task["state"] == "CANCELLED"


def test_cancel_pressed_in_bitbucket_ui_stops_and_unlocks(world_factory: Any) -> None:
    w = world_factory(drain_seconds=30)
    execution = w.r.start()
    deadline = time.monotonic() + 20
    while "backup-started" not in w.sim.event_names() and time.monotonic() < deadline:
        time.sleep(0.01)
    w.sim.cancel_from_ui()
    result = w.r.wait(execution)
    assert_failed_cleanly(w, result, "wait-drained")
    assert result.error == "BackupCancelled"
    assert not w.sim.locked


def test_503_on_a_poll_is_retried_and_the_backup_succeeds(world: World) -> None:
    world.sim.inject("poll", status=503, times=2)
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert [r for r in world.sim.requests if r[2] == 503]
    assert not world.sim.locked


def test_unlock_failing_once_is_retried(world: World) -> None:
    world.sim.inject("unlock", status=500, times=1)
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert not world.sim.locked
    assert [r for r in world.sim.requests if r[0] == "DELETE" and r[2] == 500]


def test_ebs_snapshot_error_under_the_lock(world: World) -> None:
    earlier = world.seed_earlier_backup()
    with fail_backend(EBSBackend, "create_snapshots", EC2ClientError("InternalError", "EBS is having a day")):
        result = world.r.run_backup()
    assert_failed_cleanly(world, result, "copy", earlier=earlier)
    assert result.error == "SnapshotFailed"
    assert "home: CreateSnapshots failed: InternalError" in (result.cause or "")
    assert not world.sim.locked


def test_ebs_snapshot_rate_limit_is_retried(world: World) -> None:
    error = EC2ClientError("SnapshotCreationPerVolumeRateExceeded", "slow down")
    with fail_backend(EBSBackend, "create_snapshots", error, times=1):
        result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert len(world.r.snapshots(backup_id_of(result))) == 2


def test_rds_snapshot_error_under_the_lock(world: World) -> None:
    earlier = world.seed_earlier_backup()
    error = RDSClientError("InvalidDBInstanceState", "the instance is being modified")
    with fail_backend(RDSBackend, "create_db_snapshot", error):
        result = world.r.run_backup()
    assert_failed_cleanly(world, result, "copy", earlier=earlier)
    assert "database: snapshot of bitbucket-demo failed: InvalidDBInstanceState" in (result.cause or "")


def test_snapshot_ending_in_error_after_the_unlock(world: World) -> None:
    earlier = world.seed_earlier_backup()
    original = EBSBackend.create_snapshots

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        snapshots = original(self, *args, **kwargs)
        for snapshot in snapshots:
            snapshot.status = "error"
        return snapshots

    from unittest import mock

    with mock.patch.object(EBSBackend, "create_snapshots", broken):
        result = world.r.run_backup()
    assert_failed_cleanly(world, result, "wait-snapshots", earlier=earlier, after_unlock=True)
    note = world.failure_notifications()[0]["message"]
    assert "unlocked before the failure" in note
    # The run's RDS snapshot was removed too: nothing half-made stays.
    assert world.r.snapshots(backup_id_of(result)) == []


def test_pending_snapshots_are_waited_for_after_the_unlock(world: World) -> None:
    original_create, original_describe = EBSBackend.create_snapshots, EBSBackend.describe_snapshots
    calls = {"n": 0}

    def pending(self: Any, *args: Any, **kwargs: Any) -> Any:
        snapshots = original_create(self, *args, **kwargs)
        for snapshot in snapshots:
            snapshot.status = "pending"
        return snapshots

    def describe(self: Any, *args: Any, **kwargs: Any) -> Any:
        found = original_describe(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 4:
            for snapshot in found:
                if snapshot.status == "pending":
                    snapshot.status = "completed"
        return found

    from unittest import mock

    with (
        mock.patch.object(EBSBackend, "create_snapshots", pending),
        mock.patch.object(EBSBackend, "describe_snapshots", describe),
    ):
        result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert result.states_entered().count(BACKUP.wait_snapshots.state) >= 2
    # Unlocked before the snapshots completed.
    entered = result.states_entered()
    assert entered.index(BACKUP.unlock.state) < entered.index("Wait for snapshots")


def test_bad_execution_input_is_rejected_before_any_lock(world: World) -> None:
    result = world.r.run_backup({"instance": "demo", "extra": 1})
    assert result.status == "FAILED"
    assert result.error == "InvalidInput"
    assert "extra" in (result.cause or "")
    assert "locked" not in world.sim.event_names()
    unknown = world.r.run_backup({"instance": "nope"})
    assert unknown.error == "UnknownInstance" and "nope" in (unknown.cause or "")


def test_password_never_leaks_even_on_failure(world: World) -> None:
    world.sim.inject("start", status=500)
    result = world.r.run_backup()
    assert_failed_cleanly(world, result, "start-backup")
    assert PASSWORD not in world.all_text(result)
