"""The logic of each step of the restore state machine. Handlers parse events and call these.

validate (touches nothing) → restore the database → create the home volumes → wait until all are available →
attach (and mount) the home if asked → hand over (tag `restored`) and announce what was created and what to do
next. Any failure: remove what this execution created (unless keep_on_failure), notify once, fail.

Everything a restore creates is tagged with the execution's ARN and the status `restoring` at creation time, so the
failure path finds exactly its own resources, even those of a step that failed half-way.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from functions import notify, trusted_config
from functions.clients.aws import client
from functions.errors import RestoreRefused, RestoreTimeout
from functions.models import environment
from functions.models.config import InstanceConfig
from functions.models.events import parse
from functions.models.part_config import MESH_PART_PREFIX, EbsHomeConfig, FsLevelDatabaseConfig, RsyncHomeConfig
from functions.models.restore import HomeTarget, PlanFlow, RestoreInput, RestorePlan, target_label
from functions.models.steps import RESTORE, Step
from functions.observability import bind, logger, metrics, redact
from functions.steps import cause_text, say
from functions.strategies import COMPLETE, Artifact, restorer_for, restorers_for, strategies_for, volume_restorer

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.restore_plans import Attached, EbsCreated, EbsPlan, Mounted, PartCreated
    from functions.models.results import (
        DrillRestoreSummary,
        PartsRestored,
        RestoreChecked,
        RestoreFailureHandled,
        RestoreSummary,
        SafetyNetActed,
    )

PARTS = ("database", "home", "search")
SKIPPED = {"skipped": True}


def _say(plan: RestorePlan, message: str) -> None:
    say(plan.config, message)


# --- validate: everything is checked before anything is created ---------------------------------------------------


def validate(raw_input: dict[str, Any], execution: str, start_time: str, drill: bool = False) -> RestorePlan:
    if isinstance(raw_input, dict) and "drill" in raw_input:
        raise RestoreRefused(
            "validate: 'drill' is not an input of a restore: only the restore drill's own state machine runs a "
            "restore as a drill (remove the field to restore for real)"
        )
    if drill and not environment.started_by_drill(execution):
        raise RestoreRefused("validate: a drill restore runs only in the drill's own restore state machine")
    request = parse(RestoreInput, raw_input, "validate")
    bind(instance=request.instance, backup_id=request.backup_id)
    config, version = trusted_config.load(request.instance)
    backup_id = request.backup_id
    if not re.fullmatch(r"[a-z][a-z0-9-]*-\d{8}-\d{6}", backup_id):
        raise RestoreRefused(f"validate: '{backup_id}' is not a backup id (<instance>-YYYYMMDD-HHMMSS)")
    if not re.fullmatch(re.escape(config.name) + r"-\d{8}-\d{6}", backup_id):
        raise RestoreRefused(
            f"validate: backup {backup_id} is not a backup of instance '{config.name}' (its ids start with "
            f"'{config.name}-'); restore another instance's backup with that instance's name"
        )
    for part in PARTS:
        if request.target.of(part) is not None and part not in config.parts:
            raise RestoreRefused(f"validate: target.{part} is given but instance '{config.name}' backs up no {part}")
    wanted_parts = [*PARTS, *request.target.mesh_parts]
    for part in request.target.mesh_parts:
        if part not in config.mesh_parts:
            raise RestoreRefused(
                f"validate: {target_label(part)} is given but instance '{config.name}' has no Mesh node "
                f"'{part.removeprefix(MESH_PART_PREFIX)}'"
            )
    for part in wanted_parts:
        home_target = request.target.of(part)
        if part != "database" and isinstance(home_target, HomeTarget) and home_target.path is not None:
            check_restore_root(config, home_target.path, drill, label=target_label(part))

    found = [(s, a) for s in strategies_for(config) for a in s.artifacts(backup_id)]
    restorers = restorers_for(config)
    if not found:
        raise RestoreRefused(
            f"validate: no backup {backup_id} of instance '{config.name}' exists; {_available(config)}"
        )
    # The parts asked for: a backup made before a part was configured (a Mesh node added since) stays restorable.
    asked = [part for part in wanted_parts if request.target.of(part) is not None]
    missing = [p for p in asked if p not in {a.part for _, a in found}]
    if missing:
        raise RestoreRefused(
            f"validate: backup {backup_id} has no {' and no '.join(missing)} copy; it cannot be restored"
        )
    unfinished = [f"{a.id} is {a.status or 'untagged'}/{a.state}" for _, a in found if not _usable(a)]
    if unfinished:
        raise RestoreRefused(
            f"validate: backup {backup_id} is not complete ({'; '.join(unfinished)}); only complete ones are restored"
        )

    parts: dict[str, dict[str, Any]] = {}
    for part in wanted_parts:
        wanted = request.target.of(part)
        if wanted is None:
            continue
        foreign = sorted(wanted.model_fields_set - restorers[part].target_fields)
        if foreign:
            strategy = (
                config.database.strategy
                if part == "database"
                else config.search.strategy
                if part == "search"
                else config.home_of(part).strategy
            )
            raise RestoreRefused(
                f"validate: {target_label(part)}.{foreign[0]} does not apply: this instance's {part} is backed up by "
                f"the {strategy} strategy, which takes {', '.join(sorted(restorers[part].target_fields))}"
            )
        parts[part] = restorers[part].check([a for _, a in found if a.part == part], request.target)
    home = request.target.home
    plan = RestorePlan(
        instance=config.name,
        backup_id=backup_id,
        execution=execution,
        started_at=time.time(),
        config_version=version,
        flow=PlanFlow(restore_poll_interval_seconds=config.timing.restore_poll_interval_seconds),
        target=request.target,
        keep_on_failure=request.keep_on_failure,
        drill=drill,
        parts=parts,
        restore_database="database" in parts,
        restore_home="home" in parts,
        mesh=[part for part in parts if part.startswith(MESH_PART_PREFIX)],
        restore_search="search" in parts,
        attach=bool(home and home.attach_to_instance_id),
        mount=bool(home and home.mount),
    )
    _say(plan, f"restore of {backup_id} validated: {', '.join(parts)} into new resources; nothing exists yet")
    return plan


def check_restore_root(
    config: InstanceConfig, path: str, drill: bool, step: str = "validate", label: str = "target.home"
) -> None:
    """An archive is extracted only strictly below one of the configured restore roots (restore.allowed_roots; a
    drill also below its own drill.work_path), named plainly: no `.` or `..` component, no doubled slash. The host
    script refuses a path through a symbolic link (its resolved path must be the path given)."""
    if posixpath.normpath(path) != path or "//" in path or any(c in (".", "..") for c in path.split("/")):
        raise RestoreRefused(f"{step}: {label}.path '{path}' is not a plain absolute path (no '.', '..', '//')")
    roots = list(config.restore.allowed_roots)
    if drill and config.drill is not None:
        roots.append(config.drill.work_path)
    if not any(path.startswith(root.rstrip("/") + "/") for root in roots):
        allowed = ", ".join(roots) if roots else "none are configured"
        raise RestoreRefused(
            f"{step}: {label}.path {path} is not below a restore root of instance '{config.name}' "
            f"(restore.allowed_roots: {allowed}); add its parent directory there in cdk.json and redeploy"
        )


def checked(plan: RestorePlan, step: str) -> RestorePlan:
    """A later step's plan, checked against the deployed configuration: what decides where a step writes or what it
    removes must still be allowed there (the plan is the validate step's result, but a step trusts no event)."""
    config = plan.config
    if not re.fullmatch(re.escape(config.name) + r"-\d{8}-\d{6}", plan.backup_id):
        raise RestoreRefused(f"{step}: backup {plan.backup_id} is not a backup of instance '{config.name}'")
    if plan.drill and not environment.started_by_drill(plan.execution):
        raise RestoreRefused(f"{step}: a drill restore runs only in the drill's own restore state machine")
    for part, part_plan in plan.parts.items():
        if part not in config.parts:
            raise RestoreRefused(f"{step}: instance '{config.name}' backs up no {part}")
        path = part_plan.get("path")
        if part != "database" and path is not None:
            check_restore_root(config, str(path), plan.drill, step, target_label(part))
            target = plan.target.of(part)
            if not isinstance(target, HomeTarget) or target.path != path:
                raise RestoreRefused(f"{step}: the plan's {part} path is not its target's")
    if plan.mesh != [part for part in plan.parts if part.startswith(MESH_PART_PREFIX)]:
        raise RestoreRefused(f"{step}: the plan's Mesh nodes are not the parts it restores")
    return plan


def _usable(artifact: Artifact) -> bool:
    return artifact.status == COMPLETE and artifact.state == "completed"


def _available(config: InstanceConfig) -> str:
    """Like the DIY restore script run without an argument: name the backups that do exist."""
    by_backup: dict[str, list[Artifact]] = {}
    for strategy in strategies_for(config):
        for artifact in strategy.artifacts():
            by_backup.setdefault(artifact.backup_id, []).append(artifact)
    complete = sorted((b for b, items in by_backup.items() if all(_usable(a) for a in items)), reverse=True)
    if not complete:
        return "there is no complete backup of it"
    more = f" (and {len(complete) - 5} older)" if len(complete) > 5 else ""
    return f"available: {', '.join(complete[:5])}{more}"


def _started_text(created: Mapping[str, Any]) -> str:
    """One line for the seed: what the restorer says it started, or the volumes it created."""
    volumes = created.get("volumes")
    if "started" not in created and isinstance(volumes, list):
        return "volumes " + ", ".join(
            f"{v.get('volume_id')} from {v.get('snapshot_id')} ({v.get('device')})"
            for v in volumes
            if isinstance(v, dict)
        )
    return notify.plain(created.get("started") or created)


# --- creating and waiting --------------------------------------------------------------------------------------------


def check_own_part(plan: RestorePlan, row: Step, part: str) -> None:
    """A restore step starts its own part only (the home's the home, the Mesh node step a node), and only one the
    plan restores."""
    own = {
        RESTORE.restore_database.name: ["database"],
        RESTORE.restore_home.name: ["home"],
        RESTORE.restore_search.name: ["search"],
    }
    if part not in own.get(row.name, plan.mesh) or part not in plan.parts:
        raise RestoreRefused(f"{row.label}: '{part}' is not a part this step restores in this plan")


def start_part(plan: RestorePlan, part: str) -> PartCreated:
    bind(instance=plan.instance, backup_id=plan.backup_id)
    checked(plan, f"restore-{part}")
    # Any restorer: each checks its own plan's keys (functions/models/restore_plans.py).
    created: PartCreated = restorer_for(plan.config, part).start(plan.parts[part], plan.execution)
    _say(plan, f"{part} restore started: {_started_text(created)}")
    return created


def created_by_part(created: Mapping[str, Any]) -> dict[str, Any]:
    """What each part's start() returned, by part: the home's and the database's as they are, the Mesh nodes' from
    their Map state's list of {"part": …, "created": …}."""
    found = {part: value for part, value in created.items() if part != "mesh"}
    for entry in created.get("mesh") or []:
        if isinstance(entry, dict) and str(entry.get("part", "")).startswith(MESH_PART_PREFIX):
            found[str(entry["part"])] = entry.get("created")
    return found


def check(plan: RestorePlan, created: dict[str, Any]) -> RestoreChecked:
    bind(instance=plan.instance, backup_id=plan.backup_id)
    created = created_by_part(created)
    pending: list[str] = []
    results: dict[str, Mapping[str, Any]] = {}
    for part in plan.parts:
        progress = restorer_for(plan.config, part).progress(plan.parts[part], created[part])
        pending += progress.pending
        results[part] = progress.result
    if not pending:
        return {"ready": True, "pending": [], "parts": results}
    waited = time.time() - plan.started_at
    limit = plan.config.timing.restore_timeout_seconds
    if waited > limit:
        raise RestoreTimeout(f"wait-restore: {', '.join(pending)} not available after {waited:.0f} s (limit {limit} s)")
    return {"ready": False, "pending": pending}


def attach(plan: RestorePlan, created: EbsCreated) -> Attached:
    bind(instance=plan.instance, backup_id=plan.backup_id)
    checked(plan, "attach-home")
    home = cast("EbsPlan", plan.parts["home"])  # the plan EbsRestorer.check() made (volume_restorer refuses others)
    result = volume_restorer(plan.config, "attach-home").attach(home, created, plan.execution)
    _say(plan, f"home volumes attached to {result['instance_id']}")
    return result


def mount(plan: RestorePlan, attached: Attached) -> Mounted:
    bind(instance=plan.instance, backup_id=plan.backup_id)
    checked(plan, "mount-home")
    home = cast("EbsPlan", plan.parts["home"])  # as in attach()
    result = volume_restorer(plan.config, "mount-home").mount(home, attached)
    _say(plan, f"home mounted at {', '.join(result['mounted'])} on {result['instance_id']}")
    return result


# --- the end: hand over, or clean up ------------------------------------------------------------------------------


def finish(state: dict[str, Any]) -> RestoreSummary | DrillRestoreSummary:
    plan = checked(parse(RestorePlan, state.get("plan"), "finish"), "finish")
    bind(instance=plan.instance, backup_id=plan.backup_id)
    by_part = created_by_part(state)
    created = {part: by_part[part] for part in plan.parts}
    for part in plan.parts:
        if plan.drill:
            break  # a drill's copy stays `restoring`: the drill checks it and then tears it down
        # From here on the restored resources are the operator's: the tool's IAM cannot delete `restored` ones.
        restorer_for(plan.config, part).complete(plan.parts[part], created[part])
    results = cast("PartsRestored", dict(state.get("status", {}).get("parts", {})))  # wait-restore's, by part
    attached = state.get("attach") if plan.attach else None
    mounted = state.get("mount") if plan.mount else None
    if "home" in results:
        results["home"] = results["home"] | {
            "attached_to": (attached or {}).get("instance_id"),
            "mounted": (mounted or {}).get("mounted", []),
        }
    duration = time.time() - plan.started_at
    summary: RestoreSummary = {
        "instance": plan.instance,
        "backup_id": plan.backup_id,
        "status": "restored",
        "execution": plan.execution,
        **results,
        "next_steps": next_steps(plan, results),
        "duration_s": round(duration, 3),
    }
    metrics.add_metric(name="RestoreSucceeded", unit="Count", value=1)
    _say(plan, f"backup {plan.backup_id} restored: {created_text(results)}")
    if plan.drill:
        # What the drill's teardown needs to remove exactly this copy (each part's restorer's cleanup).
        drilled: DrillRestoreSummary = {**summary, "drill": {"parts": plan.parts, "created": created}}
        return drilled
    for number, line in enumerate(summary["next_steps"], 1):
        _say(plan, f"next step {number}: {line}")
    notify.publish(
        f"Bitbucket restore of {plan.backup_id} succeeded",
        plan.instance,
        "restored",
        {
            "instance": plan.instance,
            "backup_id": plan.backup_id,
            "created": created_text(results),
            "next steps": "".join(f"\n  {n}. {line}" for n, line in enumerate(summary["next_steps"], 1)),
            "execution": plan.execution,
        },
    )
    return summary


def created_text(results: Mapping[str, Any]) -> str:
    return "; ".join(text for _, text in created_lines(results))


def created_lines(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(part, what was created) for the notice, the execution output and the command line."""
    lines = []
    database = results.get("database")
    if isinstance(database, dict) and database.get("dbname"):
        engine = database.get("engine") or "PostgreSQL"  # a restore run before MySQL existed names none
        lines.append(("database", f"{engine} database {database['dbname']} on {database['endpoint']}"))
    elif isinstance(database, dict):
        name = database.get("cluster_id") or database.get("instance_id")
        kind = "Aurora cluster" if database.get("cluster_id") else "RDS instance"
        lines.append(
            ("database", f"{kind} {name} ({database.get('instance_class')}), endpoint {database.get('endpoint')}")
        )
    home = results.get("home")
    if isinstance(home, dict) and home.get("path"):
        lines.append(
            (
                "home",
                f"home extracted into {home['path']} on {home['instance_id']} ({home.get('files')} files, checked "
                f"against the manifest, owned by {home['owner']})",
            )
        )
    elif isinstance(home, dict):
        volumes = ", ".join(f"{v['volume_id']} ({v['device'] or 'no device'})" for v in home.get("volumes", []))
        where = f"attached to {home['attached_to']}" if home.get("attached_to") else f"in {home['availability_zone']}"
        mounted = f", mounted at {', '.join(home['mounted'])}" if home.get("mounted") else ""
        lines.append(("home", f"volumes {volumes} {where}{mounted}"))
    for part, node in results.items():
        if not part.startswith(MESH_PART_PREFIX) or not isinstance(node, dict):
            continue
        name = part.removeprefix(MESH_PART_PREFIX)
        if node.get("path"):
            where = f"{node['path']} on {node['instance_id']}"
            text = f"Mesh node {name}'s home extracted into {where} ({node.get('files')} files)"
        else:
            volumes = ", ".join(f"{v['volume_id']} ({v['device'] or 'no device'})" for v in node.get("volumes", []))
            text = f"Mesh node {name}'s volumes {volumes} in {node.get('availability_zone')}"
        lines.append((part, text))
    search = results.get("search")
    if isinstance(search, dict) and search.get("indices"):
        lines.append(("search", f"search indices {', '.join(search['indices'])} in {search.get('endpoint')}"))
    return lines


def database_in_home_step(config: InstanceConfig, home: Mapping[str, Any]) -> str:
    """postgresql-fslevel: the database came back with the home; where its data directory is now, and how to start
    PostgreSQL on it."""
    database = config.database
    assert isinstance(database, FsLevelDatabaseConfig)
    where = database.data_directory
    if home.get("path") and isinstance(config.home, RsyncHomeConfig):
        relative = posixpath.relpath(database.data_directory, config.home.home_path)
        where = f"{home['path']}/home/{relative} on {home['instance_id']}"
    elif not home.get("mounted"):
        where += " (once the restored volumes are mounted where the originals were)"
    return (
        f"PostgreSQL's data directory is in the restored home: {where}. Remove the postmaster.pid the running server "
        "left in the snapshot, then start PostgreSQL of the same major version on it as its owner (pg_ctl -D DIR "
        "start; the directory must be 0700 and the server's own): it recovers from its write-ahead log as after a "
        "power cut. Then point bitbucket.properties (jdbc.url) at that server."
    )


def next_steps(plan: RestorePlan, results: Mapping[str, Any]) -> list[str]:
    """What the operator still does by hand, like the DIY restore script's closing message."""
    steps = []
    database, home = results.get("database"), results.get("home")
    if database:
        name = f"database {database['dbname']} on " if database.get("dbname") else "database, endpoint "
        steps.append(
            f"Point bitbucket.properties (jdbc.url, in the shared home) at the restored {name}"
            f"{database['endpoint']}; user and password are those of the original database."
        )
        if database.get("engine") == "MySQL":
            steps.append(
                f"Once the restore is accepted, drop the table bitbucket_backup_restore from {database['dbname']}: it "
                "only marks the database as this restore's (so that a failed restore or a drill drops nothing else)."
            )
    if home and home.get("path"):
        steps.append(
            f"Use {home['path']} on {home['instance_id']} as Bitbucket's home directory: the backup's copy is in "
            f"{home['path']}/home (make it BITBUCKET_HOME, or move its contents up)."
        )
    elif home:
        ids = ", ".join(f"{v['volume_id']} at {v['device'] or '?'}" for v in home["volumes"])
        mounts = ", ".join(plan.config.home.mount_points) if isinstance(plan.config.home, EbsHomeConfig) else ""
        where = f"at {mounts}" if mounts else "as Bitbucket's home directory"
        if home.get("mounted"):
            steps.append(
                f"The restored home is mounted at {', '.join(home['mounted'])} on {home['attached_to']}: check "
                "ownership and free space."
            )
        elif home.get("attached_to"):
            steps.append(f"Start {home['attached_to']} and mount the restored home ({ids}) {where}.")
        else:
            steps.append(
                f"Attach {ids} to the (stopped) Bitbucket host in {home['availability_zone']} and mount the restored "
                f"home {where}."
            )
    if home and isinstance(plan.config.database, FsLevelDatabaseConfig):
        steps.append(database_in_home_step(plan.config, home))
    for part in plan.mesh:
        node, name = results.get(part) or {}, part.removeprefix(MESH_PART_PREFIX)
        if node.get("path"):
            steps.append(
                f"Use {node['path']}/home on {node['instance_id']} as Mesh node {name}'s home directory (the node's "
                "repositories), on a stopped node."
            )
        elif node:
            ids = ", ".join(f"{v['volume_id']} at {v['device'] or '?'}" for v in node.get("volumes", []))
            steps.append(
                f"Attach {ids} to Mesh node {name}'s (stopped) host in {node.get('availability_zone')} and mount them "
                "where its home was."
            )
    search = results.get("search")
    if search:
        steps.append(
            f"The search index's copy is in the indices {', '.join(search['indices'])} (prefix {search['prefix']}), "
            "beside the live ones. To use it in their place: stop Bitbucket, delete the live bitbucket-* indices and "
            "copy each restored index to its original name (POST _reindex), or restore the snapshot from the "
            "cluster's own API; or let Bitbucket rebuild its index from the repositories."
        )
    steps.append("Start Bitbucket and check that it comes up with the restored data.")
    steps.append(
        "If the restored copy replaces the original, point this instance's configuration (cdk.json) at the new "
        "resources and redeploy, so that the next backups copy it."
    )
    return steps


def handle_failure(state: dict[str, Any], failure: dict[str, Any], execution: str = "") -> RestoreFailureHandled:
    """The one failure path: remove what this execution created (unless keep_on_failure), notify once."""
    raw_input = state.get("input") if isinstance(state.get("input"), dict) else {}
    plan = parse(RestorePlan, state["plan"], "handle-restore-failure") if isinstance(state.get("plan"), dict) else None
    refused = None
    if plan is not None:
        try:
            checked(plan, "handle-restore-failure")
        except RestoreRefused as problem:  # removes nothing on a plan's say-so that the configuration does not back
            refused = str(problem)
    instance = plan.instance if plan else str((raw_input or {}).get("instance", "")) or None
    backup_id = plan.backup_id if plan else (raw_input or {}).get("backup_id")
    bind(instance=instance, backup_id=backup_id if isinstance(backup_id, str) else None)
    step = str(failure.get("step", "unknown"))
    error = str(failure.get("Error", "Error"))
    cause = cause_text(failure.get("Cause"))
    if refused:
        actions = [f"nothing removed: {refused}; check by hand"]
    else:
        mesh_started = step == RESTORE.restore_mesh.label
        actions = (
            _cleanup(plan, state, mesh_started)
            if plan
            else ["nothing was created: the restore stopped before it began"]
        )
    message = redact(f"{step}: {cause}" if not cause.startswith(f"{step}:") else cause)
    metrics.add_metric(name="RestoreFailed", unit="Count", value=1)
    if (plan.drill and not refused) if plan is not None else environment.started_by_drill(execution):
        # The drill reports this failure (once); its message carries what was cleaned up.
        return {"error": error, "cause": f"{message} (cleanup: {'; '.join(actions)})", "cleanup": actions}
    notify.publish(
        f"Bitbucket restore FAILED: {instance or 'unknown instance'} at step {step}",
        instance,
        "restore-failed",
        {
            "instance": instance,
            "backup_id": backup_id,
            "step": step,
            "error": error,
            "message": message,
            "cleanup": "".join(f"\n  - {a}" for a in actions),
            "kept_for_inspection": bool(plan and plan.keep_on_failure),
            "execution": plan.execution if plan else None,
        },
    )
    return {"error": error, "cause": message, "cleanup": actions}


def _cleanup(plan: RestorePlan, state: dict[str, Any], mesh_started: bool = False) -> list[str]:
    """Each part's restorer removes what this execution created (or keeps it, with keep_on_failure). `mesh_started`:
    the Mesh nodes' restores began (their Map state failed, so its results are not in the state)."""
    state = {**state, **created_by_part(state)}
    if mesh_started:
        state |= {part: {"started": True} for part in plan.mesh if not isinstance(state.get(part), dict)}
    actions: list[str] = []
    for part in plan.parts:
        try:
            actions += restorer_for(plan.config, part).cleanup(
                plan.parts[part], plan.execution, plan.keep_on_failure, state
            )
        except Exception as cleanup_error:  # one part's cleanup must not keep the other's or the notice back
            text = redact(str(cleanup_error))
            actions.append(f"{part}: cleanup failed ({type(cleanup_error).__name__}: {text}); check by hand")
    return actions or ["nothing had been created yet"]


# --- the restore's safety net: executions stopped or timed out run no Catch --------------------------------------

STOPPED = {"ABORTED", "TIMED_OUT"}


def handle_stopped(detail: dict[str, Any]) -> SafetyNetActed:
    """EventBridge delivered a restore execution's end. StopExecution and the execution timeout skip the failure
    path, so this removes what the execution created, as that path would have, and notifies once per delivery
    (a repeated delivery finds nothing left to remove)."""
    status, execution = str(detail.get("status", "")), str(detail.get("executionArn", ""))
    if status not in STOPPED:
        return {"action": "none", "reason": f"status {status}"}
    state = _last_state(execution)
    if not isinstance(state.get("plan"), dict):
        return {"action": "none", "reason": "the execution ended before its validate step: nothing was created"}
    plan = checked(parse(RestorePlan, state["plan"], "restore-safety-net"), "restore-safety-net")
    bind(instance=plan.instance, backup_id=plan.backup_id)
    actions = _cleanup(plan, state)
    logger.warning(f"restore safety net acted on {status} execution", extra={"cleanup": actions})
    notify.publish(
        f"Bitbucket restore {status}: {plan.instance} - cleaned up by the safety net",
        plan.instance,
        "restore-failed",
        {
            "instance": plan.instance,
            "backup_id": plan.backup_id,
            "status": status,
            "cleanup": "".join(f"\n  - {a}" for a in actions),
            "kept_for_inspection": plan.keep_on_failure,
            "execution": execution,
        },
    )
    return {"action": "cleaned", "cleanup": actions}


def _last_state(execution: str) -> dict[str, Any]:
    """The execution's JSON state as of its last state entered, plus each part whose restore step had begun (its
    resources may exist even though the step never returned)."""
    events: list[dict[str, Any]] = []
    paginator = client("stepfunctions").get_paginator("get_execution_history")
    for page in paginator.paginate(executionArn=execution):
        events += page["events"]
    state: dict[str, Any] = {}
    started: set[str] = set()
    for event in events:
        entered = event.get("stateEnteredEventDetails")
        if not entered:
            continue
        for part, step in RESTORE.parts.items():  # the states that create each part
            if entered.get("name") == step.state:
                started.add(part)
        if entered.get("name") == RESTORE.restore_mesh.state:  # a Mesh node's, inside their Map state
            started.add("mesh")
        try:
            value = json.loads(entered.get("input") or "{}")
        except ValueError:
            continue
        if isinstance(value, dict):
            state = value
    # Inside the Mesh nodes' Map state the last state entered is an iteration's ({"plan", "part"}): the plan says
    # which nodes it restores.
    plan: dict[str, Any] = state["plan"] if isinstance(state.get("plan"), dict) else {}
    mesh = [p for p in plan.get("mesh") or [] if isinstance(p, str)] if "mesh" in started else []
    for part in [*(started - {"mesh"}), *mesh]:
        if not isinstance(state.get(part), dict):
            state[part] = {"started": True}
    return state
