"""Undoing a run: shared by the workflow's failure path and the safety net, so both act the same way."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from functions import runs
from functions.clients.aws import error_code
from functions.clients.bitbucket_answers import Lock
from functions.errors import BackupError, BitbucketRequestFailed
from functions.models import environment
from functions.models.config import InstanceConfig
from functions.observability import redact
from functions.strategies import COMPLETE, FAILED, Artifact, Catalog, strategies_for

if TYPE_CHECKING:  # the client is made by functions.steps, which imports requests only then
    from functions.clients.bitbucket import BitbucketClient


def cancel_and_unlock(client: BitbucketClient, record: runs.Run, actions: list[str]) -> str:
    """Cancel the backup task (if one was started) and unlock with the stored token; says whether it worked."""
    assert record.unlock_token
    if record.cancel_token:
        try:
            client.cancel(record.cancel_token)
            actions.append("backup task cancelled")
        except BackupError as error:
            if isinstance(error, BitbucketRequestFailed) and error.status == 409:
                # A conflict: most often the task has ended (complete, or cancelled in Bitbucket's UI).
                actions.append("backup task not cancelled: Bitbucket refused with HTTP 409 (the task had ended)")
            else:
                actions.append(f"backup task not cancelled ({redact(str(error))}); unlocking anyway")
    try:
        client.unlock(Lock(unlock_token=record.unlock_token, owner=""))
    except BackupError as error:
        return (
            f"NO - unlock failed ({redact(str(error))}); the token is kept in the run table "
            f"'{environment.runs_table_for_messages()}' under instance '{record.instance}': unlock by hand with "
            f"`bitbucket-backup unlock {record.instance}` (it uses that token)"
        )
    runs.update(
        record.instance,
        record.backup_id,
        phase="unlocked",
        unlocked_at=time.time(),
        remove=("unlock_token", "cancel_token"),
    )
    return "yes"


def unlocked_without_record(client: BitbucketClient, base_url: str) -> str:
    """What to report when a run's record, with its unlock token, is gone: ask Bitbucket rather than assume."""
    try:
        state = client.status()
    except BackupError as error:
        return (
            f"UNKNOWN - this run's record, with its unlock token, is gone and Bitbucket could not be asked whether it "
            f"is still locked ({redact(str(error))}): check {base_url}/status; if it says MAINTENANCE, "
            "end maintenance mode by hand (README, Troubleshooting)"
        )
    if state == "MAINTENANCE":
        return (
            "NO - Bitbucket is still in maintenance mode, and this run's record, with its unlock token, is gone "
            "(expired or removed), so it could not unlock: make sure no one else is running a backup or an upgrade, "
            "then end maintenance mode by hand (README, Troubleshooting: without the token, restart Bitbucket)"
        )
    return f"yes (this run's record was gone; Bitbucket says it is {state}, not in maintenance mode)"


def discard(
    config: InstanceConfig,
    backup_id: str,
    actions: list[str],
    *,
    originals_complete: bool = False,
    locked: bool = True,
) -> None:
    """Mark this run's unfinished artifacts failed and delete them; complete ones (finalized) are kept.

    With originals_complete (the failure came during the disaster-recovery copies, which start only once every
    original is complete) the originals are marked complete and kept; only the unfinished copies are removed.

    First, the run's host commands still running are stopped: an archive still uploading when the other part failed
    would otherwise land after this cleanup, an orphan no later run removes. What the run made on its hosts under
    the lock (a home snapshot) is removed only if it ever locked (`locked`): asking a host that is down costs the
    notification minutes.

    Before anything is listed, the run is marked as being discarded: Step Functions does not stop a copy step still
    running when another branch failed, and such a copy removes what it made once it reads the mark (see
    functions/backup.py, `_unless_discarded`)."""
    mark_discarding(config, backup_id, actions)
    stop_host_commands(config, backup_id, actions)
    if locked:
        discard_on_hosts(config, backup_id, actions)
    for strategy in strategies_for(config):
        for artifact in strategy.artifacts(backup_id):
            if artifact.status == COMPLETE:
                continue  # marked complete by finalize: a good backup, whatever failed after it
            if originals_complete:
                strategy.set_status(artifact, COMPLETE)
                actions.append(f"kept {artifact.id} as a complete backup")
                continue
            _drop(strategy, artifact, actions)
        for target in config.copies:
            bound = strategy.at(target)
            try:
                copies = bound.artifacts(backup_id)
            except ClientError as error:
                actions.append(f"copies in {target.label} not checked ({error_code(error)}): check them by hand")
                continue
            for artifact in copies:
                if artifact.status != COMPLETE:
                    _drop(bound, artifact, actions, f" in {target.label}")
    if originals_complete:
        # The originals stay: they must not stay shared with the copy targets' accounts (deleted ones no longer are).
        unshared, failed = unshare(config, backup_id)
        actions.extend(unshared + failed)


def mark_discarding(config: InstanceConfig, backup_id: str, actions: list[str]) -> None:
    """The run's mark for its copy steps still running; if it cannot be written, the cleanup goes on and says so."""
    try:
        runs.mark_discarding(config.name, backup_id)
    except ClientError as error:
        actions.append(
            f"run {backup_id} not marked as discarded ({error_code(error)}): a copy that ended after this cleanup may "
            f"have left a snapshot or host command of {backup_id}: check by hand"
        )


# A run's host commands are looked for among those sent this long ago at most (a backup's execution is shorter).
RUN_HISTORY_S = 2 * 86400


def stop_host_commands(config: InstanceConfig, backup_id: str, actions: list[str]) -> None:
    from functions.clients import host
    from functions.strategies import parts_for

    hosts = [copy.instance_id for copy in parts_for(config).hosts.values()]
    try:
        actions.extend(host.cancel_running(hosts, backup_id, since=time.time() - RUN_HISTORY_S))
    except ClientError as error:  # the cleanup goes on; the operator is told to look
        actions.append(
            f"host commands of {backup_id} not checked ({error_code(error)}): check {', '.join(hosts)} by hand"
        )


def discard_on_hosts(config: InstanceConfig, backup_id: str, actions: list[str]) -> None:
    """What the run's host commands leave on a host that no later run removes (a home snapshot), once they are
    stopped; a failure is said, and the cleanup goes on."""
    from functions.errors import HostCommandFailed
    from functions.strategies import parts_for

    for part, copy in parts_for(config).hosts.items():
        try:
            actions.extend(copy.discard_on_host(backup_id))
        except (HostCommandFailed, ClientError) as error:
            actions.append(f"{part}: could not remove what the run left on {copy.instance_id} ({error}): check by hand")


def unshare(config: InstanceConfig, backup_id: str) -> tuple[list[str], list[str]]:
    """Removes the shares of one backup's originals with the accounts of cross-account copy targets, which the copy
    step added so that the targets' roles could copy them. Never raises; returns (what was unshared, what could not
    be: one line each, with what to do)."""
    targets = [t for t in config.copies if t.account_id]
    done: list[str] = []
    failed: list[str] = []
    if not targets:
        return done, failed
    for strategy in strategies_for(config):
        try:
            originals = strategy.artifacts(backup_id)
        except ClientError as error:
            failed.append(f"{strategy.part} originals not checked for shares ({error_code(error)}): check them by hand")
            continue
        for original in originals:
            for target in targets:
                try:
                    if strategy.unshare(original, target):
                        done.append(f"{original.id} no longer shared with account {target.account_id}")
                except ClientError as error:
                    failed.append(
                        f"{original.id} is still shared with account {target.account_id} ({error_code(error)}): "
                        "remove the share by hand"
                    )
    return done, failed


def _drop(strategy: Catalog, artifact: Artifact, actions: list[str], where: str = "") -> None:
    """Deletes one unfinished artifact of this run; never a locked one (it is kept, and said so)."""
    try:
        held = strategy.held(artifact)
        if held:
            actions.append(f"kept {artifact.id}{where}: {held}")
            return
        strategy.set_status(artifact, FAILED)
        strategy.delete(artifact)
        actions.append(f"deleted {artifact.id}{where}")
    except ClientError as error:
        actions.append(f"{artifact.id}{where} not deleted ({error_code(error)}): delete it by hand")
    except BackupError as error:  # a search cluster that does not answer, or a snapshot that is not ours
        actions.append(f"{artifact.id}{where} not deleted ({error}): delete it by hand")
