"""Zero-downtime backups end to end: the synthesized state machine, real handlers, the simulator, moto.

Without a lock, Bitbucket must see nothing but the version check: no lock, no backup task, no drain poll, no
progress, no unlock, not even a read of the maintenance state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from functions.models.steps import BACKUP
from functions.strategies import COMPLETE
from tests.integration.conftest import World, backup_id_of

ZERO_DOWNTIME = {"zero_downtime": True}
PROPERTIES = ("GET", "/rest/api/1.0/application-properties")
LOCKED_STATES = {
    BACKUP.lock.state,
    BACKUP.start_backup.state,
    BACKUP.wait_drained.state,
    "Report home progress",
    "Report database progress",
    BACKUP.unlock.state,
}


def zero_downtime_world(world_factory: Callable[..., World], **kwargs: Any) -> World:
    return world_factory(instance_overrides=ZERO_DOWNTIME, **kwargs)


def only_the_version_was_asked(w: World) -> None:
    assert {(method, path) for method, path, _ in w.sim.requests} <= {PROPERTIES}, w.sim.requests
    assert not w.sim.locked and w.sim.task is None and w.sim.progress_history == []
    assert "locked" not in w.sim.event_names()


def test_zero_downtime_backup_never_locks_and_makes_complete_snapshots(world_factory: Callable[..., World]) -> None:
    w = zero_downtime_world(world_factory, drain_seconds=None)  # a lock could never drain: it must not be asked for
    volumes = w.r.resources["volumes"]
    # Home and data volume, snapshotted together: one CreateSnapshots is crash-consistent across them.
    w.r.configure(home={**w.r.instance_config["home"], "volumes": ["/dev/xvdf", "/dev/xvdg"]})
    earlier = w.seed_earlier_backup()

    result = w.r.run_backup()

    assert result.status == "SUCCEEDED", result.cause
    only_the_version_was_asked(w)
    assert [r[2] for r in w.sim.requests] == [200]
    entered = result.states_entered()
    assert not LOCKED_STATES & set(entered), entered
    assert "Report home progress" not in entered and "Report database progress" not in entered
    backup_id = backup_id_of(result)
    snaps = w.r.snapshots(backup_id)
    assert sorted((s["kind"], s.get("volume_id"), s["status"]) for s in snaps) == sorted(
        [
            ("ebs-snapshot", volumes["/dev/xvdf"], COMPLETE),
            ("ebs-snapshot", volumes["/dev/xvdg"], COMPLETE),
            ("rds-snapshot", None, COMPLETE),
        ]
    )
    assert result.output
    assert result.output["zero_downtime"] is True
    assert result.output["lock_window_s"] == 0 and result.output["drain_s"] == 0
    assert {s["id"] for s in w.r.snapshots("demo-20200101-000000")} == set(earlier.values())
    assert w.r.notifications() == [] and w.r.run_record() is None
    seeds = [r["seed"] for r in w.r.logs.records() if "seed" in r]
    assert any("zero-downtime backup" in line and "8.19.1" in line for line in seeds), seeds


def test_the_locked_backup_is_unchanged_and_reports_it(world: World) -> None:
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert result.output and result.output["zero_downtime"] is False and result.output["lock_window_s"] > 0
    assert BACKUP.unlock.state in result.states_entered()


def test_bitbucket_older_than_4_8_fails_in_validate_without_a_lock(world_factory: Callable[..., World]) -> None:
    w = zero_downtime_world(world_factory, version="4.7.1")
    result = w.r.run_backup()

    assert result.status == "FAILED"
    entered = result.states_entered()
    assert "Failed: validate" in entered and BACKUP.prepare.state not in entered
    only_the_version_was_asked(w)
    notes = w.failure_notifications()
    assert len(notes) == 1, notes
    message = notes[0]["message"]
    assert "at step validate" in notes[0]["subject"]
    assert "4.7.1" in message and "4.8 or later" in message and "never locked" in message
    assert w.r.snapshots() == [] and w.r.run_record() is None


def test_bitbucket_unreachable_fails_clearly_in_validate(world_factory: Callable[..., World]) -> None:
    w = zero_downtime_world(world_factory)
    w.sim.inject("properties", drop=True, times=None)
    result = w.r.run_backup()

    assert result.status == "FAILED" and "Failed: validate" in result.states_entered()
    assert not w.sim.locked and w.sim.event_names().count("locked") == 0
    assert all((method, path) == PROPERTIES for method, path, _ in w.sim.requests)
    notes = w.failure_notifications()
    assert len(notes) == 1
    message = notes[0]["message"]
    assert "Bitbucket's version" in message and "could not be read" in message and "connection" in message
    assert w.r.snapshots() == [] and w.r.run_record() is None


def test_a_failed_copy_removes_the_snapshots_and_touches_no_lock(world_factory: Callable[..., World]) -> None:
    from moto.rds.exceptions import RDSClientError
    from moto.rds.models import RDSBackend

    from tests.integration.conftest import fail_backend

    w = zero_downtime_world(world_factory)
    with fail_backend(RDSBackend, "create_db_snapshot", RDSClientError("InvalidDBInstanceState", "injected")):
        result = w.r.run_backup()

    assert result.status == "FAILED" and "Failed: copy" in result.states_entered()
    only_the_version_was_asked(w)
    notes = w.failure_notifications()
    assert len(notes) == 1 and "zero-downtime backup: this run never locked Bitbucket" in notes[0]["message"]
    assert w.r.snapshots(backup_id_of(result)) == []  # the home snapshot made in parallel is gone again
    assert w.r.run_record() is None


def test_the_rehearsal_cli_rehearses_zero_downtime(tmp_path: Any, capsys: Any) -> None:
    import json

    from rehearsal import cli

    out = tmp_path / "summary.json"
    code = cli.main(["--zero-downtime", "--drain-seconds", "0", "--no-restore", "--quiet", "--json", str(out)])
    assert code == 0, capsys.readouterr()
    summary = json.loads(out.read_text())
    assert summary["status"] == "SUCCEEDED" and summary["zero_downtime"] is True and summary["lock_window_s"] == 0
    assert "Bitbucket was never locked" in capsys.readouterr().out

    code = cli.main(["--zero-downtime", "--bitbucket-version", "4.0.0", "--quiet", "--json", str(out)])
    summary = json.loads(out.read_text())
    assert code == 1 and summary["error"]["step"] == "validate" and "4.0.0" in summary["error"]["message"]


def test_zero_downtime_copies_ebs_mesh_nodes_without_a_lock_or_a_progress_report(
    world_factory: Callable[..., World],
) -> None:
    w = zero_downtime_world(world_factory, drain_seconds=None, mesh_nodes=2)
    result = w.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    only_the_version_was_asked(w)
    entered = result.states_entered()
    assert "Mesh nodes copied without a lock" in entered and "Report Mesh nodes progress" not in entered
    parts = sorted(s["part"] for s in w.r.snapshots(backup_id_of(result)))
    assert parts == ["database", "home", "mesh-node1", "mesh-node2"]
