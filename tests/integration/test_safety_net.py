"""The safety net and the concurrency guard: Stop pressed while locked, overlapping executions, idempotence."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

from moto.ec2.models.elastic_block_store import EBSBackend

from functions.strategies import COMPLETE
from tests.integration.conftest import World, backup_id_of, wait_for, waiting_in


def _stop(w: World, execution: str) -> None:
    w.r.client("stepfunctions").stop_execution(executionArn=execution, error="Operator", cause="pressed Stop")


def test_stop_while_locked_is_unlocked_by_the_safety_net(world_factory: Any) -> None:
    w = world_factory(drain_seconds=30, timing={"poll_interval_seconds": 1, "drain_poll_slice_seconds": 1})
    earlier = w.seed_earlier_backup()
    execution = w.r.start()
    wait_for(lambda: waiting_in(w, execution, "Wait for drain"))
    _stop(w, execution)
    result = w.r.wait(execution)
    assert result.status == "ABORTED"
    assert not w.sim.locked
    assert w.sim.task and w.sim.task["state"] == "CANCELLED"
    notes = w.r.notifications()
    assert len(notes) == 1 and "ABORTED" in notes[0]["subject"] and "safety net" in notes[0]["subject"]
    assert "unlocked: yes (by the safety net)" in notes[0]["message"]
    assert w.r.run_record() is None
    assert 100 not in w.sim.progress_history
    assert {s["id"] for s in w.r.snapshots("demo-20200101-000000")} == set(earlier.values())
    assert not [s for s in w.sim.issued_secrets if s in json.dumps(notes) + "\n".join(w.r.logs.lines)]


def test_stop_while_waiting_for_snapshots_removes_the_unfinished_backup(world: World) -> None:
    original = EBSBackend.create_snapshots

    def pending(self: Any, *args: Any, **kwargs: Any) -> Any:
        snapshots = original(self, *args, **kwargs)
        for snapshot in snapshots:
            snapshot.status = "pending"  # never completes
        return snapshots

    world.r.configure(timing={**world.r.instance_config["timing"], "snapshot_poll_interval_seconds": 1})
    with mock.patch.object(EBSBackend, "create_snapshots", pending):
        execution = world.r.start()
        wait_for(lambda: waiting_in(world, execution, "Wait for snapshots"), seconds=60)
        _stop(world, execution)
        result = world.r.wait(execution)
    assert result.status == "ABORTED"
    backup_id = backup_id_of(result)
    assert world.r.snapshots(backup_id) == []
    notes = world.r.notifications()
    assert len(notes) == 1 and "unlocked before the execution ended" in notes[0]["message"]


def test_a_failure_handled_by_its_own_path_gets_no_second_notification(world_factory: Any) -> None:
    w = world_factory(drain_seconds=None, timing={"drain_timeout_seconds": 1})
    result = w.r.run_backup()
    assert result.status == "FAILED"
    assert [d["result"]["action"] for d in w.r.delivered] == ["none"]
    assert len(w.r.notifications()) == 1


def test_success_is_not_delivered_to_the_safety_net(world: World) -> None:
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED"
    assert world.r.delivered == []


def test_the_safety_net_acts_once(world_factory: Any) -> None:
    w = world_factory(drain_seconds=30)
    execution = w.r.start()
    wait_for(lambda: "backup-started" in w.sim.event_names())
    _stop(w, execution)
    w.r.wait(execution)
    assert w.r.delivered[-1]["result"]["action"] == "cleaned"
    # EventBridge delivers at least once: a second delivery of the same event finds nothing to do.
    w.r._deliver_status_change(w.r.client("stepfunctions").describe_execution(executionArn=execution))
    assert w.r.delivered[-1]["result"]["action"] == "none"
    assert len(w.r.notifications()) == 1


def test_two_executions_at_once_the_second_is_skipped_quietly(world_factory: Any) -> None:
    w = world_factory(drain_seconds=1.5)
    first = w.r.start()
    wait_for(lambda: "locked" in w.sim.event_names())
    second = w.r.wait(w.r.start())
    done = w.r.wait(first)
    assert done.status == "SUCCEEDED", done.cause
    assert second.status == "SUCCEEDED"
    assert "Skipped: backup in progress" in second.states_entered()
    assert w.sim.event_names().count("locked") == 1
    assert w.r.notifications() == []
    assert all(s["status"] == COMPLETE for s in w.r.snapshots(backup_id_of(done)))


def test_stop_while_locked_with_the_run_record_gone_reports_that_bitbucket_is_still_locked(world_factory: Any) -> None:
    # The record (with its unlock token) expired or was removed by hand: the net cannot unlock, but it must not
    # assume that this execution never locked either; it asks Bitbucket and says so, once.
    w = world_factory(drain_seconds=30, timing={"poll_interval_seconds": 1, "drain_poll_slice_seconds": 1})
    execution = w.r.start()
    wait_for(lambda: waiting_in(w, execution, "Wait for drain"))
    w.r.client("dynamodb").delete_item(TableName=w.r.table, Key={"instance": {"S": "demo"}})
    _stop(w, execution)
    assert w.r.wait(execution).status == "ABORTED"
    assert w.sim.locked  # nothing could unlock it: the token was in the record
    assert w.r.delivered[-1]["result"]["action"] == "reported"
    notes = w.r.notifications()
    assert len(notes) == 1 and "may still be locked" in notes[0]["subject"]
    assert "NO - Bitbucket is still in maintenance mode" in notes[0]["message"]
    assert not [s for s in w.sim.issued_secrets if s in json.dumps(notes) + "\n".join(w.r.logs.lines)]


def test_a_stop_before_anything_was_locked_and_no_record_stays_quiet(world_factory: Any) -> None:
    w = world_factory(drain_seconds=30, timing={"poll_interval_seconds": 1, "drain_poll_slice_seconds": 1})
    execution = w.r.start()
    wait_for(lambda: waiting_in(w, execution, "Wait for drain"))
    record = w.r.run_record()
    assert record is not None
    w.r.client("dynamodb").delete_item(TableName=w.r.table, Key={"instance": {"S": "demo"}})
    # As if the operator had ended maintenance by hand (restarting Bitbucket) before pressing Stop.
    w.sim.unlock_by_other()
    _stop(w, execution)
    assert w.r.wait(execution).status == "ABORTED"
    assert w.r.delivered[-1]["result"] == {
        "action": "none",
        "reason": "no run of this execution is open and Bitbucket is not locked",
    }
    assert w.r.notifications() == []
