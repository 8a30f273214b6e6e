"""A copy step that ends after its run has already failed (found by CI about once in ten runs).

When one branch of the copy fails, Step Functions fails the Parallel and runs the failure path, but it does not stop
a copy Lambda still running: that copy may make its snapshot after the failure path listed this run's artifacts, and
nothing would ever remove it (pruning touches complete backups only). Here the EBS copies' CreateSnapshots is held
until the failure path has listed (or has finished), as in the slowest interleaving seen: each copy must find its run
discarded, remove what it just made, and say so."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest

from functions.handlers._step import is_warm_up
from functions.models.steps import BACKUP
from functions.strategies import BACKUP_ID_TAG
from rehearsal.hostworld import Postgres
from tests.integration.conftest import World, backup_id_of, fail_backend, wait_for

COPIES = {BACKUP.copy_home.handler, BACKUP.copy_mesh.handler}


@contextmanager
def snapshots_held_until(release: threading.Event) -> Iterator[list[str]]:
    """Every CreateSnapshots waits for `release` before it makes anything; yields the instances it was asked for."""
    from moto.ec2.models.elastic_block_store import EBSBackend

    original = EBSBackend.create_snapshots
    asked: list[str] = []

    def held(self: Any, instance_spec: dict[str, Any], description: str, tags: dict[str, str]) -> Any:
        asked.append(str(instance_spec.get("InstanceId")))
        assert release.wait(60), "the failure path never got there"
        return original(self, instance_spec, description, tags)

    with mock.patch.object(EBSBackend, "create_snapshots", held):
        yield asked


@contextmanager
def listings_of_a_backup(parts: int, listed: threading.Event) -> Iterator[None]:
    """Sets `listed` once snapshots were listed by backup id `parts` times: the failure path lists each EBS part of
    the run once (no other step of a failing run lists by backup id)."""
    from moto.ec2.models.elastic_block_store import EBSBackend

    original = EBSBackend.describe_snapshots
    seen = {"n": 0}
    lock = threading.Lock()

    def describe(self: Any, snapshot_ids: list[str] | None = None, filters: Any = None) -> Any:
        found = original(self, snapshot_ids, filters)
        if filters and f"tag:{BACKUP_ID_TAG}" in filters:
            with lock:
                seen["n"] += 1
                if seen["n"] >= parts:
                    listed.set()
        return found

    with mock.patch.object(EBSBackend, "describe_snapshots", describe):
        yield


def copies_of(w: World) -> list[Any]:
    """The home's and the Mesh nodes' copy steps' invocations that ended (not their warm-ups)."""
    return [i for i in list(w.r.runtime.invocations) if i.handler in COPIES and not is_warm_up(i.event)]


@pytest.mark.parametrize(
    ("overrides", "mesh_nodes", "release_when"),
    [
        ({"zero_downtime": True}, 0, "listed"),  # what CI saw: test_zero_downtime's failed database copy
        ({}, 0, "cleaned up"),  # under the lock; the copy ends after the failure path released the run's record
        ({}, 2, "listed"),  # Mesh nodes: every node's copy, and the home's
    ],
    ids=["zero-downtime", "locked-record-gone", "mesh-nodes"],
)
def test_a_copy_made_after_the_failure_path_listed_is_removed_by_the_copy(
    world_factory: Callable[..., World], overrides: dict[str, Any], mesh_nodes: int, release_when: str
) -> None:
    from moto.rds.exceptions import RDSClientError
    from moto.rds.models import RDSBackend

    w = world_factory(instance_overrides=overrides, mesh_nodes=mesh_nodes)
    listed, failure_path_ended = threading.Event(), threading.Event()
    release = listed if release_when == "listed" else failure_path_ended
    ebs_parts = 1 + mesh_nodes
    with (
        fail_backend(RDSBackend, "create_db_snapshot", RDSClientError("InvalidDBInstanceState", "injected")),
        listings_of_a_backup(ebs_parts, listed),
        snapshots_held_until(release) as asked,
    ):
        result = w.r.run_backup()
        failure_path_ended.set()
        assert result.status == "FAILED" and "Failed: copy" in result.states_entered(), result.cause
        assert listed.is_set(), "the failure path listed no snapshots"
        # The held copies go on after the execution failed, as Lambda invocations do.
        wait_for(lambda: len(copies_of(w)) == ebs_parts, seconds=60)
    assert len(asked) == ebs_parts

    backup_id = backup_id_of(result)
    assert backup_id
    assert w.r.snapshots(backup_id) == [], "a copy made after the failure path listed was left behind"
    assert {c.error for c in copies_of(w)} == {"RunDiscarded"}
    errors = [r["message"] for r in w.r.logs.records() if r.get("error") == "RunDiscarded"]
    assert len(errors) == ebs_parts, errors
    for message in errors:
        step = message.split(":", 1)[0]
        assert step in (BACKUP.copy_home.label, BACKUP.copy_mesh.label), message
        assert f"made after backup {backup_id} had already failed" in message, message
        assert "so it was removed again: deleted snap-" in message, message
        # Once listed, the copy sees the mark, or the record already gone (the failure path went on meanwhile).
        gone = "(its run record is gone)" in message
        assert gone or (release_when == "listed" and "(its failure path is removing what the run made)" in message)
        assert "Error(" not in message and "{'" not in message and "snapshot(" not in message.lower(), message
    notes = w.failure_notifications()
    assert len(notes) == 1 and "at step copy" in notes[0]["subject"]
    assert w.r.run_record() is None
    assert w.r.iam.denied == [], w.r.iam.denied


@contextmanager
def home_snapshot_sent_after(release: threading.Event) -> Iterator[list[str]]:
    """The home's SnapshotHome under the lock (not its check before the lock) is sent only once `release` is set, and
    answered once the host took the snapshot (it takes milliseconds); the ids of the commands it became."""
    from moto.ssm.models import SimpleSystemManagerBackend

    original = SimpleSystemManagerBackend.send_command
    sent: list[str] = []

    def send_command(self: Any, **kwargs: Any) -> Any:
        if str(kwargs.get("document_name")).endswith("SnapshotHome") and (kwargs.get("parameters") or {}).get(
            "checkOnly"
        ) == ["false"]:
            assert release.wait(120), "the failure path never ended"
            command = original(self, **kwargs)
            sent.append(command.command_id)
            wait_for(lambda: command.status != "InProgress", seconds=60)
            return command
        return original(self, **kwargs)

    with mock.patch.object(SimpleSystemManagerBackend, "send_command", send_command):
        yield sent


def test_a_home_snapshot_taken_on_its_host_after_the_failure_path_ended_is_removed_by_the_copy(
    world_factory: Callable[..., World], postgres: Postgres
) -> None:
    """A host copy's artifact (its archive) is made only after the unlock, but what its command leaves on the host is
    the failure path's to remove: a btrfs snapshot of the home taken after the failure path removed the run's
    snapshots would stay on the host for ever. The copy step cancels its command and removes the snapshot itself."""
    from tests.integration.test_home_snapshot import snapshots_left

    w = world_factory(home="btrfs", database="postgresql", postgres=postgres)
    secret = w.r.instance_config["database"]["password_secret"]  # pg_dump fails at once: exit 8
    w.r.client("secretsmanager").put_secret_value(
        SecretId=secret, SecretString=json.dumps({"username": "bitbucket", "password": "Wrong-passw0rd"})
    )
    failure_path_ended = threading.Event()
    with home_snapshot_sent_after(failure_path_ended) as sent:
        result = w.r.run_backup(timeout=300)
        failure_path_ended.set()
        assert result.status == "FAILED" and "Failed: copy" in result.states_entered(), result.cause
        wait_for(lambda: len(copies_of(w)) == 1, seconds=120)  # the home's copy went on, and ended
    assert len(sent) == 1
    assert snapshots_left(w) == [], "the home's snapshot taken after the failure path ended was left on the host"
    assert [c.error for c in copies_of(w)] == ["RunDiscarded"]
    (message,) = [r["message"] for r in w.r.logs.records() if r.get("error") == "RunDiscarded"]
    assert message.startswith(f"copy-home: the home copy was made after backup {backup_id_of(result)} had already")
    assert "(its run record is gone)" in message and "removed the home's snapshot" in message, message
    assert "copy home: btrfs snapshot on i-" in message and " had ended" in message, message
    assert not w.sim.locked and len(w.failure_notifications()) == 1
    assert w.r.iam.denied == [], w.r.iam.denied
