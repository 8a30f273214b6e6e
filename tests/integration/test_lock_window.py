"""The lock window with the timing a deployment gets by default (not the rehearsal's zero-second waits): the end of
each wait under the lock is noticed within a fraction of a second, and every function the locked phase calls was
warmed before the lock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from functions.handlers._step import WARM_EVENT
from functions.models.config import TimingConfig
from functions.models.steps import BACKUP
from rehearsal.lambda_runtime import POOL
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
    # Every environment the locked phase used was started before the lock, both of progress's included.
    assert world.r.cold_starts_while_locked() == []
    assert all(len(seconds) <= 2 for seconds in world.r.runtime.cold_starts().values())
    invocations = world.r.runtime.invocations
    steps = [(i, call.handler) for i, call in enumerate(invocations) if call.event != WARM_EVENT]
    (lock,) = [i for i, handler in steps if handler == BACKUP.lock.handler]
    (unlock,) = [i for i, handler in steps if handler == BACKUP.unlock.handler]
    warmed = {call.function for call in invocations[:lock] if call.event == WARM_EVENT}
    locked_phase = {call.function for call in invocations[lock + 1 : unlock + 1]}
    assert locked_phase and locked_phase <= warmed, locked_phase - warmed
    # A warm-up answers at once, with nothing but the step's name.
    answers = [call.result for call in invocations[:lock] if call.event == WARM_EVENT]
    assert answers and all(set(answer) == {"warm", "step"} and answer["warm"] is True for answer in answers)
