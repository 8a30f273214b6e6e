"""Strategy variants of the backup workflow: flush and freeze on the host, several volumes, Aurora, home only."""

from __future__ import annotations

from typing import Any
from unittest import mock

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_block_store import EBSBackend

from tests.integration.conftest import assert_failed_cleanly, backup_id_of, fail_backend


def _ebs(w: Any, **home: Any) -> None:
    current = dict(w.r.instance_config["home"])
    current.update(home)
    w.r.configure(home=current)


def test_flush_and_freeze_run_on_the_host_and_unfreeze_follows(world: Any) -> None:
    mount = world.r.host.root / "bitbucket-home"
    mount.mkdir()
    _ebs(world, mount_points=[str(mount)], freeze=True, max_freeze_seconds=30)
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    scripts = [c.script for c in world.r.host.commands]
    assert any("sync -f" in s for s in scripts)
    assert all(c.status == "Success" for c in world.r.host.commands)
    assert world.r.host.freezes() == [f"-f {mount}", f"-u {mount}"]


def test_unfreeze_runs_even_when_the_snapshot_fails(world: Any) -> None:
    mount = world.r.host.root / "bitbucket-home"
    mount.mkdir()
    _ebs(world, mount_points=[str(mount)], freeze=True)
    with fail_backend(EBSBackend, "create_snapshots", EC2ClientError("InternalError", "boom")):
        result = world.r.run_backup()
    assert_failed_cleanly(world, result, "copy")
    freezes = world.r.host.freezes()
    assert freezes[0] == f"-f {mount}" and freezes[-1] == f"-u {mount}"


def test_flush_failure_on_the_host_fails_the_step_and_unlocks(world: Any) -> None:
    _ebs(world, mount_points=["/nonexistent/bitbucket-home"])
    result = world.r.run_backup()
    assert_failed_cleanly(world, result, "copy")
    assert result.error == "HostCommandFailed"
    assert "home: flush" in (result.cause or "") and "Failed" in (result.cause or "")


def test_ssm_command_timing_out_is_a_step_failure(world: Any) -> None:
    mount = world.r.host.root / "home"
    mount.mkdir()
    _ebs(world, mount_points=[str(mount)])
    world.r.host.faults[world.r.resources["ec2_instance"]] = "TimedOut"
    result = world.r.run_backup()
    assert_failed_cleanly(world, result, "copy")
    assert "TimedOut" in (result.cause or "")


def test_several_volumes_are_snapshotted_together(world: Any) -> None:
    _ebs(world, volumes=["/dev/xvdf", world.r.resources["volumes"]["/dev/xvdg"]])
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    snaps = [s for s in world.r.snapshots(backup_id_of(result)) if s["kind"] == "ebs-snapshot"]
    assert sorted(s["device"] for s in snaps) == ["/dev/xvdf", "/dev/xvdg"]


def test_volume_not_attached_fails_before_the_lock(world: Any) -> None:
    _ebs(world, volumes=["/dev/xvdz"])
    result = world.r.run_backup()
    assert_failed_cleanly(world, result, "validate")
    assert "/dev/xvdz is not attached" in (result.cause or "")
    assert "locked" not in world.sim.event_names()


def test_aurora_cluster_snapshot(world_factory: Any) -> None:
    w = world_factory(database="amazon-aurora")
    result = w.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    kinds = sorted(s["kind"] for s in w.r.snapshots(backup_id_of(result)))
    assert kinds == ["ebs-snapshot", "rds-cluster-snapshot"]


def test_home_only_skips_the_database_branch(world_factory: Any) -> None:
    w = world_factory(database="none")
    result = w.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert "No database to copy" in result.states_entered()
    assert w.sim.progress_history == [90, 100]


def test_every_log_line_after_validate_names_instance_and_backup_id(world: Any) -> None:
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED"
    backup_id = backup_id_of(result)
    records = [r for r in world.r.logs.records() if r.get("step") not in (None, "validate")]
    assert records
    assert all(r.get("instance") == "demo" and r.get("backup_id") == backup_id for r in records)


def test_lock_lost_in_transit_is_reported_loudly(world: Any) -> None:
    # The lock POST reaches Bitbucket, but the answer is lost: we cannot know the token.
    world.sim.inject("lock", drop=True, after_action=True)
    result = world.r.run_backup()
    assert result.status == "FAILED" and result.error == "LockNotConfirmed"
    notes = world.failure_notifications()
    assert len(notes) == 1 and "UNKNOWN" in notes[0]["message"] and "by hand" in notes[0]["message"]
    assert world.sim.locked  # nothing could unlock it without the token; the operator is told
    text = world.all_text(result)
    assert not [s for s in world.sim.issued_secrets if s in text]


def test_a_retried_lock_invocation_reuses_the_saved_token(world: Any) -> None:
    from rehearsal import lambda_runtime

    original = lambda_runtime.LambdaRuntime.invoke
    seen = {"lock": 0}

    def flaky(self: Any, backend: Any, function_name: str, *args: Any) -> bytes:
        payload = original(self, backend, function_name, *args)
        if function_name.startswith("Lock") and seen["lock"] == 0:
            seen["lock"] += 1
            args[-1]["x-amz-function-error"] = "Unhandled"
            return b'{"errorType": "Lambda.ServiceException", "errorMessage": "lost after the lock"}'
        return payload

    with mock.patch.object(lambda_runtime.LambdaRuntime, "invoke", flaky):
        result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert world.sim.event_names().count("locked") == 1
    assert not world.sim.locked


def test_password_rotated_mid_backup_is_picked_up_from_the_secret(world_factory: Any, monkeypatch: Any) -> None:
    import json
    import time

    from rehearsal import lambda_runtime

    # Credentials are cached in each Lambda environment (as in production); the rotation happens while Bitbucket is
    # locked, after the progress function's environments (one per part, when the two reports overlap) read the
    # password and before the final report.
    monkeypatch.setitem(lambda_runtime.LAMBDA_OVERRIDES, "SECRET_CACHE_SECONDS", "300")
    w = world_factory(drain_seconds=1.0, timing={"poll_interval_seconds": 0})
    execution = w.r.start()
    deadline = time.monotonic() + 20
    while len(w.sim.progress_history) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    w.sim._password = "Rotated-Passw0rd!"
    w.r.client("secretsmanager").put_secret_value(
        SecretId="bitbucket/demo/backup-user",
        SecretString=json.dumps({"username": "admin", "password": "Rotated-Passw0rd!"}),
    )
    result = w.r.wait(execution)
    assert result.status == "SUCCEEDED", result.cause
    assert not w.sim.locked and w.sim.progress_history[-1] == 100
    assert [r for r in w.sim.requests if r[2] == 401], "the old password should have been refused once"
    from tests.integration.conftest import PASSWORD

    text = w.all_text(result)
    assert "Rotated-Passw0rd!" not in text and PASSWORD not in text
