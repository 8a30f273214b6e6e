"""Executions: finding one, its history, its progress, and following it to the end."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from bitbucket_backup_cli.aws import Aws, StateMachine
from bitbucket_backup_cli.base import BACKUP, DRILL, NOT_FOUND, NOT_FOUND_CODES, USAGE, CliError
from bitbucket_backup_cli.host_progress import HostProgress, Report
from bitbucket_backup_cli.seed import SeedLines
from functions.models import steps

# --- executions ----------------------------------------------------------------------------------------------------


def expected_path(definition: dict[str, Any]) -> list[str]:
    """The states a successful execution passes through: the longest path from StartAt to a success, following
    Next and Choice edges (not Catch), each state once. Parallel branches count as their Parallel state."""
    states: dict[str, dict[str, Any]] = definition.get("States", {})
    best: list[str] = []

    def successors(state: dict[str, Any]) -> list[str]:
        found = [c["Next"] for c in state.get("Choices", []) if "Next" in c]
        found += [state[k] for k in ("Next", "Default") if k in state]
        return found

    def walk(name: str, path: list[str]) -> None:
        nonlocal best
        state = states.get(name)
        if state is None or name in path:
            return
        path = [*path, name]
        if state.get("Type") == "Succeed" or state.get("End"):
            if len(path) > len(best):
                best = path
            return
        for following in successors(state):
            walk(following, path)

    if "StartAt" in definition:
        walk(definition["StartAt"], [])
    return best


class History:
    """An execution's events, read incrementally (newest first, until the events already seen)."""

    def __init__(self, aws: Aws, execution_arn: str) -> None:
        self.aws, self.arn = aws, execution_arn
        self.events: dict[int, dict[str, Any]] = {}

    def update(self) -> list[dict[str, Any]]:
        sfn = self.aws.client("stepfunctions")
        known = max(self.events, default=0)
        kwargs: dict[str, Any] = {"executionArn": self.arn, "reverseOrder": True, "maxResults": 200}
        while True:
            page = sfn.get_execution_history(**kwargs)
            for event in page["events"]:
                self.events[int(event["id"])] = event
            if not page.get("nextToken") or any(int(e["id"]) <= known for e in page["events"]):
                break
            kwargs["nextToken"] = page["nextToken"]
        return self.ordered()

    def ordered(self) -> list[dict[str, Any]]:
        return [self.events[i] for i in sorted(self.events)]


def entered(events: list[dict[str, Any]]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


def last_entered_at(events: list[dict[str, Any]]) -> float | None:
    """When the newest state was entered (epoch seconds)."""
    for event in reversed(events):
        if "stateEnteredEventDetails" in event and isinstance(event.get("timestamp"), datetime):
            return float(event["timestamp"].timestamp())
    return None


def long_part(
    percent: int, state: str, seed: dict[str, Any] | None, report: Report | None, since: float | None
) -> tuple[int, str]:
    """What the bar shows while a step runs: the steps' own percentage and the state's name, unless a long part
    reports its own: a snapshot's completion (the newest seed line's), or a host's report made since the newest
    state was entered (an older one is of a step that has ended). pg_dump's report has no percentage (its size is
    unknown ahead): the bar keeps the steps' and says what was written."""
    if seed is not None and isinstance(seed.get("percent"), int):
        percent, state = int(seed["percent"]), f"{seed.get('part', '')} snapshot".strip()
    if report is not None and since is not None and report.at >= since:
        percent, state = report.percent if report.percent is not None else percent, report.text()
    return percent, state


def state_output(events: list[dict[str, Any]], state: str) -> dict[str, Any] | None:
    for event in events:
        details = event.get("stateExitedEventDetails")
        if details and details.get("name") == state and details.get("output"):
            try:
                value = json.loads(details["output"])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def progress(path: list[str], events: list[dict[str, Any]], status: str) -> int:
    if status == "SUCCEEDED":
        return 100
    seen = set(entered(events))
    return int(100 * sum(1 for s in path if s in seen) / len(path)) if path else 0


def iso_time(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


def execution_record(
    aws: Aws, machine: StateMachine, described: dict[str, Any], events: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the command line says about one execution (also its --json form)."""
    try:
        given = json.loads(described.get("input") or "{}")
    except ValueError:
        given = {}
    given = given if isinstance(given, dict) else {}
    states = entered(events)
    output = None
    if described.get("output"):
        try:
            output = json.loads(described["output"])
        except ValueError:
            output = described["output"]
    if machine.kind == BACKUP:
        backup_id = ((state_output(events, steps.BACKUP.validate.state) or {}).get("run") or {}).get("backup_id")
    elif machine.kind == DRILL:
        planned = state_output(events, steps.DRILL.plan.state) or {}
        backup_id = (planned.get("plan") or planned).get("backup_id")
    else:
        backup_id = given.get("backup_id")
    failed = [label for label in map(steps.failed_label, states) if label]
    status = str(described["status"])
    return {
        "execution": described["executionArn"].rsplit(":", 1)[-1],
        "execution_arn": described["executionArn"],
        "kind": machine.kind,
        "instance": given.get("instance"),
        "backup_id": backup_id,
        "status": status,
        "skipped": any(s.startswith("Skipped") for s in states),
        "started": iso_time(described.get("startDate")),
        "stopped": iso_time(described.get("stopDate")),
        "duration_s": _duration(described),
        "lock_window_s": lock_window(events, output) if machine.kind == BACKUP else None,
        "progress": progress(expected_path(aws.definition(machine.arn)), events, status),
        "current_state": states[-1] if states else None,
        "failed_step": failed[0] if failed else None,
        "unlocked": failure_unlocked(events) if machine.kind == BACKUP else None,
        "error": described.get("error"),
        "cause": described.get("cause"),
        "output": output,
    }


def failure_unlocked(events: list[dict[str, Any]]) -> str | None:
    """What a failed backup's failure path answered on Bitbucket's lock (`yes (…)`, `NO (…)`, `UNKNOWN - …`);
    None when it did not run (the backup succeeded, or runs, or was stopped: then the safety net answers)."""
    for state in (steps.BACKUP.handle_failure.state, f"{steps.BACKUP.handle_failure.state} before lock"):
        outcome = (state_output(events, state) or {}).get("outcome")
        if isinstance(outcome, dict) and isinstance(outcome.get("unlocked"), str):
            return str(outcome["unlocked"])
    return None


def _duration(described: dict[str, Any]) -> float | None:
    started, stopped = described.get("startDate"), described.get("stopDate") or datetime.now(UTC)
    return round((stopped - started).total_seconds(), 1) if isinstance(started, datetime) else None


def lock_window(events: list[dict[str, Any]], output: Any) -> float | None:
    """How long Bitbucket was locked: what the backup measured, or (a failed run) from the lock's end to the end of
    the unlock or of the failure path; None when it was never locked (or is still)."""
    if isinstance(output, dict) and isinstance(output.get("lock_window_s"), int | float):
        return round(float(output["lock_window_s"]), 3)
    exits = {
        e["stateExitedEventDetails"]["name"]: e["timestamp"]
        for e in events
        if "stateExitedEventDetails" in e and isinstance(e.get("timestamp"), datetime)
    }
    locked = exits.get(steps.BACKUP.lock.state)
    released = exits.get(steps.BACKUP.unlock.state) or exits.get(steps.BACKUP.handle_failure.state)
    return round((released - locked).total_seconds(), 3) if locked and released else None


def find_execution(aws: Aws, ref: str) -> tuple[StateMachine, dict[str, Any]]:
    """An execution of this stack's state machines, by ARN or by name."""
    from botocore.exceptions import ClientError

    from functions.clients.aws import error_code

    sfn = aws.client("stepfunctions")
    machines = aws.machines()
    if ref.startswith("arn:"):
        candidates = [ref]
    else:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", ref):
            raise CliError(USAGE, f"'{ref}' is neither an execution ARN nor an execution name")
        candidates = [m.execution_arn(ref) for m in machines]
    for arn in candidates:
        try:
            described = dict(sfn.describe_execution(executionArn=arn))
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                continue
            raise
        machine_arn = described.get("stateMachineArn", "")
        machine = next((m for m in machines if m.arn == machine_arn), None)
        if machine is None:
            raise CliError(NOT_FOUND, f"execution {ref} is not one of stack {aws.stack_name}'s state machines")
        return machine, described
    raise CliError(NOT_FOUND, f"no execution '{ref}' of the backup or restore state machine in {aws.region_name}")


_ENDED = {
    "ExecutionSucceeded": "executionSucceededEventDetails",
    "ExecutionFailed": "executionFailedEventDetails",
    "ExecutionAborted": "executionAbortedEventDetails",
    "ExecutionTimedOut": "executionTimedOutEventDetails",
}


def timeline(events: list[dict[str, Any]], kind: str) -> list[str]:
    return [line for _, line in timed_timeline(events, kind)]


def timed_timeline(events: list[dict[str, Any]], kind: str) -> list[tuple[float, str]]:
    """One line per step the execution finished, with the time since it started, and for a backup the time
    Bitbucket has been locked; the last line says how it ended (ERROR: the error and its cause). Each with its time
    (epoch seconds), to be merged with the functions' own lines."""
    lines: list[tuple[float, str]] = []
    started = next((e["timestamp"] for e in events if isinstance(e.get("timestamp"), datetime)), None)
    locked_at: datetime | None = None
    for event in events:
        at = event.get("timestamp")
        if started is None or not isinstance(at, datetime):
            continue
        clock = f"+{(at - started).total_seconds():7.1f} s  "
        exited = event.get("stateExitedEventDetails")
        if exited:
            name, note = exited["name"], ""
            if kind == BACKUP and name == steps.BACKUP.lock.state:
                locked_at, note = at, "  (Bitbucket locked)"
            elif locked_at is not None and name == steps.BACKUP.unlock.state:
                note = f"  (Bitbucket unlocked after {(at - locked_at).total_seconds():.1f} s locked)"
                locked_at = None
            elif locked_at is not None and name == steps.BACKUP.handle_failure.state:
                note = "  (the failure path ended: its notification says whether Bitbucket is unlocked)"
                locked_at = None
            elif locked_at is not None:
                note = f"  [locked {(at - locked_at).total_seconds():.1f} s]"
            lines.append((at.timestamp(), f"{clock}{name}: done{note}"))
        elif event.get("type") in _ENDED:
            details = event.get(_ENDED[event["type"]]) or {}
            if event["type"] == "ExecutionSucceeded":
                lines.append((at.timestamp(), f"{clock}{kind} succeeded"))
            else:
                cause = " ".join(str(details.get("cause") or "").split())[:500]
                error = details.get("error") or event["type"].removeprefix("Execution").upper()
                lines.append((at.timestamp(), f"{clock}ERROR: {error}{': ' + cause if cause else ''}"))
    return lines


def locked_since(events: list[dict[str, Any]], kind: str) -> datetime | None:
    """When a backup still holding Bitbucket locked took the lock (None before the lock, after the unlock or the
    failure path, and for other kinds)."""
    if kind != BACKUP:
        return None
    since = None
    for event in events:
        name = (event.get("stateExitedEventDetails") or {}).get("name")
        if name == steps.BACKUP.lock.state and isinstance(event.get("timestamp"), datetime):
            since = event["timestamp"]
        elif name in (steps.BACKUP.unlock.state, steps.BACKUP.handle_failure.state):
            since = None
    return since


def clock(described: dict[str, Any], events: list[dict[str, Any]], kind: str) -> str:
    """The time since the execution started and, while Bitbucket is locked, since the lock."""
    now = datetime.now(UTC)
    started = described.get("startDate")
    text = f"+{(now - started).total_seconds():.0f} s" if isinstance(started, datetime) else ""
    since = locked_since(events, kind)
    return text + (f", Bitbucket locked {(now - since).total_seconds():.1f} s" if since is not None else "")


class ProgressBar:
    """On a terminal: one line redrawn in place. Elsewhere (a log, a pipe): one line per step."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream, self.label = stream, label
        self.tty = stream.isatty()
        self.last: tuple[int, str | None] | None = None

    def line(self, text: str) -> None:
        """A line of its own (a function's seed line): above the bar on a terminal."""
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        if self.tty:
            self.last = None  # redrawn by the next update
        self.stream.flush()

    def update(self, percent: int, state: str | None, clock: str = "") -> None:
        if state is None:
            return
        if self.tty:  # redrawn on every poll: the clocks run
            done = percent * 30 // 100
            bar = "#" * done + "." * (30 - done)
            self.stream.write(f"\r{self.label} [{bar}] {percent:3d}%  {state[:40]:<40} {clock:<36}")
        elif (percent, state) != self.last:
            self.stream.write(f"{self.label} {percent:3d}%  {state}" + (f"  ({clock})" if clock else "") + "\n")
        self.last = (percent, state)
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.last is not None:
            self.stream.write("\n")
            self.stream.flush()


def seed_lines(aws: Aws, described: dict[str, Any]) -> SeedLines:
    try:
        given = json.loads(described.get("input") or "{}")
    except ValueError:
        given = {}
    instance = given.get("instance") if isinstance(given, dict) else None
    started = described.get("startDate")
    return SeedLines(
        aws, instance if isinstance(instance, str) else None, started.timestamp() if started else time.time()
    )


def follow(aws: Aws, machine: StateMachine, execution_arn: str, poll_seconds: float) -> dict[str, Any]:
    """Follows an execution to its end on stderr: the functions' seed lines as they come, under them a progress
    bar (on a terminal; plain lines elsewhere) of the steps, or of the long part's own progress when it reports it
    (a snapshot's completion; a host's rsync, pg_dump, archive or upload); returns its record."""
    sfn = aws.client("stepfunctions")
    path = expected_path(aws.definition(machine.arn))
    history = History(aws, execution_arn)
    bar = ProgressBar(sys.stderr, machine.kind)
    described = sfn.describe_execution(executionArn=execution_arn)
    seeds = seed_lines(aws, described)
    hosts = HostProgress(aws, seeds.instance, seeds.started) if machine.kind == BACKUP else None
    try:
        while True:
            events = history.update()
            running = described["status"] == "RUNNING"
            for line in seeds.read(events, time.time(), final=not running):
                bar.line(line)
            states = entered(events)
            percent, state = progress(path, events, described["status"]), states[-1] if states else None
            if running and state is not None:
                report = hosts.read(time.time()) if hosts is not None else None
                percent, state = long_part(percent, state, seeds.latest, report, last_entered_at(events))
            bar.update(percent, state, clock(described, events, machine.kind) if running else "")
            if not running:
                return execution_record(aws, machine, described, events)
            time.sleep(poll_seconds)
            described = sfn.describe_execution(executionArn=execution_arn)
    finally:
        bar.close()
