"""The command line's reading of the hosts' progress reports (bitbucket_backup_cli/host_progress.py) and what the
bar shows from them (executions.long_part); against moto's CloudWatch Logs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from bitbucket_backup_cli.aws import Aws
from bitbucket_backup_cli.executions import long_part
from bitbucket_backup_cli.host_progress import HostProgress, Report, parse

T0 = float(int(time.time()) - 600)  # epoch seconds (CloudWatch Logs refuses lines from the future)
GROUP = "BitbucketDiyBackup-HostProgress1A2B3C4D-Qx7Zk9"  # as CloudFormation names the stack's group


def report(**fields: Any) -> str:
    return json.dumps({"progress": "rsync", "done": 10, "total": None, "percent": 5, **fields})


@pytest.mark.parametrize(
    ("stream", "message", "expected"),
    [
        ("prod/prod-20270115-020000/home", report(), "home: rsync 5% (10 B)"),
        ("prod/prod-20270115-020000/database", report(progress="pg_dump", done=3 << 20, percent=None),
         "database: pg_dump, 3.0 MiB written"),
        ("prod/prod-20270115-020000/home", report(progress="upload", done=1 << 30, total=4 << 30, percent=25),
         "home: upload 25% (1.0 GiB of 4.0 GiB)"),
        ("prod/prod-20270115-020000/mesh-node2", report(percent=40), "mesh-node2: rsync 40% (10 B)"),  # a Mesh node
        ("prod/x/mesh-\x1b]0;pwned\x07", report(), None),  # a part name is shown as it is: plain words only
        ("prod/x/mesh-", report(), None),
        ("staging/staging-20270115-020000/home", report(), None),  # another instance's
        ("prod/x/logs", report(), None),  # not a part
        ("prod/x/home", report(progress="\x1b]0;pwned\x07"), None),  # a host's text is never shown
        ("prod/x/home", report(done=True), None),
        ("prod/x/home", report(done=-1), None),
        ("prod/x/home", report(percent=101), None),
        ("prod/x/home", report(total="lots"), None),
        ("prod/x/home", report(percent="37"), None),
        ("prod/x/home", "rsync 37%", None),
        ("prod/x/home", "[1, 2]", None),
    ],
)  # fmt: skip
def test_a_report_gives_numbers_and_a_known_phase_of_this_instance_only(
    stream: str, message: str, expected: str | None
) -> None:
    found = parse(stream, message, int(T0 * 1000), "prod")
    assert (found.text() if found else None) == expected


def test_the_bar_shows_a_hosts_report_only_while_its_step_runs() -> None:
    rsync = Report("home", "rsync", 10, None, 37, at=T0 + 5)
    dump = Report("database", "pg_dump", 2048, None, None, at=T0 + 5)
    assert long_part(40, "Copy home", None, rsync, since=T0 + 1) == (37, "home: rsync 37% (10 B)")
    assert long_part(40, "Copy database", None, dump, since=T0 + 1) == (40, "database: pg_dump, 2.0 KiB written")
    assert long_part(60, "Finalize", None, rsync, since=T0 + 6) == (60, "Finalize")  # the report is of an ended step
    snapshot = {"percent": 12, "part": "home"}
    assert long_part(40, "Wait for snapshots", snapshot, None, since=T0) == (12, "home snapshot")


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        aws = Aws(region="eu-west-1", profile=None, endpoint_url=None, stack_name="BitbucketDiyBackup")
        yield aws


def _put(aws: Aws, stream: str, *lines: tuple[float, str]) -> None:
    client = aws.client("logs")
    if not client.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=stream)["logStreams"]:
        client.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    events = [{"timestamp": int((T0 + at) * 1000), "message": m} for at, m in lines]
    client.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events)


def test_the_newest_report_of_this_instances_run_read_incrementally(aws: Aws) -> None:
    assert HostProgress(aws, "prod", T0).read(T0 + 1) is None  # no group (a stack without archives): no error
    aws.client("logs").create_log_group(logGroupName=GROUP)
    _put(aws, "prod/prod-20270115-020000/home", (-50, report(percent=99)))  # before this run started
    progress = HostProgress(aws, "prod", T0)
    assert progress.read(T0 + 1) is None
    _put(aws, "prod/prod-20270115-020000/home", (2, report(percent=10)), (4, report(percent=37)))
    _put(aws, "prod/prod-20270115-020000/database", (3, report(progress="pg_dump", percent=None)))
    _put(aws, "staging/staging-20270115-020000/home", (5, report(percent=80)))  # another instance, later
    _put(aws, "prod/prod-20270115-020000/home", (4.5, report(progress="\x1b[2J", percent=90)))  # refused
    found = progress.read(T0 + 6)
    assert found is not None and (found.part, found.phase, found.percent) == ("home", "rsync", 37)
    _put(aws, "prod/prod-20270115-020000/database", (7, report(progress="pg_dump", done=4096, percent=None)))
    found = progress.read(T0 + 8)
    assert found is not None and found.text() == "database: pg_dump, 4.0 KiB written"
    assert progress.read(T0 + 9) == found  # nothing new: the newest stays
