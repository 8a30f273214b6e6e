"""`bitbucket-backup unlock INSTANCE`: end a maintenance lock this tool took and could not release.

Runs in the backup's safety-net function, which already does this for executions that ended without their own
cleanup: it reaches Bitbucket where the backup's functions do, and the operator's command line never reads the
Bitbucket credentials or the token. It acts only on a lock it can prove is this tool's (the unlock
token in the run record); it never guesses: without the token it says what it found and what to do by hand.

What it found is one of:
- `unlocked`: the run record held the token; the backup task was cancelled (if one was started) and Bitbucket
  unlocked with it; the run's guard is released (the next backup may run) and a notification says so.
- `not-locked`: Bitbucket is not in maintenance mode (a stale token, if any, is dropped from the record).
- `not-ours`: Bitbucket is in maintenance mode, but this tool holds no token for it: someone else's lock, or the
  run record (with its token) is gone. Nothing is touched.
- `running`: the backup that locked is still running: stop it first (`bitbucket-backup cancel`), whose failure path or
  safety net unlocks.
- `failed`: Bitbucket refused the unlock with the token (kept in the record).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from functions import cleanup, notify, runs, trusted_config
from functions.clients.aws import client
from functions.errors import BackupError
from functions.observability import bind, redact
from functions.steps import bitbucket, say

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.results import OperatorUnlocked

BY_HAND = "README, Troubleshooting: 'Unlocking Bitbucket by hand'"


def _execution_running(execution_arn: str) -> bool:
    if not execution_arn:
        return False
    status = client("stepfunctions").describe_execution(executionArn=execution_arn)["status"]
    return bool(status == "RUNNING")


def unlock(instance: str) -> OperatorUnlocked:
    config, _ = trusted_config.load(instance, step="unlock")
    bind(instance=instance)
    record = runs.get(instance)
    bitbucket_ = bitbucket(config)
    if record is not None and record.unlock_token:
        bind(backup_id=record.backup_id)
        if _execution_running(record.execution):
            name = record.execution.rsplit(":", 1)[-1]
            return {
                "outcome": "running",
                "backup_id": record.backup_id,
                "message": (
                    f"backup {record.backup_id} is still running (execution {name}): stop it with "
                    f"`bitbucket-backup cancel {name}`; its safety net then unlocks Bitbucket"
                ),
            }
        if bitbucket_.status() != "MAINTENANCE":
            runs.update(instance, record.backup_id, remove=("unlock_token", "cancel_token"))
            return {
                "outcome": "not-locked",
                "backup_id": record.backup_id,
                "message": f"Bitbucket is not in maintenance mode; the stale token of {record.backup_id} was dropped",
            }
        actions: list[str] = []
        unlocked = cleanup.cancel_and_unlock(bitbucket_, record, actions)
        if unlocked != "yes":
            return {"outcome": "failed", "backup_id": record.backup_id, "message": unlocked, "actions": actions}
        say(config, "Bitbucket instance unlocked", lock="released")
        # The run is over: its guard goes, so that the next backup is not refused; the notification is the record.
        runs.release(instance, record.backup_id)
        result: OperatorUnlocked = {
            "outcome": "unlocked",
            "backup_id": record.backup_id,
            "message": f"Bitbucket unlocked with the token of backup {record.backup_id}",
            "actions": actions,
        }
        notify.publish(
            f"Bitbucket unlocked by an operator: {instance}",
            instance,
            "unlocked",
            {"instance": instance, "backup_id": record.backup_id, "unlocked_at": time.time(), "cleanup": actions},
        )
        return result
    try:
        state = bitbucket_.status()
    except BackupError as error:
        return {"outcome": "failed", "backup_id": None, "message": f"Bitbucket cannot be asked: {redact(str(error))}"}
    if state != "MAINTENANCE":
        return {"outcome": "not-locked", "backup_id": None, "message": f"Bitbucket is {state}: nothing to unlock"}
    return {
        "outcome": "not-ours",
        "backup_id": None,
        "message": (
            "Bitbucket is in maintenance mode, but this tool holds no unlock token for it: another tool or person "
            "locked it, or this tool's run record (with its token) is gone. Nothing was touched; find who holds the "
            f"lock, or end maintenance mode by hand ({BY_HAND})"
        ),
    }
