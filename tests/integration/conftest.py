"""Whole executions of the synthesized state machine in the rehearsal runtime, against the simulator."""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest

from bitbucket_backup_cli.main import main
from functions.models.steps import BACKUP, FAILED_PREFIX
from functions.strategies import COMPLETE, catalog_tags
from rehearsal.bitbucket_simulator import BitbucketSimulator
from rehearsal.fake_account import REGION
from rehearsal.runtime import Rehearsal, RunResult
from rehearsal.serve import LocalEndpoint

PASSWORD = "Integration-Passw0rd!"
EARLIER = "demo-20200101-000000"


@dataclass
class World:
    sim: BitbucketSimulator
    r: Rehearsal

    def seed_earlier_backup(self, backup_id: str = EARLIER) -> dict[str, str]:
        """A complete backup made before this test: it must survive whatever the test does."""
        tags = [{"Key": k, "Value": v} for k, v in catalog_tags("demo", backup_id, "home", COMPLETE).items()]
        ec2 = self.r.client("ec2")
        volume = self.r.resources["volumes"]["/dev/xvdf"]
        snap = ec2.create_snapshot(VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}])
        db_tags = [{"Key": k, "Value": v} for k, v in catalog_tags("demo", backup_id, "database", COMPLETE).items()]
        self.r.client("rds").create_db_snapshot(
            DBSnapshotIdentifier=backup_id, DBInstanceIdentifier=self.r.resources["db_instance"], Tags=db_tags
        )
        return {"home": snap["SnapshotId"], "database": backup_id}

    def all_text(self, result: RunResult) -> str:
        """Everything a secret could leak into: log lines, execution history, output, notifications."""
        return "\n".join(
            [
                *self.r.logs.lines,
                json.dumps(result.history, default=str),
                json.dumps(result.output, default=str),
                str(result.cause),
                json.dumps(self.r.notifications(), default=str),
            ]
        )

    def failure_notifications(self) -> list[dict[str, Any]]:
        return [n for n in self.r.notifications() if "FAILED" in (n["subject"] or "")]


@pytest.fixture
def world_factory() -> Iterator[Callable[..., World]]:
    opened: list[tuple[BitbucketSimulator, Rehearsal]] = []

    def make(drain_seconds: float | None = 0.05, version: str = "8.19.1", **kwargs: Any) -> World:
        sim = BitbucketSimulator(password=PASSWORD, drain_seconds=drain_seconds, version=version).start()
        r = Rehearsal(sim.url, password=PASSWORD, **kwargs).__enter__()
        opened.append((sim, r))
        return World(sim, r)

    yield make
    for sim, r in reversed(opened):
        r.__exit__(None, None, None)
        sim.stop()


@pytest.fixture
def world(world_factory: Callable[..., World]) -> World:
    return world_factory()


@pytest.fixture
def served(world_factory: Callable[..., World]) -> Iterator[Callable[..., tuple[World, LocalEndpoint]]]:
    """Worlds served over HTTP on 127.0.0.1, for the operator command line (rehearsal/serve.py)."""
    with contextlib.ExitStack() as stack:

        def make(**kwargs: object) -> tuple[World, LocalEndpoint]:
            w = world_factory(**kwargs)
            return w, stack.enter_context(LocalEndpoint(w.r))

        yield make


def command_line(endpoint: LocalEndpoint, *args: str) -> tuple[int, str, str]:
    """`bitbucket-backup` against a served world: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--endpoint-url", endpoint.url, "--region", REGION, *args])
    return code, out.getvalue(), err.getvalue()


def waiting_in(w: World, execution: str, state: str) -> bool:
    """Is the execution sitting in this Wait state right now (a moment an operator could press Stop)?"""
    events = w.r.client("stepfunctions").get_execution_history(executionArn=execution, maxResults=1000)["events"]
    latest = events[-1] if events else {}
    return bool(latest.get("type") == "WaitStateEntered" and latest["stateEnteredEventDetails"]["name"] == state)


def wait_for(predicate: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def backup_id_of(result: RunResult) -> str | None:
    for event in result.history:
        details = event.get("stateExitedEventDetails")
        if details and details.get("name") == BACKUP.validate.state:
            run = json.loads(details["output"]).get("run") or {}
            return str(run["backup_id"]) if "backup_id" in run else None
    return None


def assert_failed_cleanly(
    w: World, result: RunResult, step: str, *, earlier: dict[str, str] | None = None, after_unlock: bool = False
) -> None:
    """The invariants of every failure: unlocked, no 100 (unless the failure came after the unlock, when the
    copy under the lock had finished), one notification, nothing complete, no leak."""
    assert result.status == "FAILED", result.cause
    assert FAILED_PREFIX + step in result.states_entered(), result.states_entered()
    assert not w.sim.locked or w.sim.lock_owner != "admin"
    if not after_unlock:
        assert 100 not in w.sim.progress_history
    notes = w.failure_notifications()
    assert len(notes) == 1, notes
    assert f"at step {step}" in notes[0]["subject"]
    assert "unlocked: yes" in notes[0]["message"], notes[0]["message"]
    backup_id = backup_id_of(result)
    if backup_id:
        leftovers = [s for s in w.r.snapshots(backup_id) if s["status"] == COMPLETE]
        assert leftovers == [], leftovers
    if earlier:
        snaps = {s["id"]: s for s in w.r.snapshots(EARLIER)}
        assert set(earlier.values()) <= set(snaps), snaps
        assert all(s["status"] == COMPLETE for s in snaps.values())
    text = w.all_text(result)
    for secret in w.sim.issued_secrets:
        assert secret not in text, "a secret leaked"
    assert w.r.run_record() is None, "the run's guard/tokens were not released"


def fail_backend(target: Any, method: str, error: Exception, times: int = 1) -> Any:
    """Make one moto backend method raise an AWS error the next `times` calls."""
    original = getattr(target, method)
    calls = {"n": 0}

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return original(self, *args, **kwargs)

    return mock.patch.object(target, method, failing)
