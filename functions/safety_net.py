"""The safety net: what happens when a backup execution ends without its own failure path having run.

StopExecution (an operator pressing Stop), an execution timeout, or a failure path that itself failed, run no
Catch. EventBridge delivers the execution's status change here; if the run table still holds this execution's
run, the net cancels the backup task, unlocks with the stored token, removes what the run made and notifies.
It acts only on runs of this tool (the item's execution must match), and only once: the item is removed when
done, so a second delivery finds nothing.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from functions import notify, runs
from functions.clients.bitbucket import Lock
from functions.errors import BackupError
from functions.models.events import ExecutionInput
from functions.observability import bind, logger, redact
from functions.strategies import COMPLETE, FAILED, strategies_for
from functions.workflow import bitbucket, load_config

ACT_ON = {"ABORTED", "TIMED_OUT", "FAILED"}


def handle_status_change(detail: dict[str, Any]) -> dict[str, Any]:
    status, execution = str(detail.get("status", "")), str(detail.get("executionArn", ""))
    if status not in ACT_ON:
        return {"action": "none", "reason": f"status {status}"}
    try:
        instance = ExecutionInput.model_validate(json.loads(detail.get("input") or "{}")).instance
    except ValueError:
        return {"action": "none", "reason": "the execution input names no instance"}
    bind(instance=instance)
    record = runs.get(instance)
    if record is None or record.execution != execution:
        # The failure path already cleaned up (or another run holds the instance now): nothing of ours to do.
        return {"action": "none", "reason": "no run of this execution is open"}
    if record.handled:
        return {"action": "none", "reason": "the workflow's failure path already reported this run"}
    bind(backup_id=record.backup_id)
    config = load_config(instance)
    actions: list[str] = []
    unlocked = "yes (this run never locked Bitbucket)"
    if record.phase == "unlocked":
        unlocked = "yes (unlocked before the execution ended)"
    elif record.unlock_token:
        client = bitbucket(config)
        if record.cancel_token:
            try:
                client.cancel(record.cancel_token)
                actions.append("backup task cancelled")
            except BackupError as error:
                actions.append(f"cancel not needed or refused ({redact(str(error))})")
        try:
            client.unlock(Lock(unlock_token=record.unlock_token, owner=""))
            unlocked = "yes (by the safety net)"
        except BackupError as error:
            unlocked = f"NO - unlock failed ({redact(str(error))}); unlock by hand (README, Troubleshooting)"
    for strategy in strategies_for(config):
        for artifact in strategy.artifacts(record.backup_id):
            if artifact.status == COMPLETE:
                continue  # finalized before the execution ended: a good backup
            strategy.set_status(artifact, FAILED)
            try:
                strategy.delete(artifact)
                actions.append(f"deleted {artifact.id}")
            except ClientError as error:
                actions.append(f"{artifact.id} tagged failed, not deleted ({error.response['Error']['Code']})")
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
