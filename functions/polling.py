"""Waiting inside one Lambda invocation, for the waits under the lock (DRAINED, the locked host copies).

A Wait state costs whole seconds and a new invocation per round; checking every fraction of a second inside the
function notices the end of a wait at once. Plain code, so that its timing is tested with a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# What an invocation keeps after its last wait: one more request (its own timeout bounds it) and the return.
LAMBDA_MARGIN_S = 5.0


@dataclass(frozen=True)
class Clock:
    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


WALL = Clock()


def slice_end(clock: Clock, seconds_left: float, longest: float | None = None) -> float:
    """When this invocation stops waiting: before its Lambda timeout (seconds_left, from the context), and after
    at most `longest` seconds. Never before now: a nearly spent invocation still checks once."""
    budget = seconds_left - LAMBDA_MARGIN_S
    if longest is not None:
        budget = min(budget, longest)
    return clock.now() + max(0.0, budget)


def until(check: Callable[[], T | None], *, interval: float, deadline: float, clock: Clock = WALL) -> T | None:
    """check() until it answers (anything but None) or the clock reaches `deadline`; then None. The last check is
    made at the deadline, so an end that came before it is not missed; a check may raise to end the wait."""
    while True:
        found = check()
        if found is not None:
            return found
        left = deadline - clock.now()
        if left <= 0:
            return None
        clock.sleep(min(interval, left))
