"""The names the Lambdas emit metrics under and the stack's alarms and dashboard read: one place, so the two sides
cannot drift apart. Powertools adds the `service` dimension to every metric, so each per-instance metric has the
dimensions {service, instance}."""

from __future__ import annotations

NAMESPACE = "BitbucketDiyBackup"
SERVICE = "bitbucket-diy-backup"
INSTANCE_DIMENSION = "instance"

# One data point per run, from the finalize step (success) or the failure path.
BACKUP_SUCCEEDED = "BackupSucceeded"
BACKUP_FAILED = "BackupFailed"
LOCK_WINDOW = "LockWindowSeconds"
DRAIN = "DrainSeconds"
DURATION = "BackupDurationSeconds"
BACKUP_SIZE = "BackupSizeGigabytes"
# One data point per restore drill (functions.drill), 1 or 0 each.
DRILL_SUCCEEDED = "DrillSucceeded"
DRILL_FAILED = "DrillFailed"
# From the staleness check, every CHECK_INTERVAL_MINUTES, whether or not any backup ran.
HOURS_SINCE_COMPLETE = "HoursSinceLastCompleteBackup"
CHECK_INTERVAL_MINUTES = 60


def dimensions(instance: str) -> dict[str, str]:
    return {"service": SERVICE, INSTANCE_DIMENSION: instance}
