"""The command line's reading of the functions' seed lines (bitbucket_backup_cli/seed.py): which invocations of an
execution it reads, what it leaves out, and the two clocks; against moto's CloudWatch Logs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from moto import mock_aws

from bitbucket_backup_cli.aws import Aws
from bitbucket_backup_cli.executions import ProgressBar
from bitbucket_backup_cli.seed import Clock, SeedLines, lambda_tasks, log_group
from functions.strategies import percent_of

T0 = datetime(2026, 12, 2, 4, 0, 0, tzinfo=UTC)
ARN = "arn:aws:lambda:eu-west-1:123456789012:function:"


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _history(*invocations: tuple[str, float, float | None, dict[str, Any]]) -> list[dict[str, Any]]:
    """ExecutionStarted, then per invocation: scheduled, started, succeeded (unless it still runs)."""
    events: list[dict[str, Any]] = [{"id": 1, "type": "ExecutionStarted", "timestamp": T0}]
    for function, start, end, payload in invocations:
        scheduled = len(events) + 1
        details = {"resource": ARN + function, "input": json.dumps(payload)}
        events.append(
            {
                "id": scheduled,
                "type": "LambdaFunctionScheduled",
                "timestamp": _at(start),
                "lambdaFunctionScheduledEventDetails": details,
            }
        )
        events.append(
            {
                "id": scheduled + 1,
                "type": "LambdaFunctionStarted",
                "timestamp": _at(start),
                "previousEventId": scheduled,
            }
        )
        if end is not None:
            events.append(
                {
                    "id": scheduled + 2,
                    "type": "LambdaFunctionSucceeded",
                    "timestamp": _at(end),
                    "previousEventId": scheduled + 1,
                }
            )
    return events


def test_the_invocations_read_are_the_executions_own_without_its_warm_ups() -> None:
    events = _history(
        ("Lock", 1, 2, {"run": {}}),
        ("Unlock", 1.5, 1.6, {"warm": True, "run": {}}),
        ("Unlock", 3, None, {"run": {}}),
    )
    # The lambda:invoke integration names its function in the parameters.
    events.append(
        {
            "id": 99,
            "type": "TaskScheduled",
            "timestamp": _at(4),
            "taskScheduledEventDetails": {
                "resourceType": "lambda",
                "resource": "invoke",
                "parameters": json.dumps({"FunctionName": ARN + "Archive", "Payload": {"run": {}}}),
            },
        }
    )
    tasks = [(t.function.rsplit(":", 1)[-1], t.started - T0.timestamp(), t.ended) for t in lambda_tasks(events)]
    assert tasks == [("Lock", 1.0, _at(2).timestamp()), ("Unlock", 3.0, None), ("Archive", 4.0, None)]
    assert log_group(ARN + "Lock") == "/aws/lambda/Lock" and log_group("Lock") == "/aws/lambda/Lock"
    assert log_group(ARN + "Lock:$LATEST") == "/aws/lambda/Lock"


def test_the_clocks_run_from_the_start_and_from_the_lock_to_the_unlock() -> None:
    clock = Clock(started=100.0)
    assert clock.render(101.0, {"seed": "[u]  INFO: prepared"}) == "+    1.0 s  [u]  INFO: prepared"
    assert clock.render(102.0, {"seed": "locked", "lock": "taken"}) == "+    2.0 s  [locked   0.0 s]  locked"
    assert clock.render(104.5, {"seed": "drained"}) == "+    4.5 s  [locked   2.5 s]  drained"
    assert clock.render(105.0, {"seed": "unlocked", "lock": "released"}) == "+    5.0 s  [locked   3.0 s]  unlocked"
    assert clock.render(106.0, {"seed": "complete"}) == "+    6.0 s  complete"


def test_a_snapshots_progress_as_ec2_and_rds_report_it() -> None:
    assert percent_of("45%") == 45 and percent_of(100) == 100 and percent_of(" 7% ") == 7
    for nonsense in (None, "", "abc%", "-5%", "450%", 4.5, True and "x"):
        assert percent_of(nonsense) is None


@pytest.fixture
def logs() -> Iterator[Any]:
    with mock_aws():
        aws = Aws(region="eu-west-1", profile=None, endpoint_url=None, stack_name="BitbucketDiyBackup")
        yield aws


def _put(aws: Aws, function: str, *lines: tuple[float, Any]) -> None:
    client = aws.client("logs")
    group = f"/aws/lambda/{function}"
    if not client.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        client.create_log_group(logGroupName=group)
        client.create_log_stream(logGroupName=group, logStreamName="s")
    events = [
        {"timestamp": int(_at(at).timestamp() * 1000), "message": m if isinstance(m, str) else json.dumps(m)}
        for at, m in lines
    ]
    client.put_log_events(logGroupName=group, logStreamName="s", logEvents=events)


def test_only_this_instances_seed_lines_in_its_invocations_windows_each_once(logs: Aws) -> None:
    _put(
        logs,
        "Lock",
        (0.5, {"seed": "[u]  INFO: an earlier run's line", "instance": "prod"}),
        (1.2, {"message": "an ordinary log line", "instance": "prod"}),
        (1.3, "seed, but not JSON"),
        (1.4, {"seed": "[u]  INFO: another instance's lock", "instance": "staging"}),
        (1.5, {"seed": "[u]  INFO: locked with 'abcd…'", "instance": "prod", "lock": "taken"}),
    )
    seeds = SeedLines(logs, "prod", started=T0.timestamp())
    running = _history(("Lock", 1, 2, {"run": {}}), ("Unlock", 3, None, {"run": {}}))
    assert seeds.read(running, now=_at(3.5).timestamp()) == [
        "+    1.5 s  [locked   0.0 s]  [u]  INFO: locked with 'abcd…'"
    ]
    _put(
        logs,
        "Unlock",
        (3.2, {"seed": "[u]  INFO: Bitbucket instance unlocked", "instance": "prod", "lock": "released"}),
    )
    # Read again: the lock's line is not repeated; the unlock's comes with the lock clock, which then stops.
    assert seeds.read(running, now=_at(4).timestamp()) == [
        "+    3.2 s  [locked   1.7 s]  [u]  INFO: Bitbucket instance unlocked"
    ]
    assert seeds.read(running, now=_at(5).timestamp(), final=True) == []
    assert seeds.latest is not None and seeds.latest["lock"] == "released"


def test_a_later_run_of_the_same_function_and_instance_is_not_this_executions(logs: Aws) -> None:
    """The same function's group holds the next backup's lines too (same instance): read after both, the first
    execution's lines end with its own last invocation."""
    _put(
        logs,
        "PollDrain",
        (1.5, {"seed": "[u]  INFO: Waiting for DRAINED state… done (0.5 s)", "instance": "prod"}),
        (30, {"seed": "[u]  INFO: Waiting for DRAINED state… (db 'DRAINING')", "instance": "prod"}),
    )
    seeds = SeedLines(logs, "prod", started=T0.timestamp())
    finished = _history(("PollDrain", 1, 2, {"run": {}}))
    assert seeds.read(finished, now=_at(40).timestamp(), final=True) == [
        "+    1.5 s  [u]  INFO: Waiting for DRAINED state… done (0.5 s)"
    ]


def test_a_function_that_never_wrote_is_no_error(logs: Aws) -> None:
    seeds = SeedLines(logs, "prod", started=T0.timestamp())
    assert seeds.read(_history(("Validate", 1, 2, {})), now=_at(3).timestamp(), final=True) == []


def test_on_a_terminal_a_line_goes_above_the_bar_which_is_then_redrawn() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = ProgressBar(screen, "backup")
    bar.update(40, "Poll drain state", "+12 s")
    bar.line("+   12.1 s  [u]  INFO: db state 'DRAINED'")
    bar.update(40, "Poll drain state", "+12 s")
    written = screen.getvalue()
    assert "\r\x1b[K+   12.1 s  [u]  INFO: db state 'DRAINED'\n" in written
    assert written.count("Poll drain state") == 2  # drawn again below the line
