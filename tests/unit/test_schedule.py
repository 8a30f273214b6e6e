"""Schedules for monitoring: the longest gap between runs sets the default staleness limit, so it must never be
shorter than the real gap (a false alarm between two healthy backups); the new config fields are checked at synth."""

from __future__ import annotations

import pytest

from functions.models.config import ConfigError, parse_instance_config
from functions.models.schedule import longest_gap_hours, plain_minute, schedule_problem, with_minute
from tests.unit.test_config import instance


@pytest.mark.parametrize(
    ("expression", "gap"),
    [
        ("rate(1 day)", 24),
        ("rate(6 hours)", 6),
        ("rate(30 minutes)", 0.5),
        ("cron(30 2 * * ? *)", 24),
        ("cron(0 */6 * * ? *)", 6),
        ("cron(0 2,14 * * ? *)", 12),
        ("cron(0 2 ? * MON-FRI *)", 72),  # Friday to Monday
        ("cron(0 2 ? * SUN *)", 168),
        ("cron(0 2 ? * 2#1 *)", 35 * 24),  # "first Monday of the month": up to five weeks apart
        ("cron(0 2 1 * ? *)", 31 * 24),
        ("cron(0 2 1 1,7 ? *)", 366 * 24),
        ("at(2026-12-24T18:00:00)", None),
    ],
)
def test_longest_gap(expression: str, gap: float | None) -> None:
    found = longest_gap_hours(expression)
    assert found == gap or (gap is not None and found is not None and found >= gap)


def test_minute_rewriting() -> None:
    assert plain_minute("cron(30 2 * * ? *)") == 30
    assert plain_minute("cron(0/15 * * * ? *)") is None and plain_minute("rate(1 day)") is None
    assert with_minute("cron(30 2 * * ? *)", 75) == "cron(15 2 * * ? *)"


@pytest.mark.parametrize(
    ("overrides", "limit"),
    [
        ({}, 48),  # daily: twice the interval
        ({"schedule": "rate(1 hour)"}, 7),  # at least the interval plus the longest run (drain + snapshots) + 1 h
        ({"schedule": "cron(0 2 ? * MON-FRI *)"}, 144),
        ({"max_backup_age_hours": 30}, 30),
        ({"max_backup_age_hours": 0}, None),  # explicitly no staleness alarm
        ({"schedule": None}, None),  # manual runs only
        ({"schedule": None, "max_backup_age_hours": 24 * 8}, 24 * 8),  # manual, but someone must run one weekly
    ],
)
def test_staleness_limit(overrides: dict[str, object], limit: int | None) -> None:
    assert parse_instance_config(instance(**overrides)).staleness_limit_hours == limit


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_backup_age_hours": 12}, "max_backup_age_hours 12 is shorter than the 24 h between two runs"),
        ({"max_backup_age_hours": -1}, "max_backup_age_hours"),
        ({"schedule_offset_minutes": 60}, "schedule_offset_minutes"),
        ({"schedule": "rate(1 day)", "schedule_offset_minutes": 5}, "minute field is one number"),
        ({"schedule": "cron(0 2 * * * *)"}, "exactly one of day-of-month and day-of-week must be '?'"),
        ({"schedule": "cron(0 2 * * ?)"}, "six fields"),
    ],
)
def test_monitoring_fields_are_checked(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        parse_instance_config(instance(**overrides))


@pytest.mark.parametrize(
    ("schedule", "said"),
    [
        ("cron(75 2 * * ? *)", "minutes field '75' is not within 0-59"),
        ("cron(30 25 * * ? *)", "hours field '25' is not within 0-23"),
        ("cron(0 2 32 * ? *)", "day-of-month field '32'"),
        ("cron(0 2 ? 13 MON *)", "month field '13'"),
        ("cron(0 2 ? * 8 *)", "day-of-week field '8'"),
        ("cron(0 2 * * ? 1900)", "year field '1900'"),
        ("rate(0 hours)", "positive value"),
    ],
)
def test_a_schedule_eventbridge_would_reject_is_refused_at_synth(schedule: str, said: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_instance_config(instance(schedule=schedule))
    assert said in str(refused.value) and schedule in str(refused.value)


@pytest.mark.parametrize(
    "schedule",
    ["cron(0 2 * * ? *)", "cron(0/15 * * * ? *)", "cron(0 2 ? * MON-FRI *)", "cron(0 3 L * ? *)",
     "cron(0 2 ? * 2#1 *)", "cron(15 10 ? * 6L 2026-2030)", "cron(0 2 1 JAN,JUL ? *)", "rate(1 day)"],
)  # fmt: skip
def test_valid_schedules_pass(schedule: str) -> None:
    assert schedule_problem(schedule) is None


@pytest.mark.parametrize("zone", ["Europe/Berlinn", "CET+1", "Mars/Olympus"])
def test_a_time_zone_scheduler_would_reject_is_refused_at_synth(zone: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_instance_config(instance(schedule="cron(0 2 * * ? *)", schedule_timezone=zone))
    assert zone in str(refused.value) and "IANA time zone" in str(refused.value)
    assert parse_instance_config(instance(schedule="cron(0 2 * * ? *)", schedule_timezone="Europe/Berlin"))
