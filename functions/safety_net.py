"""The safety net: what happens when a backup execution ends without its own failure path having run.

StopExecution (an operator pressing Stop), an execution timeout, or a failure path that itself failed, run no
Catch. EventBridge delivers the execution's status change here; if the run table still holds this execution's
run, the net cancels the backup task, unlocks with the stored token, removes what the run made and notifies.
It acts only on runs of this tool (the item's execution must match), and only once: the item is removed when
done, so a second delivery finds nothing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from functions import cleanup, notify, runs, trusted_config
from functions.models.config import InstanceConfig
from functions.models.events import ExecutionInput
from functions.observability import bind, logger
from functions.steps import bitbucket

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.results import SafetyNetActed

ACT_ON = {"ABORTED", "TIMED_OUT", "FAILED"}


def handle_status_change(detail: dict[str, Any]) -> SafetyNetActed:
    status, execution = str(detail.get("status", "")), str(detail.get("executionArn", ""))
    if status not in ACT_ON:
        return {"action": "none", "reason": f"status {status}"}
    try:
        instance = ExecutionInput.model_validate(json.loads(detail.get("input") or "{}")).instance
    except ValueError:
        return {"action": "none", "reason": "the execution input names no instance"}
    bind(instance=instance)
    record = runs.get(instance)
    if record is None and status != "FAILED":
        # No Catch ran, and the record (with its unlock token) is gone or was never made: ask Bitbucket instead of
        # assuming this execution never locked it.
        return _without_record(instance, execution, status)
    if record is None or record.execution != execution:
        # The failure path already cleaned up (or another run holds the instance now): nothing of ours to do.
        return {"action": "none", "reason": "no run of this execution is open"}
    if record.handled:
        return {"action": "none", "reason": "the workflow's failure path already reported this run"}
    bind(backup_id=record.backup_id)
    config = _load_config(instance)
    actions: list[str] = []
    unlocked = "yes (this run never locked Bitbucket)"
    if record.phase == "unlocked":
        unlocked = "yes (unlocked before the execution ended)"
    elif record.unlock_token:
        unlocked = cleanup.cancel_and_unlock(bitbucket(config), record, actions)
        unlocked = "yes (by the safety net)" if unlocked == "yes" else unlocked
    cleanup.discard(
        config,
        record.backup_id,
        actions,
        originals_complete=record.copies_started_at is not None,
        locked=record.ever_locked,
    )
    if unlocked.startswith("yes"):
        runs.release(instance, record.backup_id)
    logger.warning(f"safety net acted on {status} execution", extra={"unlocked": unlocked})
    notify.publish(
        f"Bitbucket backup {status}: {instance} - cleaned up by the safety net",
        instance,
        "failed",
        {
            "instance": instance,
            "backup_id": record.backup_id,
            "execution": execution,
            "status": status,
            "phase": record.phase,
            "unlocked": unlocked,
            "cleanup": actions,
        },
    )
    return {"action": "cleaned", "unlocked": unlocked, "cleanup": actions}


def _without_record(instance: str, execution: str, status: str) -> SafetyNetActed:
    config = _load_config(instance)
    if config.zero_downtime:
        return {"action": "none", "reason": "no run of this execution is open (zero-downtime: never locks)"}
    unlocked = cleanup.unlocked_without_record(bitbucket(config), config.base_url)
    if unlocked.startswith("yes"):
        return {"action": "none", "reason": "no run of this execution is open and Bitbucket is not locked"}
    logger.warning(f"safety net: {status} execution left no run record", extra={"unlocked": unlocked})
    notify.publish(
        f"Bitbucket backup {status}: {instance} - Bitbucket may still be locked",
        instance,
        "failed",
        {"instance": instance, "execution": execution, "status": status, "unlocked": unlocked, "cleanup": []},
    )
    return {"action": "reported", "unlocked": unlocked}


def _load_config(instance: str) -> InstanceConfig:
    """The newest deployed configuration of `instance` (see functions.trusted_config)."""
    return trusted_config.load(instance)[0]
