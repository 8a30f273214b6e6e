"""Per-run metrics and the staleness check.

Each run emits one set of data points with the dimension `instance` (plus Powertools' `service`): the finalize step
on success, the failure path on failure; the step's handler flushes them (Powertools `log_metrics`) as an EMF log
line, which CloudWatch turns into metrics. The staleness check runs on its own schedule, so that backups which
silently stop (schedule disabled, every run skipped) still move a metric: hours since the newest complete backup.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions.catalog import backup_time, newest_complete
from functions.clients.aws import client
from functions.errors import BackupError
from functions.models import environment
from functions.models import metrics as names
from functions.models.config import ConfigError, InstanceConfig, parse_instance_config
from functions.observability import logger, metrics, redact

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.results import BackupSummary, StalenessReport


def _emit(instance: str, values: dict[str, tuple[str, float]], *, flush: bool = False) -> None:
    metrics.add_dimension(names.INSTANCE_DIMENSION, instance)
    for name, (unit, value) in values.items():
        metrics.add_metric(name=name, unit=unit, value=value)
    if flush:  # several instances in one invocation: each needs its own dimension value, so its own EMF record
        metrics.flush_metrics()
        metrics.clear_metrics()


def record_success(instance: str, summary: BackupSummary) -> None:
    """The run's numbers, from finalize's summary: lock window and drain (known since the unlock), total duration,
    and the size of what was copied where the strategies know it (snapshot volume sizes, archive bytes)."""
    values: dict[str, tuple[str, float]] = {
        names.BACKUP_SUCCEEDED: ("Count", 1),
        names.BACKUP_FAILED: ("Count", 0),
        names.DURATION: ("Seconds", float(summary["duration_s"])),
    }
    for name, seconds in ((names.LOCK_WINDOW, summary.get("lock_window_s")), (names.DRAIN, summary.get("drain_s"))):
        if seconds is not None:
            values[name] = ("Seconds", float(seconds))
    size = backup_size_gb(summary)
    if size is not None:
        values[names.BACKUP_SIZE] = ("Gigabytes", size)
    _emit(instance, values)


def record_failure(instance: str | None, step: str) -> None:
    metrics.add_metadata(key="step", value=step)  # in the EMF record (Logs Insights), not a dimension
    _emit(instance or "unknown", {names.BACKUP_SUCCEEDED: ("Count", 0), names.BACKUP_FAILED: ("Count", 1)})


def backup_size_gb(summary: Mapping[str, Any]) -> float | None:
    """Snapshots report their volume or allocated size (GB); archives their bytes. None if nothing is known."""
    sizes: list[float] = []
    archived = {a["part"] for a in summary.get("archive") or []}
    for artifact in summary.get("artifacts") or []:
        if artifact.get("part") not in archived and artifact.get("size_gb") is not None:
            sizes.append(float(artifact["size_gb"]))
    for archive in summary.get("archive") or []:
        if archive.get("size") is not None:
            sizes.append(int(archive["size"]) / 1024**3)
    return round(sum(sizes), 3) if sizes else None


# --- staleness ---------------------------------------------------------------------------------------------------


def configured_instances() -> list[tuple[InstanceConfig, datetime]]:
    """Every instance of this deployment, from the configuration parameters, with when its parameter was written."""
    prefix = environment.config_prefix()
    found = []
    for page in client("ssm").get_paginator("get_parameters_by_path").paginate(Path=prefix, Recursive=False):
        for parameter in page["Parameters"]:
            try:
                config = parse_instance_config(json.loads(parameter["Value"]))
            except (ValueError, ConfigError) as error:
                logger.error(f"the stored configuration {parameter['Name']} is invalid: {error}")
                continue
            found.append((config, parameter["LastModifiedDate"]))
    return found


def hours_since_complete(config: InstanceConfig, configured_at: datetime, now: datetime) -> tuple[float, str | None]:
    """Hours since the newest complete backup started; with none at all, since the instance was configured (so a
    new deployment is not stale at once, and one that never completes a backup becomes stale in time)."""
    newest = newest_complete(config)
    since = (backup_time(newest) if newest else None) or configured_at
    return max(0.0, (now - since).total_seconds() / 3600), newest


def check_staleness(now: datetime | None = None) -> StalenessReport:
    """One data point per instance. An instance whose catalog cannot be read gets none: its alarm treats the
    missing data as breaching, as it does when this check stops running altogether."""
    now = now or datetime.now(UTC)
    report: StalenessReport = {}
    for config, configured_at in configured_instances():
        started = time.monotonic()
        try:
            hours, newest = hours_since_complete(config, configured_at, now)
        except (ClientError, BackupError) as error:
            logger.error(f"cannot read the catalog of '{config.name}': {redact(str(error))}")
            report[config.name] = {"error": type(error).__name__}
            continue
        limit = config.staleness_limit_hours
        _emit(config.name, {names.HOURS_SINCE_COMPLETE: ("None", round(hours, 2))}, flush=True)
        report[config.name] = {
            "hours_since_complete": round(hours, 2),
            "newest_complete": newest,
            "limit_hours": limit,
            "stale": bool(limit and hours > limit),
        }
        logger.info(
            f"{config.name}: newest complete backup {newest or 'none'}, {hours:.1f} h ago (limit {limit or 'none'})",
            extra={"seconds": round(time.monotonic() - started, 3)},
        )
    return report
