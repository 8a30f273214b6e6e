"""The functions' seed-style lines (`[url]  INFO: locked with '…'`, as Atlassian's scripts print them) for one
execution: read from the CloudWatch Logs groups of the functions its history says it invoked, and printed with
the time since the execution started and, while Bitbucket is locked, the lock clock.

Only the functions an execution is running, or finished a moment ago, are read on each poll: FilterLogEvents has a
quota of a few calls per second per account, and a backup invokes a dozen functions. A line written by another
instance's run of the same function (same time, other instance) is left out by the `instance` key on the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bitbucket_backup_cli.aws import Aws

# CloudWatch Logs delivers a line within seconds of its writing: a finished function is read for this long after.
SETTLE_S = 15.0
# A term every seed line's JSON holds (its key), so that FilterLogEvents returns little else.
SEED_TERM = "seed"


def log_group(function: str) -> str:
    """Where Lambda writes a function's lines when it names no log group of its own."""
    return f"/aws/lambda/{function.rsplit(':function:', 1)[-1].split(':', 1)[0]}"


def filter_events(aws: Aws, **query: Any) -> list[dict[str, Any]]:
    """Every event FilterLogEvents finds for `query`, page after page. None when the group does not exist yet
    (nothing was written), a quota is hit or the caller may not read it: the progress goes on without them; the
    result and the notification do not depend on them."""
    from botocore.exceptions import ClientError

    from functions.clients.aws import error_code

    found: list[dict[str, Any]] = []
    try:
        while True:
            page = aws.client("logs").filter_log_events(**query)
            found += page.get("events", [])
            if not page.get("nextToken"):
                return found
            query["nextToken"] = page["nextToken"]
    except ClientError as error:
        if error_code(error) not in ("ResourceNotFoundException", "ThrottlingException", "AccessDeniedException"):
            raise
        return found


@dataclass
class _Task:
    function: str
    started: float  # epoch seconds
    ended: float | None = None


def _seconds(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def _scheduled(event: dict[str, Any]) -> tuple[str, Any] | None:
    """The function and the payload of a Lambda task: a Task state whose resource is the function's ARN
    (LambdaFunctionScheduled, as this stack's states are), or the lambda:invoke integration (TaskScheduled)."""
    if event.get("type") == "LambdaFunctionScheduled":
        details = event.get("lambdaFunctionScheduledEventDetails") or {}
        function, payload = details.get("resource"), details.get("input")
    elif event.get("type") == "TaskScheduled":
        details = event.get("taskScheduledEventDetails") or {}
        if details.get("resourceType") != "lambda":
            return None
        try:
            parameters = json.loads(details.get("parameters") or "{}")
        except ValueError:
            return None
        if not isinstance(parameters, dict):
            return None
        function, payload = parameters.get("FunctionName"), parameters.get("Payload")
    else:
        return None
    if isinstance(payload, str):  # the history may truncate a long input: then it is not a warm-up's
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = None
    return (function, payload) if isinstance(function, str) else None


_STARTED = ("LambdaFunctionStarted", "TaskStarted")
_ENDED = (
    "LambdaFunctionSucceeded",
    "LambdaFunctionFailed",
    "LambdaFunctionTimedOut",
    "LambdaFunctionStartFailed",
    "TaskSucceeded",
    "TaskFailed",
    "TaskTimedOut",
    "TaskStartFailed",
)


def lambda_tasks(events: list[dict[str, Any]]) -> list[_Task]:
    """The execution's Lambda invocations, warm-ups left out (they print nothing), with when each ended."""
    tasks: dict[int, _Task] = {}
    scheduled_by: dict[int, int] = {}  # a started event's id -> its scheduled event's id
    for event in events:
        kind, at, previous = event.get("type"), _seconds(event.get("timestamp")), int(event.get("previousEventId") or 0)
        scheduled = _scheduled(event)
        if scheduled is not None and at is not None:
            function, payload = scheduled
            if not (isinstance(payload, dict) and payload.get("warm") is True):
                tasks[int(event["id"])] = _Task(function, at)
        elif kind in _STARTED:
            scheduled_by[int(event["id"])] = previous
        elif kind in _ENDED and at is not None:
            task = tasks.get(scheduled_by.get(previous, previous))
            if task is not None:
                task.ended = at
    return list(tasks.values())


@dataclass
class Clock:
    """The time since the start, and the lock clock: from a line marked lock=taken to one marked lock=released."""

    started: float
    locked_at: float | None = None

    def render(self, at: float, record: dict[str, Any]) -> str:
        mark = record.get("lock")
        if mark == "taken":
            self.locked_at = at
        text = f"+{max(0.0, at - self.started):7.1f} s  "
        if self.locked_at is not None:
            text += f"[locked {at - self.locked_at:5.1f} s]  "
        if mark == "released":
            self.locked_at = None
        return text + str(record.get("seed", ""))


@dataclass
class SeedLines:
    """The seed lines of one execution of `instance`, read incrementally: `read(events, now)` returns the new ones,
    in the order they were written, rendered with the clocks (`read_timed`: each with its time, epoch seconds);
    `latest` is the newest line's record."""

    aws: Aws
    instance: str | None
    started: float
    clock: Clock = field(init=False)
    latest: dict[str, Any] | None = None
    _seen: set[str] = field(default_factory=set)
    _read_up_to: dict[str, float] = field(default_factory=dict)  # log group -> epoch seconds read so far
    _groups: dict[str, str] = field(default_factory=dict)  # function -> its log group

    def __post_init__(self) -> None:
        self.clock = Clock(self.started)

    def read_timed(self, events: list[dict[str, Any]], now: float, final: bool = False) -> list[tuple[float, str]]:
        first = next((t for t in map(_seconds, (e.get("timestamp") for e in events)) if t is not None), None)
        if first is not None:  # the clock the steps' lines use (executions.timeline): the history's first event
            self.clock.started = first
        windows: dict[str, tuple[float, float | None]] = {}
        for task in lambda_tasks(events):
            group = self._group_of(task.function)
            first, last = windows.get(group, (task.started, task.ended))
            ends = None if task.ended is None or last is None else max(last, task.ended)
            windows[group] = (min(first, task.started), ends)
        found: list[tuple[int, str, dict[str, Any]]] = []
        for group, (first, ended) in windows.items():
            if not final and ended is not None and self._read_up_to.get(group, 0) > ended + SETTLE_S:
                continue  # read after it ended and settled: nothing more will come
            # From its first invocation (a tenth of a second for the two services' clocks), then again from SETTLE_S
            # before the last read: a line may arrive late, but carries the time it was written.
            since = max(first - 0.1, self._read_up_to.get(group, first) - SETTLE_S)
            # Up to its last invocation's end (a second for the clocks): a later run of the same function, for the
            # same instance, writes to the same group, and none of its lines is this execution's.
            until = now + 1 if ended is None else min(now + 1, ended + 1)
            found += self._read(group, since, until)
            self._read_up_to[group] = now
        lines = []
        for timestamp, _, record in sorted(found, key=lambda f: (f[0], f[1])):
            self.latest = record
            lines.append((timestamp / 1000, self.clock.render(timestamp / 1000, record)))
        return lines

    def read(self, events: list[dict[str, Any]], now: float, final: bool = False) -> list[str]:
        return [line for _, line in self.read_timed(events, now, final)]

    def _group_of(self, function: str) -> str:
        """The function's log group, as Lambda reports it (the stack gives each function its own group)."""
        if function not in self._groups:
            from botocore.exceptions import ClientError

            try:
                configuration = self.aws.client("lambda").get_function_configuration(FunctionName=function)
                named = (configuration.get("LoggingConfig") or {}).get("LogGroup")
            except ClientError:  # no permission to ask: the default group, where Lambda writes unless told
                named = None
            self._groups[function] = str(named) if named else log_group(function)
        return self._groups[function]

    def _read(self, group: str, since: float, until: float) -> list[tuple[int, str, dict[str, Any]]]:
        found = []
        for event in filter_events(
            self.aws,
            logGroupName=group,
            startTime=int(since * 1000),  # lines already seen are skipped by their id
            endTime=int(until * 1000),
            filterPattern=SEED_TERM,
        ):
            record = self._record(group, event)
            if record is not None:
                found.append((int(event.get("timestamp") or 0), str(event.get("eventId")), record))
        return found

    def _record(self, group: str, event: dict[str, Any]) -> dict[str, Any] | None:
        # An event id is unique in AWS; an emulator may number each stream's events from 1.
        event_id = f"{group}/{event.get('logStreamName')}/{event.get('eventId')}"
        if event_id in self._seen:
            return None
        try:
            record = json.loads(str(event.get("message", "")))
        except ValueError:
            return None
        if not isinstance(record, dict) or not isinstance(record.get("seed"), str):
            return None
        if self.instance and record.get("instance") not in (None, self.instance):
            return None  # another instance's run of the same function at the same time
        self._seen.add(event_id)
        return record
