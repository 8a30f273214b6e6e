"""A home on btrfs, end to end: under the lock only a read-only snapshot is taken (the stack's SnapshotHome document,
the real host script, a real btrfs file system on a loop device); after the unlock the snapshot is rsync'ed,
removed, archived and uploaded; what users push after the unlock is not in the backup. On failure the run's
snapshot is removed too, and the archive restores like any rsync archive."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rehearsal.hostworld import APP_PASSWORD, REPOS, Postgres
from tests.integration.conftest import World
from tests.integration.test_copy_strategies import archive_of, assert_failed_cleanly, download, refs, restore


@pytest.fixture
def snapshot_world(world_factory: Callable[..., World], postgres: Postgres, tmp_path: Path) -> Callable[..., World]:
    def make(**kwargs: Any) -> World:
        kwargs.setdefault("instance_overrides", {"restore": {"allowed_roots": [str(tmp_path)]}})
        w = world_factory(home="btrfs", database="postgresql", postgres=postgres, **kwargs)
        return w

    return make


def takes_the_snapshot(script: str) -> bool:
    """The SnapshotHome document as sent under the lock (not its check before the lock)."""
    return ".sh fs-snapshot " in script and "[ 'false' != true ] || args+=(--check-only)" in script


def snapshots_left(w: World) -> list[str]:
    where = Path(w.r.instance_config["home"]["snapshot_path"])
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


def test_only_a_snapshot_is_taken_under_the_lock_and_later_pushes_are_not_in_the_backup(
    snapshot_world: Callable[..., World], tmp_path: Path
) -> None:
    w = snapshot_world()
    home = w.r.bitbucket_home
    assert home is not None
    caught: dict[int, str] = {}

    def users_push_after_the_unlock(instance_id: str, script: str) -> None:
        if ".sh rsync-home " in script and "fs-snapshot --remove" in script:  # the archive, after the unlock
            assert not w.sim.locked
            caught.update({repo_id: refs(home.repo(repo_id)) for repo_id in home.repo_ids})
            home.push_commits(home.repo_ids[0], "main", 2)

    w.r.host.before_run.append(users_push_after_the_unlock)
    result = w.r.run_backup(timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    assert caught, "the archive from the snapshot ran"

    # Under the lock the home's only command was the snapshot; the rsync passes ran before the lock (live) and
    # after the unlock (from the snapshot).
    home_commands = [c for c in w.r.host.commands if c.instance_id == w.r.resources["home_host"]]
    scripts = [c.script for c in home_commands]
    (taken,) = [c for c in home_commands if takes_the_snapshot(c.script)]
    assert taken.exit_code == 0, taken.stderr
    assert json.loads(taken.stdout.strip().splitlines()[-1])["seconds"] < 5
    assert sum(".sh rsync-home " in s for s in scripts) == 2
    assert snapshots_left(w) == []

    # The archive holds the home as the snapshot caught it, not the commits pushed after the unlock.
    entry = archive_of(result, "home")
    with tarfile.open(download(w.r, entry, tmp_path / "home.tar.gz"), "r:gz") as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    first = home.repo_ids[0]
    assert refs(tmp_path / "extracted" / "home" / REPOS / str(first)) == caught[first] != refs(home.repo(first))

    # It restores like any rsync archive.
    restored = restore(w, str((result.output or {})["backup_id"]), {"home": {"path": str(tmp_path / "restored")}})
    assert restored.status == "SUCCEEDED", restored.cause
    assert refs(tmp_path / "restored" / "home" / REPOS / str(first)) == caught[first]


def test_a_failed_run_removes_its_snapshot(snapshot_world: Callable[..., World]) -> None:
    """The database copy fails under the lock after the home's snapshot was taken: the failure path unlocks, and
    removes the snapshot (no later run would)."""
    w = snapshot_world()
    secret = w.r.instance_config["database"]["password_secret"]
    w.r.client("secretsmanager").put_secret_value(
        SecretId=secret, SecretString=json.dumps({"username": "bitbucket", "password": "Wrong-passw0rd"})
    )
    taken: list[str] = []

    def note_the_snapshot(instance_id: str, script: str) -> None:
        if takes_the_snapshot(script):
            taken.append(script)

    w.r.host.before_run.append(note_the_snapshot)
    result = w.r.run_backup(timeout=300)
    message = assert_failed_cleanly(w, result, "copy", "pg_dump", "exit 8")
    assert taken, "the home's snapshot was taken under the lock"
    assert snapshots_left(w) == []
    assert "removed the home's snapshot" in message
    assert APP_PASSWORD not in message


def test_a_run_that_never_locked_does_not_ask_its_host_for_a_snapshot(snapshot_world: Callable[..., World]) -> None:
    """Refused the lock, the run made no snapshot: its failure path sends the host no RemoveHomeSnapshot (which a
    host that is down would answer only when the command times out, minutes before the notification)."""
    w = snapshot_world()
    removals: list[str] = []

    def note_a_removal(instance_id: str, script: str) -> None:
        if ".sh fs-snapshot --remove " in script and ".sh rsync-home " not in script:  # RemoveHomeSnapshot alone
            removals.append(script)

    w.r.host.before_run.append(note_a_removal)
    w.sim.inject("lock", status=409)
    result = w.r.run_backup(timeout=300)
    assert_failed_cleanly(w, result, "lock", "409")
    assert removals == [] and snapshots_left(w) == []


def test_postgresql_fslevel_is_copied_by_the_homes_snapshot_and_the_restore_says_where_it_is(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    """No copy of its own: one part (the home) in the catalog, the data directory in its archive, and the restore's
    next steps name where it now is and how to start PostgreSQL on it. (A real server on a restored snapshot:
    tests/host/test_host_snapshot.py.)"""
    w = world_factory(
        home="btrfs", database="postgresql-fslevel", instance_overrides={"restore": {"allowed_roots": [str(tmp_path)]}}
    )
    result = w.r.run_backup(timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    backup_id = str((result.output or {})["backup_id"])
    assert "No database to copy" in result.states_entered()
    assert not [c for c in w.r.host.commands if ".sh pg-dump " in c.script or ".sh mysql-dump " in c.script]
    assert {s["part"] for s in w.r.snapshots(backup_id)} == {"home"}
    prepared = [n for n in w.r.logs.records() if "prepared backup" in str(n.get("seed", ""))]
    assert prepared and "PostgreSQL's data directory" in str(prepared[0]["seed"])
    with tarfile.open(download(w.r, archive_of(result, "home"), tmp_path / "home.tar.gz"), "r:gz") as tar:
        assert "home/pgdata/PG_VERSION" in tar.getnames()

    restored = restore(w, backup_id, {"home": {"path": str(tmp_path / "restored")}})
    assert restored.status == "SUCCEEDED", restored.cause
    steps = " ".join((restored.output or {}).get("next_steps", []))
    assert f"{tmp_path}/restored/home/pgdata" in steps and "Remove the postmaster.pid" in steps
    assert (tmp_path / "restored" / "home" / "pgdata" / "PG_VERSION").read_text() == "15\n"
