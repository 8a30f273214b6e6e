"""What a run tells CloudWatch and the topic, in the rehearsal with metrics on: the EMF records the handlers print
(the real artefact CloudWatch turns into metrics), the success notification, and the staleness check's view of the
catalog the run just made."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from functions.models import metrics as names
from tests.integration.conftest import EARLIER, World, backup_id_of


@contextlib.contextmanager
def emf_records(world: World) -> Iterator[list[dict[str, Any]]]:
    """The EMF records the functions printed meanwhile (Powertools prints them on stdout, which in Lambda is the log;
    the rehearsal's workers' stdout is its log capture, and with REHEARSAL_LAMBDA=inline it is this process's)."""
    records: list[dict[str, Any]] = []
    before = len(world.r.logs.lines)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        yield records
    lines = [*world.r.logs.lines[before:], *out.getvalue().splitlines()]
    records += [json.loads(line) for line in lines if line.startswith('{"_aws"')]


def run_record(records: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    (record,) = [r for r in records if metric in r]
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == names.NAMESPACE
    assert directive["Dimensions"] == [["service", names.INSTANCE_DIMENSION]] or directive["Dimensions"] == [
        [names.INSTANCE_DIMENSION, "service"]
    ]
    return record


def test_a_successful_run_emits_its_metrics_and_notifies(world_factory: Callable[..., World]) -> None:
    world = world_factory(metrics=True, instance_overrides={"notify_on_success": True})
    with emf_records(world) as records:
        result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    record = run_record(records, names.BACKUP_SUCCEEDED)
    assert {k: record[k] for k in ("service", "instance")} == names.dimensions("demo")
    assert record[names.BACKUP_SUCCEEDED] == [1.0] and record[names.BACKUP_FAILED] == [0.0]
    output = result.output or {}
    assert record[names.LOCK_WINDOW] == [output["lock_window_s"]] and record[names.DRAIN] == [output["drain_s"]]
    assert record[names.DURATION] == [output["duration_s"]]
    assert record[names.BACKUP_SIZE] == [100.0 + 50.0]  # the home volume and the database's allocated storage
    # Exactly one message, with the attributes per-instance subscriptions filter on.
    (note,) = world.r.notifications()
    assert note["subject"] == f"Bitbucket backup {backup_id_of(result)} succeeded"
    attributes = {k: v.get("Value", v.get("StringValue")) for k, v in note["attributes"].items()}
    assert attributes == {"instance": "demo", "outcome": "succeeded"}, note["attributes"]


def test_a_failed_run_emits_backup_failed(world_factory: Callable[..., World]) -> None:
    world = world_factory(metrics=True)
    world.r.client("secretsmanager").put_secret_value(
        SecretId="bitbucket/demo/backup-user", SecretString=json.dumps({"username": "admin", "password": "nope!"})
    )
    with emf_records(world) as records:
        assert world.r.run_backup().status == "FAILED"
    record = run_record(records, names.BACKUP_FAILED)
    assert record["instance"] == "demo" and record["step"] == "validate"
    assert record[names.BACKUP_FAILED] == [1.0] and record[names.BACKUP_SUCCEEDED] == [0.0]


def check_staleness(world: World) -> dict[str, Any]:
    """Invokes the deployed staleness check, as its hourly schedule does."""
    function = next(name for name in world.r.resolver.refs if re.fullmatch(r"StalenessCheck[0-9A-F]{8}", name))
    response = world.r.client("lambda").invoke(FunctionName=function, Payload=b"{}")
    assert "FunctionError" not in response
    return dict(json.loads(response["Payload"].read())["demo"])


def test_staleness_check_reads_the_catalog(world_factory: Callable[..., World]) -> None:
    world = world_factory(metrics=True)
    first = check_staleness(world)
    # No backup yet: counted from when the instance was configured (just now), so not stale yet.
    assert first["newest_complete"] is None and first["hours_since_complete"] < 1 and not first["stale"]
    assert first["limit_hours"] == 48  # rate(1 day): twice the interval

    world.seed_earlier_backup(EARLIER)
    old = check_staleness(world)
    assert old["newest_complete"] == EARLIER and old["hours_since_complete"] > 48 and old["stale"]

    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    with emf_records(world) as records:
        fresh = check_staleness(world)
    assert fresh["newest_complete"] == backup_id_of(result) and fresh["hours_since_complete"] < 1
    assert not fresh["stale"]
    record = run_record(records, names.HOURS_SINCE_COMPLETE)
    assert record["instance"] == "demo" and record[names.HOURS_SINCE_COMPLETE] == [fresh["hours_since_complete"]]
