"""One test per row of the fault matrix (fault_matrix.py), each asserting the invariants of its outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from functions.models.steps import FAILED_PREFIX
from functions.strategies import COMPLETE
from rehearsal.runtime import RunResult
from tests.integration import fault_matrix as fm
from tests.integration.conftest import EARLIER, World, assert_failed_cleanly, backup_id_of, wait_for, waiting_in

ROOT = Path(__file__).resolve().parents[2]


def _run(w: World, fault: fm.Fault) -> RunResult:
    sfn = w.r.client("stepfunctions")
    if fault.scenario == "stop-locked":
        execution = w.r.start()
        wait_for(lambda: waiting_in(w, execution, "Wait for drain"))
        sfn.stop_execution(executionArn=execution, error="Operator", cause="Stop pressed")
        return w.r.wait(execution)
    if fault.scenario == "stop-unlocked":
        from unittest import mock

        from moto.ec2.models.elastic_block_store import EBSBackend

        original = EBSBackend.create_snapshots

        def pending(self: Any, *args: Any, **kwargs: Any) -> Any:
            made = original(self, *args, **kwargs)
            for snapshot in made:
                snapshot.status = "pending"
            return made

        w.r.configure(timing={**w.r.instance_config["timing"], "snapshot_poll_interval_seconds": 1})
        with mock.patch.object(EBSBackend, "create_snapshots", pending):
            execution = w.r.start()
            # Stop while it waits (not mid-task), as an operator pressing Stop most likely would.
            wait_for(lambda: waiting_in(w, execution, "Wait for snapshots"))
            sfn.stop_execution(executionArn=execution, error="Operator", cause="Stop pressed")
            return w.r.wait(execution)
    if fault.scenario == "overlap":
        first = w.r.start()
        wait_for(lambda: "locked" in w.sim.event_names())
        second = w.r.wait(w.r.start())
        assert "Skipped: backup in progress" in second.states_entered()
        return w.r.wait(first)
    if fault.scenario == "locked-by-other":
        w.sim.lock_by_other("nightly-script")
    return w.r.run_backup()


def _no_leak(w: World, result: RunResult) -> None:
    text = w.all_text(result)
    leaked = [s for s in w.sim.issued_secrets if s in text]
    assert not leaked, "a password or token leaked"


@pytest.mark.parametrize("fault", fm.FAULTS, ids=[f.id for f in fm.FAULTS])
def test_fault(world_factory: Any, fault: fm.Fault) -> None:
    timing = {"http_timeout_seconds": fm.HTTP_TIMEOUT_S, "http_backoff_seconds": 0.01, **dict(fault.timing)}
    w: World = world_factory(**{"drain_seconds": 0.05, **dict(fault.world)}, timing=timing)
    earlier = w.seed_earlier_backup()
    with (fault.inject or fm._nothing)(w):
        result = _run(w, fault)

    earlier_snaps = w.r.snapshots(EARLIER)
    assert {s["id"] for s in earlier_snaps} == set(earlier.values()), "an earlier backup was touched"
    assert all(s["status"] == COMPLETE for s in earlier_snaps)
    _no_leak(w, result)
    if fm.ZERO_DOWNTIME in fault.world:
        asked = {(method, path) for method, path, _ in w.sim.requests}
        assert asked <= {("GET", "/rest/api/1.0/application-properties")}, "a zero-downtime run used the lock API"

    if fault.outcome in (fm.SUCCEEDS, fm.SKIPPED):
        assert result.status == "SUCCEEDED", result.cause
        assert not w.sim.locked and w.sim.progress_history[-1] == 100
        assert w.failure_notifications() == []
        assert all(s["status"] == COMPLETE for s in w.r.snapshots(backup_id_of(result)))
        # Said once, also when a retried unlock sent it again (Bitbucket refused the repeat).
        said = [r["seed"] for r in w.r.logs.records() if "seed" in r]
        assert sum(line.endswith("Backup progress updated to 100") for line in said) == 1, said
        if fault.outcome == fm.SKIPPED:
            assert w.sim.event_names().count("locked") == 1
    elif fault.outcome == fm.NEVER_LOCKED:
        assert result.status == "FAILED" and FAILED_PREFIX + fault.step in result.states_entered()
        assert "locked" not in [n for n in w.sim.event_names() if n == "locked"] or w.sim.lock_owner != "admin"
        assert not [r for r in w.sim.requests if r[0] == "DELETE"], "someone else's lock was touched"
        notes = w.failure_notifications()
        assert len(notes) == 1 and "never locked" in notes[0]["message"]
        assert w.r.run_record() is None
    elif fault.outcome == fm.UNCONFIRMED:
        assert result.status == "FAILED" and result.error == "LockNotConfirmed"
        notes = w.failure_notifications()
        assert len(notes) == 1 and "UNKNOWN" in notes[0]["message"] and "by hand" in notes[0]["message"]
        assert w.sim.locked  # without the token nothing can unlock it; the operator is told how
    elif fault.outcome == fm.ABORTED:
        assert result.status == "ABORTED"
        assert not w.sim.locked
        notes = w.r.notifications()
        assert len(notes) == 1 and "safety net" in notes[0]["subject"]
        assert w.r.snapshots(backup_id_of(result)) == []
        assert w.r.run_record() is None
        if fault.scenario == "stop-locked":
            assert 100 not in w.sim.progress_history
    else:
        assert fault.step
        assert_failed_cleanly(w, result, fault.step, after_unlock=fault.outcome == fm.FAILS_AFTER_100)


def test_the_documented_matrix_is_the_tested_one() -> None:
    documented = (ROOT / "docs" / "fault-matrix.md").read_text()
    assert documented == fm.render_markdown(), "docs/fault-matrix.md is stale: run `make fault-matrix`"


def test_the_matrix_is_big_enough_and_ids_are_unique() -> None:
    ids = [f.id for f in fm.FAULTS]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 40
