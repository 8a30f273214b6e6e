"""What a schedule expression means for monitoring and for spreading a fleet's starts: the longest gap between two
scheduled runs, and the minute field of a cron expression (which the stack staggers).

EventBridge Scheduler cron has six fields: minutes hours day-of-month month day-of-week year. The gap is computed
conservatively (never shorter than the real one), because it sets the default staleness alarm: a gap that is too
short would alarm between two healthy runs.
"""

from __future__ import annotations

import re
import zoneinfo

RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
CRON = re.compile(r"^cron\((.+)\)$")
_UNIT_HOURS = {"minute": 1 / 60, "hour": 1.0, "day": 24.0}
_WEEKDAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_ANY = ("*", "?")


def cron_fields(expression: str) -> list[str] | None:
    """The six fields of a cron(…) expression, or None for rate(…) and at(…)."""
    match = CRON.match(expression)
    return match.group(1).split() if match else None


def plain_minute(expression: str) -> int | None:
    """The minute of a cron expression whose minute field is one number (the usual "at HH:MM"), else None."""
    fields = cron_fields(expression)
    if fields and re.fullmatch(r"\d{1,2}", fields[0]) and int(fields[0]) < 60:
        return int(fields[0])
    return None


def with_minute(expression: str, minute: int) -> str:
    fields = cron_fields(expression)
    assert fields is not None and plain_minute(expression) is not None
    return f"cron({' '.join([str(minute % 60), *fields[1:]])})"


def _values(field: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int] | None:
    """The values a cron field selects (lists, ranges, steps, names); None for what this does not understand
    (L, W, #), which callers treat conservatively."""
    found: set[int] = set()
    for item in field.upper().split(","):
        for name, number in (names or {}).items():
            item = item.replace(name, str(number))
        match = re.fullmatch(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?", item)
        if not match:
            return None
        start = low if match.group(1) == "*" else int(match.group(1))
        end = int(match.group(2)) if match.group(2) else (high if match.group(1) == "*" or match.group(3) else start)
        step = int(match.group(3) or 1)
        if not low <= start <= high or not low <= end <= high or step < 1:
            return None
        found.update(range(start, end + 1, step))
    return found or None


def _largest_circular_gap(values: set[int], period: int) -> int:
    ordered = sorted(values)
    return max((b - a) % period or period for a, b in zip(ordered, ordered[1:] + ordered[:1], strict=True))


def longest_gap_hours(expression: str) -> float | None:
    """The longest time between two runs of the schedule, in hours (an upper bound); None for a one-time at(…)."""
    rate = RATE.match(expression)
    if rate:
        return int(rate.group(1)) * _UNIT_HOURS[rate.group(2).rstrip("s")]
    fields = cron_fields(expression)
    if not fields or len(fields) != 6:
        return None
    minutes, hours, day_of_month, month, day_of_week, year = fields
    if month != "*" or year != "*":
        return 366 * 24.0  # some months or years only: at most once a year is the safe assumption
    if day_of_month not in _ANY:
        return 31 * 24.0
    if day_of_week not in _ANY:
        days = _values(day_of_week, 1, 7, _WEEKDAYS)
        # Not understood (2#1 "first Monday", 5L "last Thursday"): monthly at worst, five weeks apart.
        return (_largest_circular_gap(days, 7) if days else 35) * 24.0
    minute_values, hour_values = _values(minutes, 0, 59), _values(hours, 0, 23)
    if not minute_values or not hour_values:
        return 24.0
    times = {h * 60 + m for h in hour_values for m in minute_values}
    return _largest_circular_gap(times, 24 * 60) / 60


_MONTHS = {m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV",
                                        "DEC"), start=1)}  # fmt: skip
# Each cron field: its name, its range, its names; L, W and # (which this does not check) pass through.
_FIELDS = (
    ("minutes", 0, 59, None),
    ("hours", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _WEEKDAYS),
    ("year", 1970, 2199, None),
)


def schedule_problem(expression: str) -> str | None:
    """Why EventBridge Scheduler would reject this rate(…) or cron(…) expression, if it can tell: caught at synth,
    not at deploy."""
    rate = RATE.match(expression)
    if rate:
        return "a rate(…) needs a positive value" if int(rate.group(1)) < 1 else None
    fields = cron_fields(expression)
    if fields is None:
        return None
    if len(fields) != 6:
        return "a cron(…) expression has six fields: minutes hours day-of-month month day-of-week year"
    if (fields[2] == "?") == (fields[4] == "?"):
        return "exactly one of day-of-month and day-of-week must be '?'"
    for field, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        if field in _ANY or re.search(r"[LW#]", field.upper()):
            continue
        if _values(field, low, high, names) is None:
            return f"its {name} field '{field}' is not within {low}-{high}"
    return None


def _known_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)  # reads one file of the time zone database (cached), not the whole database
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def timezone_problem(name: str) -> str | None:
    """Why EventBridge Scheduler would reject this time zone (it takes IANA names such as Europe/Berlin). Checked
    where the time zone database is (at synth); where it is not, the name passes (it was checked at synth)."""
    if _known_zone(name) or not _known_zone("UTC"):
        return None
    return "is not an IANA time zone name such as UTC or Europe/Berlin"
