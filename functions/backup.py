"""The logic of each step of the backup state machine. Handlers parse events and call these.

Timing facts (lock, drain, unlock) are kept in the run table so that every step, and the failure path,
sees the same clock and the same tokens without passing them through the execution's state.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from functions import catalog, notify, polling, preflight, runs, trusted_config
from functions.clients import host
from functions.clients.aws import client, error_code
from functions.clients.bitbucket_answers import Lock, MaintenanceState
from functions.errors import (
    BackupCancelled,
    BackupError,
    BitbucketRequestFailed,
    BitbucketUnavailable,
    CopyFailed,
    DrainTimeout,
    InvalidInput,
    RunDiscarded,
    SnapshotFailed,
    SnapshotTimeout,
)
from functions.models import environment
from functions.models.config import CopyTarget, InstanceConfig
from functions.models.events import ExecutionInput, RunContext, RunFlow, parse
from functions.models.part_config import RsyncHomeConfig
from functions.models.steps import BACKUP, Step
from functions.observability import bind, logger, redact, short
from functions.steps import bitbucket, cause_text, say

# The strategies (and cleanup, monitoring, which use them) are imported by the steps that need them: the lock, start,
# drain, progress and unlock handlers start without them (README, "What it measured"); the results' TypedDicts are
# types only (creating them costs a few ms; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.clients.bitbucket import BitbucketClient
    from functions.models.results import (
        ArchiveSummary,
        BackupFailed,
        BackupStarted,
        BackupSummary,
        CopiesChecked,
        DrainPolled,
        HostCommand,
        HostProgress,
        Immutability,
        Locked,
        PartCopied,
        ProgressSent,
        SnapshotsChecked,
        Unlocked,
    )
    from functions.strategies import Artifact, Catalog, HostCopy

FIRST_PROGRESS, LAST_PART_PROGRESS = 10, 90
# What check_host passes on: a copy's progress stays a copy's (its part and artifacts go through unchanged).
P = TypeVar("P", bound="HostProgress")


def backup_id_for(instance: str, start_time: str) -> str:
    started = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    return f"{instance}-{started.astimezone(UTC):%Y%m%d-%H%M%S}"


def prepare(raw_input: dict[str, Any], execution: str, start_time: str) -> RunContext:
    """Everything that can fail before the lock, checked while Bitbucket is live."""
    request = parse(ExecutionInput, raw_input, "validate")
    bind(instance=request.instance)
    config, version = trusted_config.load(request.instance)
    backup_id = backup_id_for(config.name, start_time)
    bind(backup_id=backup_id)
    if config.connection_warning:
        logger.warning(config.connection_warning)
    # The guard first: an overlapping execution must stop here, before it looks at (or touches) Bitbucket.
    runs.acquire(config.name, backup_id, execution, ttl_seconds=runs.record_expiry_seconds(config))
    try:
        facts = preflight.check(config)
        config = preflight.resolve_excluded_repos(config)
    except Exception:
        runs.release(config.name, backup_id)
        raise
    if config.zero_downtime:
        say(
            config,
            f"prepared zero-downtime backup {backup_id} ({config.parts_text}): "
            f"Bitbucket {facts['bitbucket_version']}, no lock needed",
        )
    else:
        say(
            config,
            f"prepared backup {backup_id} ({config.parts_text}): Bitbucket reachable, credentials accepted",
        )
    logger.info("preflight passed", extra=facts)
    bitbucket_version = facts.get("bitbucket_version")
    return RunContext(
        instance=config.name,
        backup_id=backup_id,
        execution=execution,
        started_at=time.time(),
        config_version=version,
        flow=RunFlow.of(config),
        bitbucket_version=str(bitbucket_version)[:100] if bitbucket_version else None,
        exclude_repo_ids=_excluded_ids(config),
    )


def _excluded_ids(config: InstanceConfig) -> list[int] | None:
    """The resolved home.exclude_repos, carried by the run (later steps check them against the configuration)."""
    home = config.home
    if not isinstance(home, RsyncHomeConfig) or not home.exclude_repos:
        return None
    return [int(r) for r in home.exclude_repos]


def _lock_of(run: RunContext) -> tuple[runs.Run, Lock]:
    record = runs.get(run.instance, run.backup_id)
    if record is None or not record.unlock_token:
        raise BackupError(f"the run record of {run.backup_id} holds no unlock token")
    return record, Lock(unlock_token=record.unlock_token, owner="")


def lock(run: RunContext) -> Locked:
    record = runs.get(run.instance, run.backup_id)
    if record and record.unlock_token:
        # A retried invocation: the first one locked and saved the token. Locking again would fail (409).
        return {"locked_at": record.locked_at, "reused": True}
    lock_ = bitbucket(run.config).lock()
    now = time.time()
    # The token goes to the run table at once: the failure path and the safety net read it there.
    runs.update(run.instance, run.backup_id, phase="locked", unlock_token=lock_.unlock_token, locked_at=now)
    say(run.config, f"locked with '{short(lock_.unlock_token)}'", lock="taken")
    return {"locked_at": now}


def start_backup(run: RunContext) -> BackupStarted:
    record, lock_ = _lock_of(run)
    if record.cancel_token:
        return {"reused": True}  # a retried invocation: the task already runs
    task = bitbucket(run.config).start_backup(lock_)
    runs.update(run.instance, run.backup_id, cancel_token=task.cancel_token)
    say(run.config, f"backup started with '{short(task.cancel_token)}'")
    return {"task_id": task.id}


def poll_drain(run: RunContext, seconds_left: float = 0.0, clock: polling.Clock = polling.WALL) -> DrainPolled:
    """Checks the drain state every drain_poll_interval_seconds until DRAINED, the drain timeout, or the end of this
    invocation's slice (seconds_left: until its Lambda timeout); the state machine invokes it again only then."""
    record, lock_ = _lock_of(run)
    timing = run.config.timing
    client_ = bitbucket(run.config)
    locked_at = record.locked_at or clock.now()
    timeout_at = locked_at + timing.drain_timeout_seconds
    seen: list[MaintenanceState] = []

    def drained() -> MaintenanceState | None:
        state = client_.maintenance(lock_)
        if state.task_state != "RUNNING":
            raise BackupCancelled(
                f"wait-drained: the backup task is {state.task_state or 'gone'}"
                f"{' (' + state.task_message + ')' if state.task_message else ''}: could not enter DRAINED state"
            )
        seen.append(state)
        if not state.drained and len(seen) == 1:  # the DIY script's line, once per slice of the wait
            say(run.config, f"Waiting for DRAINED state… (db '{state.db_state}', scm '{state.scm_state}')")
        return state if state.drained else None

    ends = min(timeout_at, polling.slice_end(clock, seconds_left, timing.drain_poll_slice_seconds))
    state = polling.until(drained, interval=timing.drain_poll_interval_seconds, deadline=ends, clock=clock)
    waited = clock.now() - locked_at
    if state is not None:
        runs.update(run.instance, run.backup_id, drained_at=clock.now())
        say(run.config, f"Waiting for DRAINED state… done ({waited:.1f} s)")
        say(run.config, f"db state '{state.db_state}'")
        say(run.config, f"scm state '{state.scm_state}'")
        return {"drained": True, "waited_s": round(waited, 3), "checks": len(seen)}
    if clock.now() >= timeout_at:
        last = seen[-1]
        raise DrainTimeout(
            f"wait-drained: not DRAINED after {waited:.0f} s (db '{last.db_state}', scm '{last.scm_state}'); "
            f"the limit is {timing.drain_timeout_seconds} s"
        )
    return {"drained": False, "waited_s": round(waited, 3), "checks": len(seen)}


def check_part(run: RunContext, row: Step, part: str) -> None:
    """A copy step copies its own part only: the home's the home, the database's the database, the Mesh node copy a
    node of this instance."""
    own = {
        BACKUP.copy_home.name: ["home"],
        BACKUP.copy_database.name: ["database"],
        BACKUP.copy_search.name: ["search"],
    }
    allowed = own.get(row.name, run.config.mesh_parts)
    if part not in allowed or part not in run.config.parts:
        raise InvalidInput(f"{row.label}: '{part}' is not a part this step copies for instance '{run.instance}'")


def backup_part(
    run: RunContext, row: Step, part: str, seconds_left: float = 0.0, clock: polling.Clock = polling.WALL
) -> PartCopied:
    """Copy step `row` copies `part`: a snapshot, consistent once made, or a host copy, waited for here."""
    from functions.strategies import parts_for

    parts = parts_for(run.config)
    on_host = parts.hosts.get(part)
    if on_host is not None:
        commands = on_host.copy(run.backup_id)
        # A host copy's artifact, its archive, is made after the unlock by a step a failed run never reaches; but a
        # command sent after the failure path stopped the run's commands would run on and leave its dump or home
        # snapshot on the host.
        _unless_discarded(run, row, part, lambda: _undo_on_host(on_host, commands, run.backup_id))
        say(run.config, f"{part} copy started on {on_host.instance_id}")
        started: PartCopied = {"part": part, "artifacts": [], "done": False, "commands": commands, "results": {}}
        return wait_host(run, started, seconds_left, clock)
    if part not in parts.snapshots:
        raise ValueError(f"instance '{run.config.name}' has no '{part}' part to back up")
    snapshot = parts.snapshots[part]
    try:
        artifacts = snapshot.backup(run.backup_id)
    except Exception:
        # Failed half-way (its Device tags refused, say: the failure path deleted the snapshot meanwhile): whatever
        # the call made for a discarded run is found by its tags and removed too.
        _unless_discarded(run, row, part, lambda: _remove_listed(snapshot, run.backup_id))
        raise
    _unless_discarded(run, row, part, lambda: _remove(snapshot, artifacts))
    say(run.config, f"{part} copy taken: {', '.join(a.id for a in artifacts)}")
    return {"part": part, "artifacts": [a.summary() for a in artifacts], "done": True, "commands": [], "results": {}}


def _unless_discarded(run: RunContext, row: Step, part: str, undo: Callable[[], list[str]]) -> None:
    """Step Functions does not stop a copy step still running when another branch of the copy failed: the failure path
    may have listed this run's artifacts before this copy made its own, which would stay, tagged in-progress, for
    ever (pruning touches complete backups only). So the failure path marks the run as discarded before it lists
    anything (functions/cleanup.py), and each copy reads the mark, strongly consistent, after the call that made its
    copy. Either this read comes after the mark, sees it (or the run's record already gone) and the copy is undone
    here; or it comes before it, so the copy was made before the mark, hence before the listing, which finds it by
    its catalog tags: those are written by the create call itself (CreateSnapshots' TagSpecifications,
    CreateDBSnapshot's Tags; the EBS Device and Name tags written next are not the catalog's). A host command sent
    before the mark is likewise found when the failure path lists the run's commands to stop them, and what it left
    is removed after their end. (As the failure path always has, this relies on a listing seeing what was tagged
    before it; AWS's Describe calls are eventually consistent, so a snapshot made just before may still be missed.)"""
    record = runs.get(run.instance, run.backup_id)
    if record is not None and not record.discarding:
        return
    why = "its run record is gone" if record is None else "its failure path is removing what the run made"
    done = undo()
    raise RunDiscarded(
        f"{row.label}: the {part} copy was made after backup {run.backup_id} had already failed ({why}), so it was "
        f"removed again: {'; '.join(done) or 'nothing of it was left'}"
    )


# What deleting an artifact answers when it is gone already (removed by the failure path meanwhile).
_GONE = {"InvalidSnapshot.NotFound", "DBSnapshotNotFound", "DBClusterSnapshotNotFoundFault"}


def _remove(strategy: Catalog, artifacts: list[Artifact]) -> list[str]:
    """Deletes what a copy step made for a run already discarded; one line each, for its error."""
    from functions.strategies import COMPLETE

    done = []
    for artifact in artifacts:
        if artifact.status == COMPLETE:
            continue  # never a complete backup (and a copy step's role may not)
        try:
            strategy.delete(artifact)
            done.append(f"deleted {artifact.id}")
        except ClientError as error:
            code = error_code(error)
            if code in _GONE:
                done.append(f"{artifact.id} already deleted")
            else:
                done.append(f"{artifact.id} not deleted ({code}): delete it by hand")
        except BackupError as error:  # a search cluster that does not answer
            done.append(f"{artifact.id} not deleted ({error}): delete it by hand")
    return done


def _remove_listed(strategy: Catalog, backup_id: str) -> list[str]:
    """_remove for what the part's catalog lists of this run (when the copy call failed and answered nothing)."""
    try:
        found = strategy.artifacts(backup_id)
    except ClientError as error:
        return [f"its snapshots could not be listed ({error_code(error)}): look for {backup_id}'s by hand"]
    except BackupError as error:
        return [f"its snapshots could not be listed ({error}): look for {backup_id}'s by hand"]
    return _remove(strategy, found)


def _undo_on_host(on_host: HostCopy, commands: list[HostCommand], backup_id: str) -> list[str]:
    """Stops a host copy sent for a run already discarded and removes what it left that no later run would."""
    done: list[str] = []
    try:
        done += host.cancel(commands)
        done += on_host.discard_on_host(backup_id)
    except (BackupError, ClientError) as error:
        detail = error_code(error) if isinstance(error, ClientError) else redact(str(error))
        done.append(f"could not stop or clean up its command on {on_host.instance_id} ({detail}): check by hand")
    return done


def wait_host(
    run: RunContext, progress: PartCopied, seconds_left: float = 0.0, clock: polling.Clock = polling.WALL
) -> PartCopied:
    """Under the lock: checks the host commands every locked_host_poll_interval_seconds until they all ended or this
    invocation's slice ends, so that the unlock follows the end of the locked copy within a fraction of a second."""
    current = progress

    def finished() -> PartCopied | None:
        nonlocal current
        current = check_host(run, current)
        return current if current["done"] else None

    interval = run.config.timing.locked_host_poll_interval_seconds
    polling.until(finished, interval=interval, deadline=polling.slice_end(clock, seconds_left), clock=clock)
    return current


def prepare_host(run: RunContext) -> HostProgress:
    """Before the lock, while Bitbucket is live: install the host script, start the expensive first copy pass."""
    from functions.strategies import parts_for

    commands: list[HostCommand] = []
    for on_host in parts_for(run.config).hosts.values():
        commands += on_host.prepare(run.backup_id)
    return {"done": not commands, "commands": commands, "results": {}}


def check_host(run: RunContext, progress: P) -> P:
    """One check of the host commands in `progress`; raises HostCommandFailed (naming the step) if one failed."""
    known: HostProgress = progress
    remaining, results = [], dict(known.get("results") or {})
    for command in known.get("commands") or []:
        summary = host.check(command)
        if summary is None:
            remaining.append(command)
        else:
            results[command["step"]] = summary
            rsync = summary.get("rsync-home")
            scan = rsync.get("scan") if isinstance(rsync, dict) else None
            how = {"changed": " (scanned what changed)", "full": " (scanned every file)"}.get(str(scan), "")
            say(run.config, f"{command['step']} done on {command['instance_id']}{how}")
    checked = copy.copy(progress)  # the same keys in the same order as {**progress, ...}
    checked["done"], checked["commands"], checked["results"] = not remaining, remaining, results
    return checked


def archive(run: RunContext) -> HostProgress:
    """After the unlock: archive each copy-type part on its host and upload it to the archive bucket."""
    from functions.strategies import parts_for

    commands: list[HostCommand] = []
    for on_host in parts_for(run.config).hosts.values():
        commands += on_host.archive(run.backup_id, run.bitbucket_version)
    return {"done": not commands, "commands": commands, "results": {}}


def _send_progress(client_: BitbucketClient, lock_: Lock, percentage: int) -> bool:
    """False when Bitbucket already had it (a retried invocation's repeat), so that it is said once."""
    try:
        client_.progress(lock_, percentage)
    except (BitbucketRequestFailed, BitbucketUnavailable):
        # A repeat of a 100 whose answer was lost is refused (the task is already complete): that is success.
        if percentage != 100 or client_.maintenance(lock_, step="progress").task_state != "COMPLETED":
            raise
        return False
    return True


def report_progress(run: RunContext, part: str) -> ProgressSent:
    """A finished part moves the progress up; it only ever increases (the 100 is the unlock's)."""
    parts: str | list[str] = run.config.mesh_parts if part == "mesh" else part
    if part not in run.config.parts and not (part == "mesh" and parts):
        raise InvalidInput(f"progress: instance '{run.instance}' has no part '{part}'")
    _, lock_ = _lock_of(run)
    # The copy branches may finish at the same moment: one at a time, and never a lower number after a higher.
    with runs.progress_lock(run.instance, run.backup_id) as sent:
        # A set, not a counter: a retried invocation must not count its part twice. `mesh`: every node's (their Map
        # state reports once, when all of them are done).
        done = len(runs.update(run.instance, run.backup_id, add_to_set=("parts_done", parts))["parts_done"]["SS"])
        total = max(1, len(run.config.parts))
        percentage = FIRST_PROGRESS + (LAST_PART_PROGRESS - FIRST_PROGRESS) * min(done, total) // total
        if percentage <= sent:
            return {"percentage": sent}
        _send_progress(bitbucket(run.config), lock_, percentage)
        runs.update(run.instance, run.backup_id, progress_sent=percentage)
    say(run.config, f"Backup progress updated to {percentage}")
    return {"percentage": percentage}


def unlock(run: RunContext) -> Unlocked:
    """Progress 100, then the unlock, as Atlassian's script ends its backup: in one invocation, since each Lambda
    round trip and each call under the lock lengthens the maintenance window. Every part has reported by now (the
    copy's Parallel is over), so the 100 needs no progress lock."""
    record, lock_ = _lock_of(run)
    client_ = bitbucket(run.config)
    # A retried invocation may have sent it: Bitbucket refuses the repeat, and it is not said again.
    if record.progress_sent < 100 and _send_progress(client_, lock_, 100):
        say(run.config, "Backup progress updated to 100")
    client_.unlock(lock_)
    now = time.time()
    runs.update(
        run.instance,
        run.backup_id,
        phase="unlocked",
        unlocked_at=now,
        progress_sent=100,
        remove=("unlock_token", "cancel_token"),
    )
    say(run.config, "Bitbucket instance unlocked", lock="released")
    window = now - (record.locked_at or now)
    drain = (record.drained_at or now) - (record.locked_at or now)
    return {"unlocked_at": now, "lock_window_s": round(window, 3), "drain_s": round(drain, 3)}


def _all_artifacts(config: InstanceConfig, backup_id: str | None = None) -> list[tuple[Catalog, Artifact]]:
    from functions.strategies import strategies_for

    return [(s, a) for s in strategies_for(config) for a in s.artifacts(backup_id)]


def _all_copies(
    config: InstanceConfig, target: CopyTarget, backup_id: str | None = None
) -> list[tuple[Catalog, Artifact]]:
    from functions.strategies import strategies_for

    bound = [s.at(target) for s in strategies_for(config) if s.copied]
    return [(s, a) for s in bound for a in s.artifacts(backup_id)]


def source_region() -> str:
    return environment.region() or str(client("ec2").meta.region_name)


def copy_regions(run: RunContext) -> CopiesChecked:
    """After the snapshots completed and the archives were uploaded: start every disaster-recovery copy not yet
    started, then check them all. Done when every copy is complete; a copy in error fails the run (CopyFailed)."""
    if not run.config.copies:
        return {"done": True, "pending": []}
    record = runs.get(run.instance, run.backup_id)
    started_at = record.copies_started_at if record and record.copies_started_at else None
    if started_at is None:
        started_at = time.time()
        runs.update(run.instance, run.backup_id, copies_started_at=started_at)
    region = source_region()
    originals = [(s, a) for s, a in _all_artifacts(run.config, run.backup_id) if s.copied]
    pending: list[str] = []
    for target in run.config.copies:
        for strategy, original in originals:
            bound = strategy.at(target)
            made = bound.copy_of(original)
            if made is None:
                copy_id = bound.copy_to(original, region)
                say(run.config, f"{original.part} copy of {original.id} to {target.label} started: {copy_id}")
                made = bound.copy_of(original)
            if made is None:
                pending.append(f"{original.id} → {target.label} (starting)")
            elif made.state == "error":
                raise CopyFailed(
                    f"copy-regions: copy {made.id} of {original.id} ({original.part}) to {target.label} "
                    "ended in state 'error'"
                )
            elif made.state != "completed":
                pending.append(f"{made.id} ({target.label})")
    if not pending:
        say(run.config, f"copies complete in {', '.join(t.label for t in run.config.copies)}")
        return {"done": True, "pending": []}
    waited = time.time() - started_at
    if waited > run.config.timing.copy_timeout_seconds:
        raise CopyFailed(
            f"copy-regions: {', '.join(pending)} not completed after {waited:.0f} s "
            f"(limit {run.config.timing.copy_timeout_seconds} s)"
        )
    return {"done": False, "pending": pending}


def check_snapshots(run: RunContext) -> SnapshotsChecked:
    from functions.strategies import parts_for

    found = _all_artifacts(run.config, run.backup_id)
    # Copy-type parts have no artifact yet: their archive is made after this wait.
    snapshot_parts = set(parts_for(run.config).snapshots)
    missing = snapshot_parts - {a.part for _, a in found}
    if missing:
        raise SnapshotFailed(f"wait-snapshots: no copy of {', '.join(sorted(missing))} was found for {run.backup_id}")
    failed = [a.id for _, a in found if a.state == "error"]
    if failed:
        raise SnapshotFailed(f"wait-snapshots: snapshot {', '.join(failed)} ended in state 'error'")
    pending = [a.id for _, a in found if a.state != "completed"]
    if not pending:
        if found:  # said once, when the wait ends (the command line's bar then leaves the snapshots' percentage)
            say(run.config, f"snapshots completed: {', '.join(f'{a.part} {a.id}' for _, a in found)}")
        return {"complete": True, "pending": []}
    for _, artifact in found:
        if artifact.state != "completed" and artifact.percent is not None:
            percent, part = artifact.percent, artifact.part
            say(run.config, f"{part} snapshot {artifact.id}: {percent}%", part=part, percent=percent)
    waited = time.time() - run.started_at
    if waited > run.config.timing.snapshot_timeout_seconds:
        raise SnapshotTimeout(
            f"wait-snapshots: {', '.join(pending)} not completed after {waited:.0f} s "
            f"(limit {run.config.timing.snapshot_timeout_seconds} s)"
        )
    return {"complete": False, "pending": pending}


def prune(config: InstanceConfig, keep_backup_id: str) -> list[str]:
    """Delete this instance's complete backups beyond keep_backups, oldest first; never the newest one,
    never the one just made, never anything without this tool's tags (the strategies filter on them)."""
    return _prune(_all_artifacts(config), config.keep_backups, keep_backup_id, "")


def prune_copies(config: InstanceConfig, target: CopyTarget, keep_backup_id: str) -> list[str]:
    """The same rule for the copies in one copy target, with its own keep_backups."""
    return _prune(_all_copies(config, target), config.keep_copies(target), keep_backup_id, f" in {target.label}")


def _prune(found: list[tuple[Catalog, Artifact]], keep: int, keep_backup_id: str, where: str) -> list[str]:
    from functions.strategies import COMPLETE

    if keep == 0:
        return []
    by_backup: dict[str, list[tuple[Catalog, Artifact]]] = {}
    for strategy, artifact in found:
        by_backup.setdefault(artifact.backup_id, []).append((strategy, artifact))
    complete = sorted(b for b, items in by_backup.items() if b and all(a.status == COMPLETE for _, a in items))
    doomed = [b for b in complete[: max(0, len(complete) - keep)] if b != keep_backup_id]
    doomed = [b for b in doomed if b != complete[-1]]
    pruned = []
    for backup_id in doomed:
        held = [reason for strategy, artifact in by_backup[backup_id] if (reason := strategy.held(artifact))]
        if held:
            logger.info(f"kept backup {backup_id}{where} beyond keep_backups: {held[0]}")
            continue
        for strategy, artifact in by_backup[backup_id]:
            strategy.delete(artifact)
        logger.info(f"pruned backup {backup_id}{where}")
        pruned.append(backup_id + where)
    return pruned


def finalize(run: RunContext, unlocked: Unlocked | None) -> BackupSummary:
    from functions import cleanup, monitoring
    from functions.strategies import COMPLETE
    from functions.strategies.host_copy import KIND as ARCHIVE_KIND

    found = _all_artifacts(run.config, run.backup_id)
    copies = [c for target in run.config.copies for c in _all_copies(run.config, target, run.backup_id)]
    for strategy, artifact in [*found, *copies]:
        if artifact.status != COMPLETE:  # a retried invocation: IAM lets a status only move forward
            strategy.set_status(artifact, COMPLETE)
    # Immutable backups: locked once complete, before anything is pruned.
    locked, lock_errors = catalog.lock(run.config, [*found, *copies])
    for line in lock_errors:
        logger.warning(f"locking failed: {line}")
    runs.release(run.instance, run.backup_id)
    # Every copy is complete: the cross-account targets' accounts need the originals no more.
    unshared, unshare_errors = cleanup.unshare(run.config, run.backup_id)
    for line in unshare_errors:
        logger.warning(f"unsharing failed: {line}")
    try:
        pruned = prune(run.config, run.backup_id)
        for target in run.config.copies:
            pruned += prune_copies(run.config, target, run.backup_id)
        prune_error = None
    except (ClientError, BackupError) as error:
        # The new backup is complete and stays so; an old one that could not be deleted is only reported.
        pruned, prune_error = [], redact(f"{type(error).__name__}: {error}")
        logger.warning(f"pruning failed: {prune_error}")
    duration = time.time() - run.started_at
    immutable: Immutability = {"locked": locked, "lock_errors": lock_errors} if run.config.immutable else {}
    summary: BackupSummary = {
        "instance": run.instance,
        "backup_id": run.backup_id,
        "status": "complete",
        "artifacts": [a.summary() | {"status": COMPLETE} for _, a in found],
        "archive": [_archive_summary(a.part, a.details) for _, a in found if a.kind == ARCHIVE_KIND],
        "copies": [
            {"target": s.where, "kind": a.kind, "id": a.id, "copy_of": a.details.get("copy_of"), "status": COMPLETE}
            for s, a in copies
        ],
        "unshared": unshared,
        "unshare_errors": unshare_errors,
        **immutable,
        "pruned": pruned,
        "prune_error": prune_error,
        "zero_downtime": run.config.zero_downtime,
        "lock_window_s": unlocked.get("lock_window_s") if unlocked else None,
        "drain_s": unlocked.get("drain_s") if unlocked else None,
        "duration_s": round(duration, 3),
        "security_warning": run.config.connection_warning,
    }
    say(run.config, f"backup {run.backup_id} complete" + (f"; pruned {', '.join(pruned)}" if pruned else ""))
    monitoring.record_success(run.instance, summary)  # lock window, drain, duration, size: flushed by the handler
    problems = ["pruning old backups failed"] if prune_error else []
    if unshare_errors:
        problems.append("an original is still shared with a copy target's account")
    if lock_errors:
        problems.append("a part of it could not be locked")
    if problems:
        notify.publish(
            f"Bitbucket backup {run.backup_id} succeeded, but {' and '.join(problems)}",
            run.instance,
            "warning",
            summary,
        )
    elif run.config.notify_on_success:
        notify.publish(f"Bitbucket backup {run.backup_id} succeeded", run.instance, "succeeded", summary)
    return summary


def _archive_summary(part: str, details: dict[str, str]) -> ArchiveSummary:
    return {"part": part, "bucket": details["bucket"], "key": details["key"], "size": details["size"],
            "sha256": details["sha256"]}  # fmt: skip


def handle_failure(raw_input: dict[str, Any], run: RunContext | None, failure: dict[str, Any]) -> BackupFailed:
    """The one failure path: cancel the task, unlock if we locked, drop what this run made, notify once."""
    from functions import cleanup, monitoring

    instance = run.instance if run else str(raw_input.get("instance", "")) or None
    step = str(failure.get("step", "unknown"))
    error = str(failure.get("Error", "Error"))
    cause = cause_text(failure.get("Cause"))
    bind(instance=instance, backup_id=run.backup_id if run else None)
    record = runs.get(run.instance, run.backup_id) if run else None
    actions: list[str] = []
    unlocked: str
    if record is not None and record.phase == "unlocked":
        unlocked = "yes (unlocked before the failure)"
    elif record is None and run is not None and not run.config.zero_downtime:
        # The record (and the unlock token in it) is gone: expired, or removed by hand. Whether this run locked
        # cannot be told from it, so ask Bitbucket instead of assuming it never did.
        unlocked = cleanup.unlocked_without_record(bitbucket(run.config), run.config.base_url)
    elif record is None or record.phase == "preparing" or not record.unlock_token:
        unlocked = "yes (this run never locked Bitbucket; nobody else's lock was touched)"
        if run is not None and run.config.zero_downtime:
            unlocked = "yes (zero-downtime backup: this run never locked Bitbucket)"
        if error == "LockNotConfirmed" or (step == "lock" and error != "AlreadyLocked" and _in_maintenance(run)):
            unlocked = (
                "UNKNOWN - Bitbucket is in maintenance mode and this run could not confirm that the lock was "
                "its own, so it has no token to unlock with: check Bitbucket and unlock by hand (README, "
                "Troubleshooting)"
            )
    else:
        assert run is not None
        unlocked = cleanup.cancel_and_unlock(bitbucket(run.config), record, actions)
        if unlocked == "yes":
            say(run.config, "Bitbucket instance unlocked", lock="released")
    if run:
        # Once the copies started, every original was complete (snapshots completed, archives uploaded): a failure
        # of the disaster-recovery copies keeps them as a complete local backup; the run still fails, visibly.
        originals_complete = record is not None and record.copies_started_at is not None
        locked = record is None or record.ever_locked  # no record: it may have locked
        cleanup.discard(run.config, run.backup_id, actions, originals_complete=originals_complete, locked=locked)
        if unlocked.startswith("yes"):
            runs.release(run.instance, run.backup_id)
        elif record is not None:
            runs.update(run.instance, run.backup_id, handled_at=time.time())
    message = redact(f"{step}: {cause}" if not cause.startswith(f"{step}:") else cause)
    monitoring.record_failure(instance, step)
    notify.publish(
        f"Bitbucket backup FAILED: {instance or 'unknown instance'} at step {step}",
        instance,
        "failed",
        {
            "instance": instance,
            "backup_id": run.backup_id if run else None,
            "step": step,
            "error": error,
            "message": message,
            "unlocked": unlocked,
            "cleanup": actions,
            "execution": run.execution if run else None,
            "security_warning": run.config.connection_warning if run else None,
        },
    )
    return {"error": error, "cause": message + f" [unlocked: {unlocked}]", "unlocked": unlocked}


def _in_maintenance(run: RunContext | None) -> bool:
    if run is None:
        return False
    try:
        return bitbucket(run.config).status() == "MAINTENANCE"
    except BackupError:
        return False
