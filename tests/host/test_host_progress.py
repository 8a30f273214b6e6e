"""The host script's progress reports: real tools (tar and gzip, pg_dump, rsync), the pinned AWS CLI, and moto over
HTTP as CloudWatch Logs; what `bitbucket-backup backup --wait` reads for its progress bar."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from rehearsal.aws_endpoint import moto_endpoint
from rehearsal.local_host import AWS_CLI_DIR
from tests.host.conftest import BitbucketHome, Postgres, run, wait_for
from tests.host.test_host_script import dump, pg_env, table_locked

GROUP = "/bitbucket-diy-backup/test/host-progress"
REGION = "eu-west-1"


def stream_name(tmp_path: Path) -> str:
    return f"prod/{tmp_path.name}/home"  # unique per test (xdist runs others at the same time)


@pytest.fixture
def logs() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("logs", region_name=REGION)
        client.create_log_group(logGroupName=GROUP)
        yield client


def env(seconds: str = "0.2") -> dict[str, str]:
    return {
        "PATH": f"{AWS_CLI_DIR}:{os.environ['PATH']}",
        "AWS_ENDPOINT_URL": moto_endpoint(),
        "BITBUCKET_BACKUP_PROGRESS_SECONDS": seconds,
    }


def flags(stream: str, group: str = GROUP) -> list[str]:
    return ["--progress-group", group, "--progress-stream", stream, "--progress-region", REGION]


def reports(logs: Any, stream: str, until: int = 0, timeout: float = 30) -> list[dict[str, Any]]:
    """The stream's lines; waits (up to `timeout` s) until there are `until` of them at 100 % with a total: the last
    one is put in the background after the subcommand ended. (rsync's own reports reach 100 % too, without a total:
    one of them is not the end, which a busy CI run showed.)"""
    deadline = time.monotonic() + timeout
    while True:
        try:
            events = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, startFromHead=True)["events"]
        except logs.exceptions.ResourceNotFoundException:
            events = []
        found = [json.loads(e["message"]) for e in events]
        ended = sum(1 for f in found if f.get("percent") == 100 and f.get("total") is not None)
        if ended >= until or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_long_archive_reports_the_bytes_tar_has_read_then_100_percent(logs: Any, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    (staging / "big.bin").write_bytes(os.urandom(120 * 1024 * 1024))  # gzip takes seconds over random bytes
    stream = stream_name(tmp_path)
    logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)  # as the part's rsync or pg_dump made it
    out = tmp_path / "prod-1.tar.gz"
    summary = run(
        "archive", "--staging", staging, "--out", out, "--backup-id", "prod-1", "--instance", "prod",
        *flags(stream), env=env(),
    ).summary  # fmt: skip
    found = reports(logs, stream, until=1)
    total = summary["content_bytes"]
    assert found[-1] == {"progress": "archive", "done": total, "total": total, "percent": 100}
    during = found[:-1]
    assert during, "no report while tar ran"
    for report in during:
        assert report["progress"] == "archive" and report["total"] == total
        assert report["done"] >= 0 and report["percent"] == min(100, report["done"] * 100 // total)
    assert [r["done"] for r in during] == sorted(r["done"] for r in during)  # what tar read only grows
    assert any(0 < r["percent"] < 100 for r in during)


def test_a_blocked_pg_dump_reports_what_it_has_written_without_a_total(
    logs: Any, postgres: Postgres, tmp_path: Path
) -> None:
    stream = stream_name(tmp_path)
    with table_locked(postgres, "repository"):  # pg_dump waits for this lock: the phase lasts while it is held
        proc = dump(postgres, tmp_path / "dump", *flags(stream), env={**pg_env(), **env()})
        wait_for(lambda: len(reports(logs, stream)) >= 2, timeout=30)
        assert proc.poll() is None
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    written = json.loads(stdout)["bytes"]
    found = reports(logs, stream, until=1)
    assert found[-1] == {"progress": "pg_dump", "done": written, "total": written, "percent": 100}
    assert all(r["progress"] == "pg_dump" and r["total"] is None and r["percent"] is None for r in found[:-1])
    assert all(0 <= r["done"] <= written for r in found[:-1])


def test_a_host_that_may_not_write_the_progress_warns_once_and_dumps(postgres: Postgres, tmp_path: Path) -> None:
    with table_locked(postgres, "repository"):
        proc = dump(postgres, tmp_path / "dump", *flags("prod/x/db", "/no/such/group"), env={**pg_env(), **env()})
        time.sleep(4)  # the reporter's first attempt (the AWS CLI's start, the refusal) happens meanwhile
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["subcommand"] == "pg-dump"
    warnings = [line for line in stderr.splitlines() if "progress not reported" in line]
    assert len(warnings) == 1 and "/no/such/group" in warnings[0], stderr


def test_a_short_phase_sends_nothing_and_bad_names_are_refused(logs: Any, home: BitbucketHome, tmp_path: Path) -> None:
    stream = stream_name(tmp_path)
    staging = tmp_path / "staging"
    # The locked pass is shorter than one interval: not even the stream is created (nothing on the critical path).
    run("rsync-home", "--home", home.root, "--staging", staging, *flags(stream), env=env("30")).ok()
    assert logs.describe_log_streams(logGroupName=GROUP)["logStreams"] == []
    for bad in (["--progress-group", "a b"], ["--progress-stream", "x;y"]):
        run("rsync-home", "--home", home.root, "--staging", staging, *flags(stream), *bad, env=env()).assert_error(
            2, "rsync-home"
        )
    run("rsync-home", "--home", home.root, "--staging", staging, *flags(stream), env=env("0")).assert_error(
        2, "rsync-home"
    )


def test_rsync_reports_its_own_overall_percentage(logs: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    for d in range(75):  # many small files: rsync takes seconds, and prints a progress line after each
        (home / "shared" / "data" / str(d)).mkdir(parents=True)
        for i in range(200):
            (home / "shared" / "data" / str(d) / str(i)).write_bytes(b"x" * 2048)
    for attempt in range(3):  # a busy machine may start the AWS CLI slower than rsync copies: then again
        stream = f"{stream_name(tmp_path)}-{attempt}"
        staging = tmp_path / f"staging-{attempt}"
        summary = run("rsync-home", "--home", home, "--staging", staging, *flags(stream), env=env("0.05")).ok()
        assert summary["files_transferred"] == 15_000
        created = logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=stream)["logStreams"]
        found = reports(logs, stream, until=1, timeout=15) if created else []
        if len(found) >= 2:  # a report while rsync ran, and the last one
            break
    total = summary["bytes_total"]
    assert found[-1] == {"progress": "rsync", "done": total, "total": total, "percent": 100}
    during = found[:-1]
    assert during and all(r["progress"] == "rsync" and r["total"] is None for r in during)
    assert all(0 < r["done"] <= total and 0 <= r["percent"] <= 100 for r in during)
    assert [r["done"] for r in during] == sorted(r["done"] for r in during)
