"""The hosts' progress reports: what the progress bar shows while rsync, pg_dump, the archive or its upload runs.

The host script reports every few seconds into the stack's HostProgress log group, one stream per run and part
(`<instance>/<backup id>/<part>`, functions/strategies/host_copy.py), lines such as
`{"progress": "rsync", "done": 123, "total": null, "percent": 37}`. A host is trusted less than the stack (any host
with the permission may write any stream of the group), so a report gives numbers and one of the known phases only:
the text shown is this module's own, never a host's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from bitbucket_backup_cli.aws import Aws
from bitbucket_backup_cli.seed import filter_events

PHASES = ("rsync", "pg_dump", "mysqldump", "archive", "upload")
# The home, the database, a Mesh node (`mesh-<name>`, functions.models.part_config.MESH_PART: not imported, which
# would load pydantic for the bar): plain words only, since the part is shown as it is.
PART = re.compile(r"^(home|database|mesh-[a-z][a-z0-9]*(?:-[a-z0-9]+)*)$")
_MAX = 2**63


@dataclass(frozen=True)
class Report:
    part: str
    phase: str
    done: int  # bytes
    total: int | None
    percent: int | None
    at: float  # epoch seconds

    def text(self) -> str:
        if self.percent is None:  # a dump: no total is known ahead (pg_dump compresses as it writes)
            return f"{self.part}: {self.phase}, {size(self.done)} written"
        of = f" of {size(self.total)}" if self.total is not None else ""
        return f"{self.part}: {self.phase} {self.percent}% ({size(self.done)}{of})"


def size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX else None


def parse(stream: str, message: str, timestamp_ms: Any, instance: str) -> Report | None:
    """A report of `instance`'s stream, or None for anything else (another instance's, or not a report)."""
    name, _, rest = stream.partition("/")
    part = rest.rsplit("/", 1)[-1]
    if name != instance or not PART.fullmatch(part) or len(part) > 29 or not isinstance(timestamp_ms, int):
        return None
    try:
        record = json.loads(message)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("progress") not in PHASES:
        return None
    done, total, percent = _count(record.get("done")), _count(record.get("total")), _count(record.get("percent"))
    if done is None or (percent is not None and percent > 100):
        return None
    if (record.get("total") is not None and total is None) or (record.get("percent") is not None and percent is None):
        return None
    return Report(part, str(record["progress"]), done, total, percent, timestamp_ms / 1000)


class HostProgress:
    """The newest report of one instance's run since `started` (epoch seconds), read incrementally."""

    def __init__(self, aws: Aws, instance: str | None, started: float) -> None:
        self.aws, self.instance, self.started = aws, instance, started
        self._group: str | bool | None = False  # not looked up yet
        self._since_ms = int(started * 1000)
        self.latest: Report | None = None

    def group(self) -> str | None:
        if self._group is False:
            from botocore.exceptions import ClientError

            try:
                self._group = self.aws.host_progress_group()
            except ClientError:  # no permission to look: the bar goes on without the hosts' reports
                self._group = None
        return self._group if isinstance(self._group, str) else None

    def read(self, now: float) -> Report | None:
        """Reads what was reported since the last read; returns the newest report so far."""
        group = self.group()
        if group is None or self.instance is None:
            return self.latest
        for event in filter_events(
            self.aws,
            logGroupName=group,
            logStreamNamePrefix=f"{self.instance}/",  # checked again on each event: moto ignores the prefix
            startTime=self._since_ms,
            endTime=int(now * 1000) + 1000,
        ):
            report = parse(
                str(event.get("logStreamName", "")), str(event.get("message", "")), event.get("timestamp"),
                self.instance,
            )  # fmt: skip
            if report is not None and (self.latest is None or report.at >= self.latest.at):
                self.latest = report
        if self.latest is not None:  # the next read starts at the newest report (it is read again, and kept)
            self._since_ms = int(self.latest.at * 1000)
        return self.latest
