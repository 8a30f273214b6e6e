"""The host script's btrfs snapshot of the home, for real: a btrfs file system on a loop device that the test makes,
the home a subvolume of real git repositories. Under the lock only the snapshot is taken; what is pushed afterwards
is not in the copy made from it; the snapshot is removed, and nothing else ever is."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearsal.hostworld import (
    PG_BIN,
    BitbucketHome,
    BtrfsUnavailable,
    btrfs_subvolume,
    btrfs_volume,
    build_home,
    server_user,
)
from tests.host.conftest import EXIT_MISSING, EXIT_REFUSED, EXIT_USAGE, REPOS, run
from tests.host.test_host_script import refs


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    try:
        with btrfs_volume(tmp_path, size_mb=400) as mount:
            yield mount
    except BtrfsUnavailable as error:
        pytest.skip(str(error))


@pytest.fixture
def home(volume: Path) -> BitbucketHome:
    btrfs_subvolume(volume / "bitbucket-home")
    return build_home(volume, range(1, 4))


def snapshot(home: BitbucketHome, snapshots: Path, *extra: str) -> dict[str, object]:
    return run("fs-snapshot", "--home", home.root, "--snapshots", snapshots, "--name", "prod-1", *extra).summary


def test_the_copy_made_from_the_snapshot_is_the_homes_state_at_the_snapshot(home: BitbucketHome, volume: Path) -> None:
    snapshots = volume / "snapshots"
    checked = snapshot(home, snapshots, "--check-only")
    assert checked["check_only"] is True and not (snapshots / "prod-1").exists()
    before = {repo_id: refs(home.repo(repo_id)) for repo_id in home.repo_ids}

    taken = snapshot(home, snapshots)  # under the lock: milliseconds, whatever the number of files
    assert float(str(taken["seconds"])) < 5 and (snapshots / "prod-1").is_dir()
    assert oct(snapshots.stat().st_mode & 0o777) == "0o700"
    # After the unlock users push again; the copy from the snapshot is the state the snapshot caught.
    home.push_commits(2, "main", 3)
    assert refs(home.repo(2)) != before[2]
    staging = volume.parent / "staging"
    copied = run("rsync-home", "--home", snapshots / "prod-1", "--staging", staging).summary
    assert int(str(copied["files_transferred"])) > 0
    for repo_id, expected in before.items():
        assert refs(staging / REPOS / str(repo_id)) == expected
    # The snapshot is read-only: nothing can change it between the lock and the copy.
    with pytest.raises(OSError):
        (snapshots / "prod-1" / "new-file").write_text("x")

    removed = run("fs-snapshot", "--snapshots", snapshots, "--name", "prod-1", "--remove").summary
    assert removed["removed"] is True and list(snapshots.iterdir()) == []
    again = run("fs-snapshot", "--snapshots", snapshots, "--name", "prod-1", "--remove").summary
    assert again["removed"] is False  # the failure path may run after the archive removed it


def test_what_is_not_a_snapshot_is_refused_and_kept(home: BitbucketHome, volume: Path, tmp_path: Path) -> None:
    snapshots = volume / "snapshots"
    plain = volume / "plain-home"
    plain.mkdir()
    run("fs-snapshot", "--home", plain, "--snapshots", snapshots, "--name", "x").assert_error(
        EXIT_REFUSED, "fs-snapshot"
    )
    run("fs-snapshot", "--home", volume / "gone", "--snapshots", snapshots, "--name", "x").assert_error(
        EXIT_MISSING, "fs-snapshot"
    )
    # Snapshots live on the home's file system; a directory elsewhere is refused with the reason.
    elsewhere = run("fs-snapshot", "--home", home.root, "--snapshots", tmp_path / "other-fs", "--name", "x")
    elsewhere.assert_error(EXIT_REFUSED, "fs-snapshot")
    assert "not on the home's btrfs file system" in elsewhere.stderr
    snapshot(home, snapshots)
    run("fs-snapshot", "--home", home.root, "--snapshots", snapshots, "--name", "prod-1").assert_error(
        EXIT_REFUSED, "fs-snapshot"
    )
    # --remove deletes only a read-only subvolume: not a directory, not a writable subvolume, not the home.
    (snapshots / "someones-dir").mkdir()
    btrfs_subvolume(snapshots / "writable")
    for name in ("someones-dir", "writable"):
        run("fs-snapshot", "--snapshots", snapshots, "--name", name, "--remove").assert_error(
            EXIT_REFUSED, "fs-snapshot"
        )
        assert (snapshots / name).is_dir()
    run("fs-snapshot", "--snapshots", volume, "--name", "bitbucket-home", "--remove").assert_error(
        EXIT_REFUSED, "fs-snapshot"
    )
    assert home.root.is_dir() and len(home.repo_ids) == 3
    for bad in ("../x", ".", "a/b", ""):
        run("fs-snapshot", "--snapshots", snapshots, "--name", bad, "--remove").assert_error(EXIT_USAGE, "fs-snapshot")
    run("fs-snapshot", "--home", home.root, "--snapshots", snapshots, "--name", "y", "--kind", "zfs").assert_error(
        EXIT_USAGE, "fs-snapshot"
    )
    assert os.path.isdir(snapshots / "prod-1")


def test_postgresql_started_on_a_copy_of_the_snapshot_has_the_data_of_that_moment() -> None:
    """postgresql-fslevel for real: a PostgreSQL 15 whose data directory is inside the btrfs home runs and takes writes
    while the snapshot is taken; a second server started on the copy made from the snapshot recovers from its
    write-ahead log and has exactly the rows committed before the snapshot."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 not found in {PG_BIN}")
    base = Path(tempfile.mkdtemp(prefix="bbbackup-fslevel-"))
    base.chmod(0o755)  # the server's own user must reach the data directory
    try:
        with btrfs_volume(base, size_mb=400) as volume:
            prefix = server_user()
            btrfs_subvolume(volume / "bitbucket-home")
            data = volume / "bitbucket-home" / "pgdata"
            data.mkdir(mode=0o700)
            if prefix:
                shutil.chown(data, user=prefix[2])

            def pg(*args: str | Path) -> str:
                done = subprocess.run([*prefix, *map(str, args)], capture_output=True, text=True, timeout=120,
                                      check=False, cwd=base)  # fmt: skip
                assert done.returncode == 0, done.stderr
                return done.stdout.strip()

            def start(directory: Path) -> int:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port: int = s.getsockname()[1]
                options = f"-p {port} -k '' -c listen_addresses=127.0.0.1 -c fsync=on"
                pg(PG_BIN / "pg_ctl", "-D", directory, "-l", directory / "server.log", "-w", "-o", options, "start")
                return port

            def sql(port: int, text: str) -> str:
                return pg(PG_BIN / "psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-U",
                          "postgres", "-d", "postgres", "-c", text)  # fmt: skip

            pg(PG_BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
            port = start(data)
            sql(port, "CREATE TABLE pr (id int PRIMARY KEY, title text); INSERT INTO pr SELECT g, 'before ' || g "
                      "FROM generate_series(1, 5000) g")  # fmt: skip
            home = BitbucketHome(volume / "bitbucket-home", volume / "works")
            snapshots = volume / "snapshots"
            snapshot(home, snapshots)  # under the lock: the server keeps running, as Bitbucket's database would
            sql(port, "INSERT INTO pr SELECT g, 'after ' || g FROM generate_series(5001, 6000) g")
            pg(PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")

            staging = volume / "staging"  # after the unlock: the copy from the snapshot (rsync keeps the owner)
            run("rsync-home", "--home", snapshots / "prod-1", "--staging", staging).ok()
            run("fs-snapshot", "--snapshots", snapshots, "--name", "prod-1", "--remove").ok()
            staging.chmod(
                0o755
            )  # the staging directory is root's own: let the server's user through, as a restore would
            copy = staging / "pgdata"
            assert copy.stat().st_uid == data.stat().st_uid and copy.stat().st_mode & 0o077 == 0
            # The snapshot of a running server holds its lock file: on the restore host its PID means nothing (here it
            # may still name the stopped server's unreaped process); the restore's next steps say to remove it.
            assert (copy / "postmaster.pid").exists()
            (copy / "postmaster.pid").unlink()
            restored = start(copy)
            try:
                assert sql(restored, "SELECT count(*), max(id) FROM pr") == "5000|5000"
                assert sql(restored, "SELECT count(*) FROM pr WHERE title LIKE 'after %'") == "0"
            finally:
                pg(PG_BIN / "pg_ctl", "-D", copy, "-m", "fast", "-w", "stop")
            assert (
                "database system was interrupted" in (copy / "server.log").read_text()
            )  # it recovered, as after a crash
    finally:
        shutil.rmtree(base, ignore_errors=True)
