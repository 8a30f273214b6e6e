"""Whole executions against a Bitbucket (or something in front of it) that redirects, rate-limits, or outlives
the run record; and an instance configured with an insecure connection."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rehearsal.bitbucket_simulator import RedirectTarget
from tests.integration.conftest import World


@pytest.fixture
def elsewhere() -> Iterator[RedirectTarget]:
    with RedirectTarget() as target:
        yield target


def failure_note(world: World) -> dict[str, Any]:
    notes = world.failure_notifications()
    assert len(notes) == 1, notes  # one clear notification
    message = notes[0]["message"]
    return dict(json.loads(message[message.index("\n{") + 1 :]))


def test_an_unlock_answered_with_a_redirect_is_not_success(world: World, elsewhere: RedirectTarget) -> None:
    world.sim.inject("unlock", redirect_to=elsewhere.url, times=None)
    result = world.r.run_backup()
    assert result.status == "FAILED"
    assert world.sim.locked  # the redirect did not unlock anything
    note = failure_note(world)
    assert note["step"] == "unlock"
    assert "HTTP 302" in note["message"] and "redirect" in note["message"]
    # The failure path tried again with the stored token; it says Bitbucket is still locked and how to unlock.
    assert note["unlocked"].startswith("NO - unlock failed") and "unlock by hand" in note["unlocked"]
    assert elsewhere.arrived == []
    for secret in world.sim.issued_secrets:
        assert not elsewhere.received(secret)
        assert secret not in world.all_text(result)
    record = world.r.run_record()
    assert record is not None and record["unlock_token"]["S"] == world.sim.unlock_token  # kept for the hand unlock
    assert "expires_at" not in record  # and never deleted by TTL while it holds the token
    # The simulator speaks plain http, allowed by the opt-in: every run says so, in its log and its notification.
    warning = "INSECURE connection to Bitbucket (plain http (unencrypted))"
    assert any(warning in line for line in world.r.logs.lines)
    assert note["security_warning"].startswith(warning)


def test_the_rate_limiter_is_waited_out_and_the_run_record_outlives_the_execution(world: World) -> None:
    world.sim.rate_limit("poll", retry_after=0, times=2)  # the preflight
    world.sim.rate_limit("progress", retry_after=0)
    seen: list[dict[str, Any]] = []
    world.sim.inject("lock", before=lambda: seen.append(world.r.run_record() or {}))
    started = time.time()
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert [s for _, _, s in world.sim.requests if s == 429] == [429, 429, 429]
    assert not world.sim.locked

    machine = world.r.client("stepfunctions").describe_state_machine(stateMachineArn=world.r.state_machine_arn)
    timeout = json.loads(machine["definition"])["TimeoutSeconds"]
    guard = seen[0]
    assert guard["phase"]["S"] == "preparing"
    # The guard taken at validate expires only after the execution itself would have timed out.
    assert float(guard["expires_at"]["N"]) - started >= timeout


def during_the_drain_wait(world: World, action: Callable[[], None]) -> None:
    """Run `action` once, at the first poll of the drain wait (the preflight polls too, before the task runs)."""
    done: list[bool] = []

    def hook() -> None:
        task = world.sim.task
        if not done and task is not None and task["state"] == "RUNNING":
            done.append(True)
            action()

    world.sim.inject("poll", before=hook, times=None)


def test_a_lost_run_record_while_bitbucket_is_locked_is_reported(world: World) -> None:
    def lose_the_record_then_fail() -> None:
        # DynamoDB's TTL (or someone) removed the record while Bitbucket was locked; then the backup task fails.
        world.r.client("dynamodb").delete_item(TableName=world.r.table, Key={"instance": {"S": "demo"}})
        world.sim.fail_task("disk full on the shared home")

    during_the_drain_wait(world, lose_the_record_then_fail)
    result = world.r.run_backup()
    assert result.status == "FAILED"
    assert world.sim.locked
    note = failure_note(world)
    unlocked = note["unlocked"]
    # Not "this run never locked": the failure path asked Bitbucket, which is still in maintenance mode.
    assert unlocked.startswith("NO - Bitbucket is still in maintenance mode"), unlocked
    assert "record" in unlocked and "by hand" in unlocked and "Troubleshooting" in unlocked
    assert "still in maintenance mode" in (result.cause or "")
