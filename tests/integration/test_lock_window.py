"""The lock window with the timing a deployment gets by default (not the rehearsal's zero-second waits): the end of
each wait under the lock is noticed within a fraction of a second, and every function the locked phase calls was
warmed before the lock."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from functions.handlers._step import is_warm_up
from functions.models.config import TimingConfig
from functions.models.steps import BACKUP
from rehearsal.fake_account import ACCOUNT, REGION
from rehearsal.lambda_runtime import POOL
from rehearsal.latency import LatencyModel
from rehearsal.runtime import RunResult
from tests.integration.conftest import World

DEPLOYED = TimingConfig().model_dump()


def _at(w: World, name: str) -> float:
    (moment,) = [t for t, event, _ in w.sim.events if event == name]
    return moment


def _succeeded(result: RunResult) -> dict[str, Any]:
    assert result.status == "SUCCEEDED", result.cause
    assert result.output is not None
    return result.output


def test_drained_is_noticed_within_a_fraction_of_a_second(world_factory: Callable[..., World]) -> None:
    w = world_factory(drain_seconds=1.0, timing=DEPLOYED)
    summary = _succeeded(w.r.run_backup())
    # drain_s runs from the lock step's record to the moment the poll step saw DRAINED; the simulator stamps when
    # Bitbucket really drained. A Wait state of poll_interval_seconds (5 s by default before) noticed it seconds late.
    late = summary["drain_s"] - (_at(w, "drained") - _at(w, "locked"))
    assert 0 <= late < 0.75, late


def test_the_unlock_follows_the_end_of_the_locked_rsync_pass_at_once(world_factory: Callable[..., World]) -> None:
    w = world_factory(home="rsync", database="amazon-rds", timing=DEPLOYED)
    ended: list[tuple[float, str]] = []
    w.r.host.after_run.append(lambda command: ended.append((time.monotonic(), command.script)))
    _succeeded(w.r.run_backup(timeout=240))
    passes = [t for t, script in ended if ".sh rsync-home " in script]
    assert len(passes) == 2, "the first pass before the lock, the second under it"
    # The copy is checked inside its function every 0.2 s; the unlock then follows after two progress reports.
    # A Wait state of host_poll_interval_seconds (15 s by default before) held Bitbucket locked that much longer.
    after = _at(w, "unlocked") - passes[1]
    assert 0 < after < 3.0, after


def test_every_function_of_the_locked_phase_was_warmed_before_the_lock(world: World) -> None:
    if world.r.runtime.inline:
        pytest.skip("cold starts are a property of the Lambda workers (REHEARSAL_LAMBDA=inline runs in-process)")
    POOL.shutdown()  # every environment of this process starts cold, as after a deployment
    _succeeded(world.r.run_backup())
    # Every environment the locked phase used was started before the lock, both of progress's included (one per
    # branch of the copy).
    assert world.r.cold_starts_while_locked() == []
    assert all(len(seconds) <= 2 for seconds in world.r.runtime.cold_starts().values())
    invocations = world.r.runtime.invocations
    steps = [(i, call.handler) for i, call in enumerate(invocations) if not is_warm_up(call.event)]
    (lock,) = [i for i, handler in steps if handler == BACKUP.lock.handler]
    (unlock,) = [i for i, handler in steps if handler == BACKUP.unlock.handler]
    warmed = {call.function for call in invocations[:lock] if is_warm_up(call.event)}
    locked_phase = {call.function for call in invocations[lock + 1 : unlock + 1]}
    assert locked_phase and locked_phase <= warmed, locked_phase - warmed
    # Each warm-up carried the run and read ahead what its step reads first.
    answers = [call.result for call in invocations[:lock] if is_warm_up(call.event)]
    # Progress twice; the Mesh nodes' copy once per node and the search index's copy, and this instance has neither
    # (nor the stack those functions).
    assert len(answers) == len(BACKUP.locked_phase) + 1 - 2, answers
    assert all(answer == {"warm": True, "step": answer["step"], "primed": True} for answer in answers), answers


def test_nothing_read_ahead_by_the_warm_up_is_read_again_under_the_lock(world_factory: Callable[..., World]) -> None:
    """The configuration (SSM) and the Bitbucket secret are read during the warm-up, while Bitbucket is live: under
    the lock the functions call only Bitbucket, the run table and the services of the copy."""
    recorder = LatencyModel.recorder()
    w = world_factory(timing=DEPLOYED, latency_model=recorder)
    if w.r.runtime.inline:
        pytest.skip("the calls of in-process handlers do not cross the HTTP endpoint")
    _succeeded(w.r.run_backup())
    assert recorder.log is not None
    locked, unlocked = _at(w, "locked"), _at(w, "unlocked")
    under_lock = {service for t, service in recorder.log if locked < t < unlocked}
    before = {service for t, service in recorder.log if t < locked}
    assert {"ssm", "secretsmanager"} <= before, before
    assert under_lock and not under_lock & {"ssm", "secretsmanager"}, under_lock


def test_a_warm_up_that_cannot_read_ahead_is_still_a_warm_up(world: World) -> None:
    """A warm-up with a run it cannot use answers as a warm-up (the step reads for itself later); it never fails."""
    from moto.awslambda_simple.models import lambda_simple_backends

    lambda_ = world.r.client("lambda")
    deployed = lambda_simple_backends[ACCOUNT][REGION].list_functions()
    (name,) = [f.function_name for f in deployed if f.handler == BACKUP.start_backup.handler]
    for run in ({"instance": "../etc", "backup_id": "x"}, "not a run", {"instance": "demo", "config_version": 999}):
        answer = lambda_.invoke(FunctionName=name, Payload=json.dumps({"warm": True, "run": run}).encode())
        assert "FunctionError" not in answer
        expected = {"warm": True, "step": BACKUP.start_backup.label, "primed": False}
        assert json.loads(answer["Payload"].read()) == expected
