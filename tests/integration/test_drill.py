"""The restore drill end to end in the rehearsal runtime: a real backup (rsync of real git repositories, pg_dump of a
real PostgreSQL 15), then the drill state machine from the template: the restore state machine (started with
`.sync:2`) extracts and pg_restores onto the drill host, `drill-check` runs git fsck and looks for Bitbucket's tables
for real, the backup's archives are tagged, the copy is torn down. And the same with EBS + RDS in moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from functions.drill import VERIFIED_TAG, VERIFY_FAILED_TAG
from functions.models import metrics as names
from functions.models.steps import DRILL
from functions.strategies import STATUS_TAG
from rehearsal.hostworld import APP_PASSWORD, Postgres
from rehearsal.runtime import Rehearsal, RunResult
from tests.integration.conftest import World
from tests.integration.test_monitoring import emf_records, run_record


@pytest.fixture
def drill_world(world_factory: Callable[..., World], postgres: Postgres) -> Callable[..., World]:
    def make(home: str = "rsync", database: str = "postgresql", **kwargs: Any) -> World:
        extra = {"postgres": postgres} if database == "postgresql" else {}
        return world_factory(home=home, database=database, drill=True, **extra, **kwargs)

    return make


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def backed_up(w: World) -> str:
    result = w.r.run_backup(timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    assert result.output is not None
    return str(result.output["backup_id"])


def drill_checks(r: Rehearsal) -> list[Any]:
    return [c for c in r.host.commands if ".sh drill-check " in c.script]


def drill_databases(postgres: Postgres) -> list[str]:
    return postgres.superuser("SELECT datname FROM pg_database WHERE datname LIKE 'drill_%'").split()


def drill_notifications(r: Rehearsal) -> list[dict[str, Any]]:
    return [n for n in r.notifications() if "drill" in (n["subject"] or "")]


def restore_executions(r: Rehearsal) -> list[dict[str, Any]]:
    """The executions of the drill's own restore state machine (the operators' one runs none for a drill)."""
    machine = next(arn for logical, arn in r.state_machines.items() if "ForDrills" in logical)
    listed = r.client("stepfunctions").list_executions(stateMachineArn=machine)["executions"]
    assert r.client("stepfunctions").list_executions(stateMachineArn=r.restore_state_machine_arn)["executions"] == []
    return [r.client("stepfunctions").describe_execution(executionArn=e["executionArn"]) for e in listed]


def test_a_drill_restores_checks_tags_and_tears_down_the_newest_backup(
    drill_world: Callable[..., World], postgres: Postgres
) -> None:
    w = drill_world(instance_overrides={"notify_on_success": True})
    older = backed_up(w)
    before = len(w.r.notifications())

    result = w.r.run_drill()
    assert result.status == "SUCCEEDED", result.cause
    out = result.output
    assert out is not None and out["verified"] is True and out["backup_id"] == older

    # The drill's restore state machine ran (once, a drill by being that machine, not by its input; throw-away
    # targets on the drill host).
    (restore,) = restore_executions(w.r)
    assert restore["status"] == "SUCCEEDED"
    restore_input = json.loads(restore["input"])
    drill_host = w.r.resources["drill_host"]
    assert "drill" not in restore_input and restore_input["backup_id"] == older
    assert restore_input["target"]["home"] == {"path": f"{w.r.host.root}/drill/{older}", "instance_id": drill_host}
    assert restore_input["target"]["database"]["dbname"].startswith("drill_demo_")

    # The checks ran for real on the drill host: git fsck of every repository (4 <= sample 5), the tables found.
    (check,) = drill_checks(w.r)
    assert check.instance_id == drill_host and check.exit_code == 0, check.stderr
    summary = json.loads(check.stdout.strip().splitlines()[-1])
    assert w.r.bitbucket_home is not None
    assert sorted(summary["home"]["fsck_ok"], key=int) == [str(i) for i in sorted(w.r.bitbucket_home.repo_ids)]
    assert summary["database"]["tables_found"] == ["project", "repository", "sta_normal_user"]
    assert out["result"] == summary

    # The backup's archives say so; the copy is gone (database dropped, extraction directory removed).
    archives = w.r.archives()
    assert len(archives) == 2
    for archive in archives:
        assert archive["tags"][VERIFIED_TAG] == today() and VERIFY_FAILED_TAG not in archive["tags"]
        assert archive["tags"][STATUS_TAG] == "complete"
    # The catalog (what `bitbucket-backup list` shows) reads the verdict back.
    assert {s["verified"] for s in w.r.snapshots(older)} == {f"verified {today()}"}
    assert drill_databases(postgres) == []
    assert not (w.r.host.root / "drill" / older).exists()

    # One success notification (notify_on_success), no restore notification of its own; no password anywhere.
    new = w.r.notifications()[before:]
    assert [n["subject"] for n in new] == [f"Bitbucket restore drill of {older} succeeded"]
    assert new[0]["attributes"]["outcome"]["Value"] == "succeeded"
    assert APP_PASSWORD not in w.all_text(result)
    assert all(APP_PASSWORD not in c.script for c in w.r.host.commands)


def test_a_failing_check_tags_verify_failed_tears_down_and_notifies_once(
    drill_world: Callable[..., World], postgres: Postgres
) -> None:
    w = drill_world()
    backup_id = backed_up(w)
    # The backed-up database lacks one of the tables the drill requires.
    w.r.configure(drill={**w.r.instance_config["drill"], "tables": ["project", "sta_missing_table"]})
    before = len(w.r.notifications())

    result = w.r.run_drill()
    assert result.status == "FAILED"
    assert result.error == "DrillFailed" and "sta_missing_table" in str(result.cause)
    assert "Failed: check" in result.states_entered() and DRILL.finish.state in result.states_entered()
    (check,) = drill_checks(w.r)
    assert check.exit_code == 7

    for archive in w.r.archives():
        assert archive["tags"][VERIFY_FAILED_TAG] == today() and VERIFIED_TAG not in archive["tags"]
    assert {s["verified"] for s in w.r.snapshots(backup_id)} == {f"drill failed {today()}"}
    assert drill_databases(postgres) == []
    assert not (w.r.host.root / "drill" / backup_id).exists()
    new = w.r.notifications()[before:]
    assert len(new) == 1 and new[0]["subject"] == "Bitbucket restore drill FAILED: demo at step check"
    assert "sta_missing_table" in new[0]["message"] and new[0]["attributes"]["outcome"]["Value"] == "drill-failed"


def test_a_drill_whose_restore_fails_reports_once_and_leaves_nothing(
    drill_world: Callable[..., World], postgres: Postgres
) -> None:
    w = drill_world()
    backed_up(w)
    # The drill host cannot run commands: the restore's validation is refused before anything is created.
    w.r.host.faults[w.r.resources["drill_host"]] = "TimedOut"
    before = len(w.r.notifications())
    result = w.r.run_drill()
    assert result.status == "FAILED" and "Failed: restore" in result.states_entered()
    (restore,) = restore_executions(w.r)
    assert restore["status"] == "FAILED"
    assert all(a["tags"][VERIFY_FAILED_TAG] == today() for a in w.r.archives())
    new = w.r.notifications()[before:]
    assert len(new) == 1 and "at step restore" in new[0]["subject"], new
    assert "TimedOut" in new[0]["message"]
    assert drill_databases(postgres) == []


def test_a_drill_without_a_complete_backup_fails(drill_world: Callable[..., World]) -> None:
    w = drill_world(metrics=True)
    with emf_records(w) as records:
        result = w.r.run_drill()
    assert result.status == "FAILED" and "Failed: plan" in result.states_entered()
    assert "no complete backup" in str(result.cause)
    assert restore_executions(w.r) == []
    assert len(drill_notifications(w.r)) == 1
    # The data point the drill-failed alarm watches.
    record = run_record(records, names.DRILL_FAILED)
    assert (
        record["instance"] == "demo" and record[names.DRILL_FAILED] == [1.0] and record[names.DRILL_SUCCEEDED] == [0.0]
    )


def test_an_ebs_and_rds_drill_checks_availability_and_removes_the_copy(world_factory: Callable[..., World]) -> None:
    w = world_factory(drill=True, metrics=True)
    backup_id = backed_up(w)
    with emf_records(w) as records:
        result: RunResult = w.r.run_drill()
    assert result.status == "SUCCEEDED", result.cause
    record = run_record(records, names.DRILL_SUCCEEDED)
    assert record[names.DRILL_SUCCEEDED] == [1.0] and record[names.DRILL_FAILED] == [0.0]
    assert result.output is not None and result.output["verified"] is True
    checks = " ".join(result.output["checks"])
    assert "volumes became available" in checks and "tables not checked" in checks
    assert drill_checks(w.r) == []  # nothing to run on the host without drill.database

    (restore,) = restore_executions(w.r)
    assert json.loads(restore["input"])["target"]["database"] == {"instance_id": f"restored-drill-{backup_id}"}
    # Teardown: the restored DB instance and volumes are deleted; the original and the backup stay.
    rds = w.r.client("rds")
    identifiers = [d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]]
    assert identifiers == [w.r.resources["db_instance"]]
    volumes = w.r.client("ec2").describe_volumes()["Volumes"]
    restored = [v for v in volumes if any(t["Key"] == "bitbucket-backup:restore-execution" for t in v.get("Tags", []))]
    assert restored == []
    tagged = w.r.snapshots(backup_id)
    assert len(tagged) == 2 and all(s["status"] == "complete" for s in tagged)
    ec2_tags = w.r.client("ec2").describe_tags(Filters=[{"Name": "key", "Values": [VERIFIED_TAG]}])["Tags"]
    assert [t["Value"] for t in ec2_tags] == [today()]
    rds_tags = rds.list_tags_for_resource(ResourceName=rds.describe_db_snapshots(DBSnapshotIdentifier=backup_id)[
        "DBSnapshots"][0]["DBSnapshotArn"])["TagList"]  # fmt: skip
    assert {t["Key"]: t["Value"] for t in rds_tags}[VERIFIED_TAG] == today()
