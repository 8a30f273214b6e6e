"""The restore drill: proves that the newest complete backup of an instance restores and is sound.

plan (pick the backup, name throw-away targets) → the restore state machine, run with `drill: true` (its copy stays
`restoring`, it sends no notice of its own) → checks on the drill host through SSM (`drill-check`: git fsck of a
sample of the repositories, Bitbucket's tables in the database) → finish: tag the backup's artifacts
`verified=<date>` (or `verify-failed=<date>`), tear the copy down with each part's restorer (its cleanup), one metric
data point, a notice on failure (and on success with notify_on_success).

What is checked per strategy:
- rsync home: extracted onto the drill host (checked against the manifest by the restore), then `git fsck --full`
  on `sample_repositories` random repositories;
- postgresql / mysql database: the dump restored into a new database on the backed-up server (from the drill host),
  which must have the configured tables;
- amazon-ebs home: new volumes from the snapshots reach `available` (they are not attached, so not fsck'ed);
- amazon-rds / amazon-aurora: the new instance (cluster) reaches `available`; with `drill.database` the drill host
  also connects to it with those credentials and checks the tables.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from functions import catalog, notify, trusted_config
from functions.clients import host
from functions.clients.aws import client
from functions.errors import BackupError
from functions.models import environment
from functions.models import metrics as names
from functions.models.config import InstanceConfig
from functions.models.drill import DrillFlow, DrillPlan
from functions.models.events import ExecutionInput, parse
from functions.models.part_config import DumpedDatabaseConfig, EbsHomeConfig, MysqlDatabaseConfig, RsyncHomeConfig
from functions.observability import bind, metrics, redact
from functions.steps import cause_text, say
from functions.strategies import RESTORED_PREFIX, VERIFIED_TAG, VERIFY_FAILED_TAG, restorer_for, strategies_for

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.results import DrillChecked, DrillChecks, DrillSummary, HostCommand


class DrillFailed(BackupError):
    """The drill cannot run (nothing to restore, no drill configured) or a check failed."""


# --- plan ------------------------------------------------------------------------------------------------------------


def plan(raw_input: dict[str, Any], execution: str) -> DrillPlan:
    request = parse(ExecutionInput, raw_input, "plan")
    bind(instance=request.instance)
    config, version = trusted_config.load(request.instance, step="plan")
    if config.drill is None:
        raise DrillFailed(f"plan: instance '{config.name}' has no drill configured")
    backup_id = catalog.newest_complete(config, every_part=True)  # it restores them all
    if backup_id is None:
        raise DrillFailed(f"plan: instance '{config.name}' has no complete backup to restore")
    bind(backup_id=backup_id)
    drill_plan = DrillPlan(
        instance=config.name,
        backup_id=backup_id,
        execution=execution,
        started_at=time.time(),
        config_version=version,
        flow=DrillFlow(host_poll_interval_seconds=config.timing.host_poll_interval_seconds),
        # Run by the drill's own restore state machine, which alone makes it a drill (not a field of this input).
        restore={
            "instance": config.name,
            "backup_id": backup_id,
            "target": targets(config, backup_id),
            "keep_on_failure": config.drill.keep_on_failure,
        },
    )
    say(config, f"restore drill of {backup_id}: restoring into {json.dumps(drill_plan.restore['target'])}")
    return drill_plan


def targets(config: InstanceConfig, backup_id: str) -> dict[str, Any]:
    """Throw-away names derived from the backup id: a second drill of the same backup finds them taken (refused)
    only if the first one's teardown failed, which is worth a failed drill."""
    drill = config.drill
    assert drill is not None
    stamp = backup_id.removeprefix(f"{config.name}-")
    found: dict[str, Any] = {}
    database = config.database.strategy
    # Restored databases are named under RESTORED_PREFIX (IAM); the name is shortened to keep within 63 characters.
    throwaway = f"{RESTORED_PREFIX}drill-{config.name[:24]}-{stamp}"
    if database == "amazon-rds":
        found["database"] = {"instance_id": throwaway}
    elif database == "amazon-aurora":
        cluster = throwaway
        found["database"] = {"cluster_id": cluster, "writer_instance_id": f"{cluster[:61]}-w"}
    elif database in ("postgresql", "mysql"):
        found["database"] = {
            "dbname": f"drill_{config.name.replace('-', '_')}_{stamp.replace('-', '_')}",
            "host_instance_id": drill.host_instance_id,
        }
    extracted = f"{drill.work_path.rstrip('/')}/{backup_id}"  # the home's; a node's beside it
    if isinstance(config.home, RsyncHomeConfig):
        found["home"] = {"path": extracted, "instance_id": drill.host_instance_id}
    elif isinstance(config.home, EbsHomeConfig):
        found["home"] = {"availability_zone": _zone(drill.host_instance_id or config.home.instance_id)}
    # Every Mesh node's home too, each beside the shared home's (its own directory, or its own volumes).
    mesh: dict[str, Any] = {}
    for node in config.mesh_nodes:
        if isinstance(node.home, RsyncHomeConfig):
            mesh[node.name] = {"path": f"{extracted}-{node.part}", "instance_id": drill.host_instance_id}
        else:
            mesh[node.name] = {"availability_zone": _zone(drill.host_instance_id or node.home.instance_id)}
    if mesh:
        found["mesh"] = mesh
    return found


def _zone(instance_id: str) -> str:
    reservations = client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["Placement"]["AvailabilityZone"])


# --- checks on the drill host ----------------------------------------------------------------------------------------


def start_checks(drill_plan: DrillPlan, restored: dict[str, Any]) -> DrillChecks:
    """Starts `drill-check` on the drill host for what can be checked there; lists what is only checked by the
    restore itself (resources available)."""
    bind(instance=drill_plan.instance, backup_id=drill_plan.backup_id)
    config, drill = drill_plan.config, drill_plan.drill
    parts = restored["drill"]["parts"]
    args: dict[str, str | int] = {}
    checks: list[str] = []
    if "home" in parts and isinstance(config.home, RsyncHomeConfig):
        args |= {"home": f"{parts['home']['path']}/home", "sample": drill.sample_repositories}
        checks.append(f"home: git fsck --full of up to {drill.sample_repositories} repositories")
    elif "home" in parts:
        checks.append("home: the restored volumes became available (not attached, so not checked with git fsck)")
    mesh_homes = []
    for node in config.mesh_nodes:
        if node.part not in parts:
            continue
        if isinstance(node.home, RsyncHomeConfig):
            mesh_homes.append(f"{parts[node.part]['path']}/home")
            checks.append(f"{node.part}: git fsck --full of up to {drill.sample_repositories} of its repositories")
        else:
            checks.append(f"{node.part}: the restored volumes became available (not attached, so not fsck'ed)")
    if mesh_homes:
        args |= {"meshHomes": " ".join(mesh_homes), "sample": drill.sample_repositories}
    if "database" in parts:
        login = _database_login(config, parts["database"], restored.get("database") or {})
        if login:
            args |= login | {"tables": ",".join(drill.tables)}
            checks.append(f"database: connects and has the tables {', '.join(drill.tables)}")
        else:
            checks.append("database: the restored database became available (no drill.database: tables not checked)")
    command = None
    if args:
        assert drill.host_instance_id is not None, "validated with the config"
        host.run(drill.host_instance_id, "InstallScript", {}, step="drill: install host script", timeout=120)
        command = host.start(
            drill.host_instance_id,
            "DrillCheck",
            {"sample": str(drill.sample_repositories), **args},
            step="drill: check the restored copy",
            timeout=drill.command_timeout_seconds,
        )
    say(config, f"restore drill of {drill_plan.backup_id}: checking — {'; '.join(checks)}")
    return {"command": command, "checks": checks}


def _database_login(config: InstanceConfig, part: dict[str, Any], result: dict[str, Any]) -> dict[str, str | int]:
    """drill-check's connection flags for the restored database (the password stays in Secrets Manager)."""
    engine: dict[str, str] = {}
    if isinstance(config.database, DumpedDatabaseConfig):
        cfg = config.database
        secret = cfg.password_secret
        host_, port, user, dbname = part["host"], part["port"], cfg.user, part["dbname"]
        if isinstance(cfg, MysqlDatabaseConfig):
            engine = {"engine": "mysql"}
    elif config.drill and config.drill.database and result.get("endpoint"):
        login = config.drill.database
        secret, user, dbname = login.secret, login.user, login.dbname
        host_, _, port = str(result["endpoint"]).rpartition(":")
    else:
        return {}
    return {"host": host_, "port": port, "user": user, "dbname": dbname, "passwordSecret": secret,
            "region": secret.split(":")[3], **engine}  # fmt: skip


def check_status(drill_plan: DrillPlan, check: DrillChecks) -> DrillChecked:
    bind(instance=drill_plan.instance, backup_id=drill_plan.backup_id)
    # The state machine checks only a started command ($.check.command is not null).
    summary = host.check(cast("HostCommand", check["command"]))
    if summary is None:
        return {"done": False}
    return {"done": True, "result": summary.get("drill-check", {})}


# --- record, tear down, report ---------------------------------------------------------------------------------------


def finish(state: dict[str, Any], failure: dict[str, Any]) -> DrillSummary:
    raw_input = state.get("input") if isinstance(state.get("input"), dict) else {}
    drill_plan = parse(DrillPlan, state["plan"], "finish") if isinstance(state.get("plan"), dict) else None
    instance = drill_plan.instance if drill_plan else str((raw_input or {}).get("instance", "")) or None
    backup_id = drill_plan.backup_id if drill_plan else None
    bind(instance=instance, backup_id=backup_id)
    verified = not failure
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    actions: list[str] = []
    if drill_plan is not None:
        _record(drill_plan.config, drill_plan.backup_id, verified, today, actions)
        restored = state.get("restored")
        if isinstance(restored, dict) and isinstance(restored.get("output"), dict):
            keep = not verified and drill_plan.drill.keep_on_failure
            actions += teardown(drill_plan, restored["output"], keep)
        elif not verified:
            actions.append("the restore removed what it had created itself (see its cause)")
    metrics.add_dimension(names.INSTANCE_DIMENSION, instance or "unknown")
    metrics.add_metric(name=names.DRILL_SUCCEEDED, unit="Count", value=1 if verified else 0)
    metrics.add_metric(name=names.DRILL_FAILED, unit="Count", value=0 if verified else 1)
    step = str(failure.get("step", "")) if failure else ""
    cause = _failure_cause(failure) if failure else ""
    checks = state.get("check", {}).get("checks", []) if isinstance(state.get("check"), dict) else []
    result = state.get("checked", {}).get("result") if isinstance(state.get("checked"), dict) else None
    summary: DrillSummary = {
        "instance": instance,
        "backup_id": backup_id,
        "verified": verified,
        "date": today,
        "checks": checks,
        "result": result,
        "teardown": actions,
        "execution": drill_plan.execution if drill_plan else None,
    }
    if not verified:
        summary |= {"step": step, "error": str(failure.get("Error", "Error")), "cause": cause}
    if drill_plan is not None:
        say(drill_plan.config, f"restore drill of {backup_id}: {'verified' if verified else 'FAILED at ' + step}")
    leftover = [a for a in actions if "by hand" in a]
    if not verified or leftover or (drill_plan is not None and drill_plan.config.notify_on_success):
        subject = (
            f"Bitbucket restore drill FAILED: {instance or 'unknown instance'} at step {step}"
            if not verified
            else f"Bitbucket restore drill of {backup_id} succeeded"
            + (", but its teardown left resources behind" if leftover else "")
        )
        notify.publish(
            subject,
            instance,
            "drill-failed" if not verified else "warning" if leftover else "succeeded",
            {
                "instance": instance,
                "backup_id": backup_id,
                "step": step or None,
                "message": cause or None,
                "checked": "".join(f"\n  - {c}" for c in checks),
                "tagged": f"{VERIFIED_TAG if verified else VERIFY_FAILED_TAG}={today}" if backup_id else None,
                "teardown": "".join(f"\n  - {a}" for a in actions),
                "execution": summary["execution"],
            },
        )
    return summary


def _failure_cause(failure: dict[str, Any]) -> str:
    """The error text; a failed restore execution (`.sync`) reports its whole description: take its cause."""
    cause = failure.get("Cause")
    if isinstance(cause, str) and cause.startswith("{"):
        try:
            described = json.loads(cause)
        except ValueError:
            described = None
        if isinstance(described, dict) and "ExecutionArn" in described:
            error, inner = described.get("Error") or "", described.get("Cause") or "the restore failed"
            return redact(f"restore {described.get('Status', 'FAILED')}: {error}: {inner}")[:1500]
    return cause_text(cause)


def _record(config: InstanceConfig, backup_id: str, verified: bool, today: str, actions: list[str]) -> None:
    """The result on every artifact of the backup: the catalog shows which backups were proven restorable."""
    key = VERIFIED_TAG if verified else VERIFY_FAILED_TAG
    for strategy in strategies_for(config):
        for artifact in strategy.artifacts(backup_id):
            strategy.tag(artifact, {key: today})
            actions.append(f"tagged {artifact.id} {key}={today}")


def _foreign(drill_plan: DrillPlan, output: dict[str, Any], parts: dict[str, Any]) -> str | None:
    """Why the restore's output is not this drill's to tear down (None if it is): an execution of the drill's own
    restore state machine, parts the instance backs up, a home only below the drill's work_path on its host."""
    config, drill = drill_plan.config, drill_plan.drill
    if not environment.started_by_drill(str(output.get("execution", ""))):
        return "the restore execution is not one of the drill's restore state machine"
    if not isinstance(parts, dict) or any(part not in config.parts for part in parts):
        return "the restore's parts are not this instance's"
    for part, home in parts.items():
        if part == "database" or not isinstance(home, dict) or home.get("path") is None:
            continue
        path, root = str(home["path"]), drill.work_path.rstrip("/") + "/"
        if not path.startswith(root) or ".." in path.split("/") or home.get("instance_id") != drill.host_instance_id:
            return f"the restored {part} {path} is not below the drill's work_path on its host"
    return None


def teardown(drill_plan: DrillPlan, output: dict[str, Any], keep: bool) -> list[str]:
    """Removes the drill's copy: each part's restorer's cleanup (only what that restore execution created and still
    holds `restoring`), then the drill's extraction directory on the drill host."""
    info = output.get("drill") or {}
    parts, created = info.get("parts", {}), info.get("created", {})
    actions: list[str] = []
    refused = _foreign(drill_plan, output, parts)
    if refused:
        # Removes nothing on the say-so of an output that the configuration does not back.
        return [f"teardown refused: {refused}; remove the drill's copy by hand"]
    for part, part_plan in parts.items():
        try:
            actions += restorer_for(drill_plan.config, part).cleanup(part_plan, str(output["execution"]), keep, created)
        except Exception as error:  # one part's teardown must not keep the other's back
            actions.append(f"{part}: teardown failed ({type(error).__name__}: {redact(str(error))}); remove it by hand")
    for part, home in parts.items():
        if part == "database" or not home.get("path") or keep:
            continue
        # The restorer's cleanup removed what was extracted; the (now empty) directory is the drill's own.
        host.run(
            home["instance_id"],
            "RemoveRestoredHome",
            {"path": home["path"], "backupId": drill_plan.backup_id, "removeDirectory": "true"},
            step="drill: rmdir",
        )
    return actions
