"""The waits under the lock, with a fake clock: how soon an end is noticed, and where a slice stops."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from functions import polling


@dataclass
class FakeClock:
    t: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a wait of zero or less would spin"
        self.slept.append(seconds)
        self.t += seconds

    @property
    def clock(self) -> polling.Clock:
        return polling.Clock(now=self.now, sleep=self.sleep)


@dataclass
class EndsAt:
    """A check that answers once the fake time reaches `moment` (a drained Bitbucket, a finished command)."""

    fake: FakeClock
    moment: float
    checks: list[float] = field(default_factory=list)

    def __call__(self) -> str | None:
        self.checks.append(self.fake.t)
        return "done" if self.fake.t >= self.moment else None


def test_an_end_is_noticed_within_one_interval() -> None:
    fake = FakeClock()
    check = EndsAt(fake, 1000.0 + 1.03)
    found = polling.until(check, interval=0.2, deadline=1000.0 + 60, clock=fake.clock)
    assert found == "done"
    assert 1.03 <= fake.t - 1000.0 <= 1.03 + 0.2 + 1e-9
    assert all(s == pytest.approx(0.2) for s in fake.slept)


def test_an_answer_at_once_costs_no_wait() -> None:
    fake = FakeClock()
    assert polling.until(lambda: "done", interval=0.2, deadline=1060.0, clock=fake.clock) == "done"
    assert fake.slept == []


def test_the_last_check_is_made_at_the_deadline_not_an_interval_before() -> None:
    fake = FakeClock()
    check = EndsAt(fake, 1000.0 + 10.0)
    # An interval that does not divide the slice: the last sleep is shortened to land on the deadline.
    assert polling.until(check, interval=3.0, deadline=1010.0, clock=fake.clock) == "done"
    assert check.checks == [1000.0, 1003.0, 1006.0, 1009.0, 1010.0]


def test_a_slice_that_ends_first_returns_none() -> None:
    fake = FakeClock()
    check = EndsAt(fake, 2000.0)
    assert polling.until(check, interval=0.5, deadline=1002.0, clock=fake.clock) is None
    assert fake.t == 1002.0 and len(check.checks) == 5


def test_a_check_that_raises_ends_the_wait() -> None:
    fake = FakeClock()

    def cancelled() -> None:
        raise RuntimeError("the backup task is CANCELLED")

    with pytest.raises(RuntimeError, match="CANCELLED"):
        polling.until(cancelled, interval=0.2, deadline=1060.0, clock=fake.clock)
    assert fake.slept == []


def test_a_slice_stops_before_the_lambda_timeout_and_at_the_longest() -> None:
    fake = FakeClock()
    # 90 s left: the slice keeps the margin for the last request and the return.
    assert polling.slice_end(fake.clock, 90.0) == 1000.0 + 90.0 - polling.LAMBDA_MARGIN_S
    assert polling.slice_end(fake.clock, 90.0, longest=60) == 1060.0
    # Nearly spent (or a context that does not say): one check now, no waiting.
    assert polling.slice_end(fake.clock, 2.0) == 1000.0
    assert polling.slice_end(fake.clock, 0.0, longest=60) == 1000.0
