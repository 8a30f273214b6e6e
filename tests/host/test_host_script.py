"""The SSM host script, run for real: rsync passes over real git repositories, archive/verify/extract, pg_dump and
pg_restore against a real PostgreSQL, and the failures (missing source, full disk, wrong password, corruption)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.host.conftest import (
    APP_PASSWORD,
    EXCLUDED,
    EXIT_AUTH,
    EXIT_CHECKSUM,
    EXIT_COPY,
    EXIT_MISSING,
    EXIT_NO_SPACE,
    EXIT_REFUSED,
    EXIT_USAGE,
    INCLUDED,
    PG_BIN,
    REPOS,
    SCRIPT,
    TABLES,
    BitbucketHome,
    Postgres,
    build_home,
    git,
    run,
    table_fingerprint,
    wait_for,
)

MARKER = ".bitbucket-backup-staging"


def refs(repo: Path) -> str:
    return git("for-each-ref", "--format=%(refname) %(objectname) %(objecttype)", cwd=repo)


def backup_home(home: BitbucketHome, staging: Path, *extra: str) -> tuple[dict[str, object], dict[str, object]]:
    """Prepare pass while "live", some repository churn, then the locked pass: the issue's sequence."""
    first = run("rsync-home", "--home", home.root, "--staging", staging, *extra).summary
    home.push_commits(1, "feature/x", 3)
    home.push_commits(5, "main", 1)
    home.delete_repo(2)
    home.add_repo(6)
    second = run("rsync-home", "--home", home.root, "--staging", staging, *extra).summary
    return first, second


def archive(staging: Path, out: Path, *extra: str | Path) -> dict[str, object]:
    return run(
        "archive", "--staging", staging, "--out", out, "--backup-id", "prod-20261123-082818", "--instance", "prod",
        "--bitbucket-version", "8.19.1", *extra,
    ).summary  # fmt: skip


# ------------------------------------------------------------------------------------------------ home round trip


def test_rsync_passes_archive_and_extract_restore_every_repository(home: BitbucketHome, tmp_path: Path) -> None:
    staging, out, restored = tmp_path / "staging", tmp_path / "backup.tar.gz", tmp_path / "restored"
    first, second = backup_home(home, staging, "--exclude-repo", "3", "--exclude", "/shared/config/")

    assert first["files_transferred"] > 50 and first["bytes_transferred"] > 400_000
    # The locked pass moves only what changed: a few new objects and refs, the new repository, and deletions.
    assert second["bytes_transferred"] < first["bytes_transferred"] * 0.15, (first, second)
    assert 0 < second["files_transferred"] < first["files_transferred"] / 2
    assert second["files_deleted"] > 0
    assert "/shared/data/repositories/3" in second["excludes"] and "/caches/" in second["excludes"]
    assert (staging / MARKER).is_file()

    summary = archive(staging, out)
    assert out.is_file() and summary["compressor"] == "gzip" and summary["bytes"] == out.stat().st_size
    assert summary["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary leftovers

    extracted = run("extract", "--archive", out, "--target", restored).summary
    assert extracted["backup_id"] == "prod-20261123-082818" and extracted["files"] == summary["files"]
    assert sorted(p.name for p in restored.iterdir()) == ["home", "manifest.json"]
    restored_home = restored / "home"

    # Every repository is intact, with exactly the refs of the source; the deleted one is gone, the new one is there,
    # the excluded one is absent.
    repos = restored_home / REPOS
    assert sorted(home.repo_ids) == [1, 3, 4, 5, 6]
    assert sorted(int(p.name) for p in repos.iterdir()) == [1, 4, 5, 6]
    for repo_id in [1, 4, 5, 6]:
        git("fsck", "--full", "--strict", cwd=repos / str(repo_id))
        assert refs(repos / str(repo_id)) == refs(home.repo(repo_id))
    assert "refs/heads/feature/x" in refs(repos / "1") and "refs/tags/v1.0" in refs(repos / "1")
    assert git("rev-list", "--count", "feature/x", cwd=repos / "1").strip() == "5"

    for rel in EXCLUDED:
        assert not (restored_home / rel).exists(), rel
    assert not (restored_home / "shared/config").exists()  # an extra --exclude
    assert not (restored_home / MARKER).exists()
    for rel in INCLUDED[:2]:
        assert (restored_home / rel).read_bytes() == (home.root / rel).read_bytes()

    manifest = json.loads((restored / "manifest.json").read_text())
    assert manifest["backup_id"] == "prod-20261123-082818" and manifest["instance"] == "prod"
    assert manifest["bitbucket_version"] == "8.19.1" and manifest["compressor"] == "gzip"
    assert manifest["file_count"] == len(manifest["files"]) == summary["files"]
    for entry in manifest["files"]:
        data = (restored / entry["path"]).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_verify_accepts_a_good_archive_and_zstd_round_trips(home: BitbucketHome, tmp_path: Path) -> None:
    if shutil.which("zstd") is None:
        pytest.skip("zstd not installed")
    staging = tmp_path / "staging"
    run("rsync-home", "--home", home.root, "--staging", staging).ok()
    out = tmp_path / "backup.tar.zst"
    assert archive(staging, out)["compressor"] == "zstd"
    assert out.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    verified = run("verify", "--archive", out, "--scratch", tmp_path).summary
    assert verified["ok"] is True and verified["compressor"] == "zstd" and verified["instance"] == "prod"
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_extract_moves_the_manifest_into_the_target_first(good_archive: Path, tmp_path: Path) -> None:
    """A cancelled restore is cleaned up by RemoveRestoredHome, which removes home/ and db/ only beside a manifest of
    the restored backup: a move cut short (the agent kills the command) must not leave them there without it."""
    bin_dir, moves = tmp_path / "bin", tmp_path / "moves.log"
    bin_dir.mkdir()
    wrapper = bin_dir / "mv"
    real = shutil.which("mv")
    wrapper.write_text(f'#!/bin/sh\necho "$2" >> {moves}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    target = tmp_path / "restored"
    run("extract", "--archive", good_archive, "--target", target, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}).ok()
    moved = [Path(line).name for line in moves.read_text().splitlines() if "/.extract." in line]
    assert moved[0] == "manifest.json" and "home" in moved, moved
    assert sorted(p.name for p in target.iterdir()) == ["home", "manifest.json"]


def test_extract_chowns_to_the_owner(home: BitbucketHome, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    staging, out, target = tmp_path / "staging", tmp_path / "b.tar.gz", tmp_path / "t"
    run("rsync-home", "--home", home.root, "--staging", staging).ok()
    archive(staging, out)
    run("extract", "--archive", out, "--target", target, "--owner", "nobody").ok()
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True, check=True).stdout)
    assert {p.stat().st_uid for p in target.rglob("*")} == {nobody}
    assert target.stat().st_uid == nobody


# ------------------------------------------------------------------------------------------------ failures


def test_rsync_with_a_missing_source_fails_clearly(tmp_path: Path) -> None:
    result = run("rsync-home", "--home", tmp_path / "no-such-home", "--staging", tmp_path / "staging")
    result.assert_error(EXIT_MISSING, "rsync-home")
    assert "no-such-home" in result.stderr
    assert not (tmp_path / "staging").exists()


def test_rsync_refuses_a_non_empty_directory_it_did_not_create(home: BitbucketHome, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("do not delete")
    run("rsync-home", "--home", home.root, "--staging", precious).assert_error(EXIT_REFUSED, "rsync-home")
    assert [p.name for p in precious.iterdir()] == ["keep.txt"]
    # staging inside the home would copy itself
    run("rsync-home", "--home", home.root, "--staging", home.root / "x").assert_error(EXIT_USAGE, "rsync-home")


def test_rsync_into_a_full_disk(home: BitbucketHome, tiny_fs: Path) -> None:
    (home.root / "shared/big.bin").write_bytes(os.urandom(2_000_000))
    result = run("rsync-home", "--home", home.root, "--staging", tiny_fs / "staging")
    result.assert_error(EXIT_NO_SPACE, "rsync-home")
    assert "No space left" in result.stderr


def test_archive_into_a_full_disk_leaves_nothing_behind(home: BitbucketHome, tmp_path: Path, tiny_fs: Path) -> None:
    (home.root / "shared/big.bin").write_bytes(os.urandom(2_000_000))
    staging = tmp_path / "staging"
    run("rsync-home", "--home", home.root, "--staging", staging).ok()
    out = tiny_fs / "backup.tar.gz"
    result = run(
        "archive", "--staging", staging, "--out", out, "--backup-id", "b", "--instance", "prod",
    )  # fmt: skip
    result.assert_error(EXIT_NO_SPACE, "archive")
    assert not out.exists()
    assert list(tiny_fs.iterdir()) == []  # neither the final name nor a hidden partial file


def test_extract_into_a_full_disk_leaves_the_target_empty(home: BitbucketHome, tmp_path: Path, tiny_fs: Path) -> None:
    (home.root / "shared/big.bin").write_bytes(os.urandom(2_000_000))
    staging, out = tmp_path / "staging", tmp_path / "b.tar.gz"
    run("rsync-home", "--home", home.root, "--staging", staging).ok()
    archive(staging, out)
    run("extract", "--archive", out, "--target", tiny_fs).assert_error(EXIT_NO_SPACE, "extract")
    assert list(tiny_fs.iterdir()) == []


@pytest.fixture
def good_archive(tmp_path: Path) -> Path:
    home = build_home(tmp_path, range(1, 3))
    staging, out = tmp_path / "staging", tmp_path / "good.tar.gz"
    run("rsync-home", "--home", home.root, "--staging", staging).ok()
    archive(staging, out)
    return out


def rewrite_archive(src: Path, dst: Path, change: dict[str, bytes]) -> None:
    """Copy a .tar.gz member by member, replacing the content of the members named in `change`."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for member in tin.getmembers():
            if member.name in change:
                data = change[member.name]
                member.size = len(data)
                tout.addfile(member, io.BytesIO(data))
            else:
                tout.addfile(member, tin.extractfile(member) if member.isfile() else None)


def test_extract_refuses_a_non_empty_target(good_archive: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "existing").write_text("x")
    run("extract", "--archive", good_archive, "--target", target).assert_error(EXIT_REFUSED, "extract")
    assert [p.name for p in target.iterdir()] == ["existing"]


def test_verify_detects_a_flipped_byte_in_a_file(good_archive: Path, tmp_path: Path) -> None:
    with tarfile.open(good_archive, "r:gz") as tar:
        victim = next(m for m in tar.getmembers() if m.isfile() and "/objects/pack/" in m.name)
        data = bytearray(tar.extractfile(victim).read())  # type: ignore[union-attr]
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "bad.tar.gz"
    rewrite_archive(good_archive, bad, {victim.name: bytes(data)})
    result = run("verify", "--archive", bad)
    result.assert_error(EXIT_CHECKSUM, "verify")
    assert victim.name in result.stderr and "1 changed" in result.stderr
    # extract checks too, and leaves the (new) target empty
    target = tmp_path / "target"
    run("extract", "--archive", bad, "--target", target).assert_error(EXIT_CHECKSUM, "extract")
    assert list(target.iterdir()) == []


def test_verify_detects_an_edited_manifest(good_archive: Path, tmp_path: Path) -> None:
    with tarfile.open(good_archive, "r:gz") as tar:
        manifest = tar.extractfile("manifest.json").read().decode()  # type: ignore[union-attr]
    entries = json.loads(manifest)["files"]
    # Drop one entry (the file becomes "not in the manifest"), keeping the declared count consistent.
    dropped = json.dumps(entries[0]).replace('{"sha256"', '    {"sha256"') + ",\n"
    edited = manifest.replace(dropped, "").replace(
        f'"file_count": {len(entries)},', f'"file_count": {len(entries) - 1},'
    )
    assert edited != manifest
    bad = tmp_path / "edited.tar.gz"
    rewrite_archive(good_archive, bad, {"manifest.json": edited.encode()})
    result = run("verify", "--archive", bad)
    result.assert_error(EXIT_CHECKSUM, "verify")
    assert "1 not in the manifest" in result.stderr


def test_verify_detects_a_corrupt_compressed_stream(good_archive: Path, tmp_path: Path) -> None:
    data = bytearray(good_archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "corrupt.tar.gz"
    bad.write_bytes(bytes(data))
    run("verify", "--archive", bad).assert_error(EXIT_CHECKSUM, "verify")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good_archive.read_bytes()[: len(data) // 2])
    run("verify", "--archive", truncated).assert_error(EXIT_CHECKSUM, "verify")
    run("verify", "--archive", tmp_path / "missing.tar.gz").assert_error(EXIT_MISSING, "verify")


def test_archive_refuses_to_overwrite(good_archive: Path, tmp_path: Path) -> None:
    before = good_archive.read_bytes()
    result = run(
        "archive", "--staging", tmp_path / "staging", "--out", good_archive, "--backup-id", "b", "--instance", "p",
    )  # fmt: skip
    result.assert_error(EXIT_REFUSED, "archive")
    assert good_archive.read_bytes() == before


def test_usage_errors_never_echo_values(tmp_path: Path) -> None:
    run().assert_error(EXIT_USAGE, "bitbucket-backup-host")
    run("frobnicate").assert_error(EXIT_USAGE, "bitbucket-backup-host")
    run("rsync-home", "--home", tmp_path).assert_error(EXIT_USAGE, "rsync-home")  # --staging missing
    run("rsync-home", "--home", tmp_path, "--staging", tmp_path / "s", "--exclude-repo", "abc").assert_error(
        EXIT_USAGE, "rsync-home"
    )
    result = run("pg-dump", "--bogus=hunter2")
    result.assert_error(EXIT_USAGE, "pg-dump")
    assert "hunter2" not in result.stderr
    result = run("pg-dump", "--password", "hunter2", "--host", "h")
    result.assert_error(EXIT_USAGE, "pg-dump")
    assert "hunter2" not in result.stderr and "PGPASSWORD" in result.stderr
    result = run(
        "pg-dump", "--host", "h", "--user", "u", "--dbname", "host=h password=hunter2", "--out", tmp_path / "d"
    )
    result.assert_error(EXIT_USAGE, "pg-dump")
    assert "hunter2" not in result.stderr
    assert "rsync-home" in run("--help").stdout
    version = run("version").summary
    assert version["version"] and version["tools"]["bash"] is True


# ------------------------------------------------------------------------------------------------ PostgreSQL


def pg_env(password: str = APP_PASSWORD) -> dict[str, str]:
    return {"PGPASSWORD": password}


def dump(pg: Postgres, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SCRIPT), "pg-dump", *pg.conn_args(), "--dbname", "bitbucket", "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env if env is not None else pg_env())},
    )


def test_pg_dump_and_restore_round_trip(postgres: Postgres, tmp_path: Path) -> None:
    out = tmp_path / "db"
    summary = run(
        "pg-dump", *postgres.conn_args(), "--dbname", "bitbucket", "--out", out, "--jobs", "2", env=pg_env()
    ).summary
    assert summary["jobs"] == 2 and summary["bytes"] > 10_000 and (out / "toc.dat").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["db"]  # renamed into place, no partial directory left

    restored = run(
        "pg-restore", "--dump", out, *postgres.conn_args(), "--dbname", "restored_rt", "--jobs", "2", env=pg_env()
    ).summary
    assert restored["database"] == "restored_rt" and restored["encoding"] == "UTF8"

    source, copy = table_fingerprint(postgres, "bitbucket"), table_fingerprint(postgres, "restored_rt")
    assert sorted(source) == sorted(TABLES)
    assert source == copy
    assert source["sta_pull_request"][0] == 6000 and source["repository"][0] == 2500
    # indexes, constraints, views and sequences came along
    assert postgres.psql("SELECT count(*) FROM sta_open_pull_requests", dbname="restored_rt") == "2000"
    assert postgres.psql("SELECT nextval('project_id_seq')", dbname="restored_rt") == "61"
    assert postgres.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_pr_repo'", dbname="restored_rt") == "1"


def test_pg_restore_refuses_an_existing_database(postgres: Postgres, tmp_path: Path) -> None:
    out = tmp_path / "db"
    run("pg-dump", *postgres.conn_args(), "--dbname", "bitbucket", "--out", out, env=pg_env()).ok()
    before = table_fingerprint(postgres, "bitbucket")
    result = run("pg-restore", "--dump", out, *postgres.conn_args(), "--dbname", "bitbucket", env=pg_env())
    result.assert_error(EXIT_REFUSED, "pg-restore")
    assert "already exists" in result.stderr
    assert table_fingerprint(postgres, "bitbucket") == before
    # and a dump directory that already exists is refused too
    again = run("pg-dump", *postgres.conn_args(), "--dbname", "bitbucket", "--out", out, env=pg_env())
    again.assert_error(EXIT_REFUSED, "pg-dump")


def test_pg_restore_check_only_and_pg_drop_touch_only_a_marked_database(postgres: Postgres, tmp_path: Path) -> None:
    """What the restore state machine does: check the target before anything exists, restore with a marker comment,
    and on a later failure drop only the database carrying that exact marker."""
    conn = postgres.conn_args()
    check = run("pg-restore", "--check-only", *conn, "--dbname", "marked_db", env=pg_env()).summary
    assert check["check_only"] is True and check["exists"] is False
    run("pg-restore", "--check-only", *conn, "--dbname", "bitbucket", env=pg_env()).assert_error(
        EXIT_REFUSED, "pg-restore"
    )
    out = tmp_path / "db"
    run("pg-dump", *conn, "--dbname", "bitbucket", "--out", out, env=pg_env()).ok()
    marker = "bitbucket-backup restore arn:aws:states:eu-west-1:123456789012:execution:r:1"
    run("pg-restore", "--dump", out, *conn, "--dbname", "marked_db", "--comment", marker, env=pg_env()).ok()

    # The source database has no marker: refused, untouched. A wrong marker: refused.
    run("pg-drop", *conn, "--dbname", "bitbucket", "--comment", marker, env=pg_env()).assert_error(
        EXIT_REFUSED, "pg-drop"
    )
    run("pg-drop", *conn, "--dbname", "marked_db", "--comment", marker + "x", env=pg_env()).assert_error(
        EXIT_REFUSED, "pg-drop"
    )
    assert postgres.superuser("SELECT count(*) FROM pg_database WHERE datname IN ('bitbucket', 'marked_db')") == "2"
    assert run("pg-drop", *conn, "--dbname", "marked_db", "--comment", marker, env=pg_env()).summary["dropped"] is True
    assert postgres.superuser("SELECT count(*) FROM pg_database WHERE datname = 'marked_db'") == "0"
    # Again: nothing to drop, not an error.
    assert run("pg-drop", *conn, "--dbname", "marked_db", "--comment", marker, env=pg_env()).summary["dropped"] is False


def test_pg_restore_failure_drops_the_database_it_created(postgres: Postgres, tmp_path: Path) -> None:
    out = tmp_path / "db"
    run("pg-dump", *postgres.conn_args(), "--dbname", "bitbucket", "--out", out, env=pg_env()).ok()
    data_files = sorted(p for p in out.iterdir() if p.name.endswith(".dat.gz"))
    data_files[-1].write_bytes(b"not gzip at all")
    result = run("pg-restore", "--dump", out, *postgres.conn_args(), "--dbname", "half_restored", env=pg_env())
    result.assert_error(9, "pg-restore")
    exists = postgres.superuser("SELECT count(*) FROM pg_database WHERE datname = 'half_restored'")
    assert exists == "0"


def test_pg_dump_with_a_wrong_password(postgres: Postgres, tmp_path: Path) -> None:
    wrong = "Wr0ng-password-xyz"
    result = run("pg-dump", *postgres.conn_args(), "--dbname", "bitbucket", "--out", tmp_path / "db", env=pg_env(wrong))
    result.assert_error(EXIT_AUTH, "pg-dump")
    assert "authentication failed" in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []
    # no password at all: libpq would prompt; the script never waits for a terminal
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    proc = subprocess.run(
        [str(SCRIPT), "pg-dump", *postgres.conn_args(), "--dbname", "bitbucket", "--out", str(tmp_path / "db")],
        capture_output=True,
        text=True,
        env={**env, "PGPASSFILE": os.devnull},
        timeout=30,
        check=False,
    )
    assert proc.returncode == EXIT_AUTH, proc.stderr


def test_pg_dump_of_an_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run(
        "pg-dump", "--host", "127.0.0.1", "--port", str(port), "--user", "u", "--dbname", "d", "--out", tmp_path / "db",
        env=pg_env(),
    )  # fmt: skip
    result.assert_error(EXIT_COPY, "pg-dump")
    assert not (tmp_path / "db").exists()


@contextmanager
def table_locked(pg: Postgres, table: str) -> Iterator[None]:
    """Hold an ACCESS EXCLUSIVE lock on a table, so that a pg_dump blocks (and stays observable) until released."""
    holder = subprocess.Popen(
        [str(PG_BIN / "psql"), "-X", "-q", "-h", pg.host, "-p", str(pg.port), "-U", "bitbucket", "-d", "bitbucket"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **pg_env()},
    )
    assert holder.stdin is not None
    holder.stdin.write(f"BEGIN;\nLOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n")
    holder.stdin.flush()
    wait_for(
        lambda: (
            pg.psql(
                f"SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass AND mode = 'AccessExclusiveLock'"
                " AND granted"
            )
            == "1"
        )
    )
    try:
        yield
    finally:
        holder.stdin.write("COMMIT;\n")
        holder.stdin.close()
        holder.wait(timeout=30)


def command_lines() -> dict[int, list[bytes]]:
    """Every process's argv, as /proc shows it to `ps`."""
    result = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                result[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
    return result


def blocked_pg_dump(out: Path, seen: list[list[bytes]] | None = None) -> int:
    """The pid of the pg_dump that writes into out's partial directory, once it runs; every argv observed on the way
    is appended to `seen`."""

    partial = f"--file={out.parent}/.{out.name}.partial.".encode()  # unique to this test (xdist runs others)

    def find() -> int | None:
        lines = command_lines()
        if seen is not None:
            seen.extend(lines.values())
        for pid, argv in lines.items():
            if argv[0].endswith(b"pg_dump") and any(partial in a for a in argv):
                return pid
        return None

    pid: int = wait_for(find, interval=0.005)
    return pid


def fake_aws(tmp_path: Path, secret: dict[str, str] | None = None) -> Path:
    """A stand-in `aws` CLI (first on PATH): logs its argv as JSON lines and answers the few calls the script makes.
    get-object serves the file named by FAKE_S3_OBJECT with the metadata sha256 in FAKE_S3_SHA256."""
    bindir = tmp_path / "fake-bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "aws-calls.jsonl"
    secret_file = tmp_path / "secret.json"
    secret_file.write_text(json.dumps(secret or {}))
    script = bindir / "aws"
    script.write_text(
        f"""#!{sys.executable}
import json, shutil, sys, os, time
argv = sys.argv[1:]
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(argv) + "\\n")
if "get-secret-value" in argv:
    time.sleep(0.2)
    print(open({str(secret_file)!r}).read())
elif "put-object" in argv or "head-object" in argv:
    print('"0123abcd"\\tver-1')
elif "get-object" in argv:
    if os.environ.get("FAKE_S3_FAIL"):
        print("An error occurred (NoSuchKey) when calling the GetObject operation: nope", file=sys.stderr)
        sys.exit(254)
    shutil.copyfile(os.environ["FAKE_S3_OBJECT"], argv[-1])
    print(f"{{os.path.getsize(argv[-1])}}\\t{{os.environ.get('FAKE_S3_SHA256', 'None')}}")
"""
    )
    script.chmod(0o755)
    return bindir


def test_password_never_appears_on_a_command_line(postgres: Postgres, tmp_path: Path) -> None:
    """With --password-secret the password is fetched by the AWS CLI into a variable and handed to pg_dump only
    through its environment: while the dump runs, no process's argv contains it."""
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bitbucket-db-AbCdEf"
    bindir = fake_aws(tmp_path, {"username": "bitbucket", "password": APP_PASSWORD})
    out = tmp_path / "db"
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    env["PATH"] = f"{bindir}:{env['PATH']}"
    seen_argv: list[list[bytes]] = []
    with table_locked(postgres, "repository"):
        proc = dump(postgres, out, "--password-secret", arn, env=env)
        pid = blocked_pg_dump(out, seen_argv)  # scans /proc while the AWS CLI runs and until pg_dump waits
        for _ in range(5):
            seen_argv += command_lines().values()
        pg_dump_env = Path(f"/proc/{pid}/environ").read_bytes()
        assert proc.poll() is None  # still blocked: everything above was observed during the dump
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["dump"] == str(out)

    secret = APP_PASSWORD.encode()
    assert any(argv[0].endswith(b"pg_dump") for argv in seen_argv)
    assert any(b"get-secret-value" in argv for argv in seen_argv)  # the AWS CLI was seen too (it takes 0.2 s)
    assert not [argv for argv in seen_argv if any(secret in a for a in argv)]
    assert b"PGPASSWORD=" + secret in pg_dump_env.split(b"\0")  # handed over through the environment
    assert APP_PASSWORD not in stdout + stderr
    calls = [json.loads(line) for line in (tmp_path / "aws-calls.jsonl").read_text().splitlines()]
    assert calls == [
        ["secretsmanager", "get-secret-value", "--secret-id", arn, "--query", "SecretString", "--output", "text",
         "--region", "eu-west-1"]
    ]  # fmt: skip


def test_sigterm_stops_the_dump_and_removes_the_partial_directory(postgres: Postgres, tmp_path: Path) -> None:
    out = tmp_path / "db"
    with table_locked(postgres, "sta_pull_request"):
        proc = dump(postgres, out)
        pid = blocked_pg_dump(out)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert stdout == "" and stderr.startswith("pg-dump: interrupted by SIGTERM")
    assert list(tmp_path.iterdir()) == []
    assert not Path(f"/proc/{pid}").exists() or b"pg_dump" not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_home_and_database_archived_together_then_restored(
    postgres: Postgres, home: BitbucketHome, tmp_path: Path
) -> None:
    """The whole host-side flow: prepare pass, locked pass and dump, archive, then a restore from the archive."""
    staging, dump_dir, out = tmp_path / "staging", tmp_path / "dump", tmp_path / "prod-1.tar.gz"
    backup_home(home, staging)
    run("pg-dump", *postgres.conn_args(), "--dbname", "bitbucket", "--out", dump_dir, env=pg_env()).ok()
    summary = archive(staging, out, "--dump", dump_dir)
    with tarfile.open(out, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0] == "manifest.json" and "db/toc.dat" in names and f"home/{REPOS}/6/HEAD" in names
    assert summary["files"] == sum(1 for m in members if m.isfile() and m.name != "manifest.json")

    target = tmp_path / "restore"
    run("extract", "--archive", out, "--target", target).ok()
    run("pg-restore", "--dump", target / "db", *postgres.conn_args(), "--dbname", "restored_full", env=pg_env()).ok()
    assert table_fingerprint(postgres, "restored_full") == table_fingerprint(postgres, "bitbucket")
    for repo_id in home.repo_ids:
        assert refs(target / "home" / REPOS / str(repo_id)) == refs(home.repo(repo_id))


# ------------------------------------------------------------------------------------------------ S3 wrappers


def test_upload_and_download_arguments(tmp_path: Path) -> None:
    bindir = fake_aws(tmp_path)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    archive_file = tmp_path / "a.tar.gz"
    archive_file.write_bytes(gzip.compress(b"payload"))
    digest = hashlib.sha256(archive_file.read_bytes()).hexdigest()
    log = tmp_path / "aws-calls.jsonl"

    tags = "bitbucket-diy-backup=true&instance=prod&backup-id=prod-1&status=in-progress"
    up = run(
        "upload", "--file", archive_file, "--bucket", "bkt", "--key", "prod/prod-1.tar.gz", "--tags", tags,
        "--sha256", digest, "--region", "eu-west-1", env=env,
    ).summary  # fmt: skip
    assert up["method"] == "put-object" and up["etag"] == "0123abcd" and up["version_id"] == "ver-1"
    call = json.loads(log.read_text().splitlines()[-1])
    assert call[:4] == ["--region", "eu-west-1", "s3api", "put-object"]
    assert call[call.index("--tagging") + 1] == tags and call[call.index("--body") + 1] == str(archive_file)
    assert call[call.index("--metadata") + 1] == f"sha256={digest}"

    big = run(
        "upload", "--file", archive_file, "--bucket", "bkt", "--key", "k", "--tags", "a=b%20c&d=e", "--multipart-above",
        "1", env=env,
    ).summary  # fmt: skip
    assert big["method"] == "multipart"
    calls = [json.loads(line) for line in log.read_text().splitlines()[-3:]]
    assert calls[0][:2] == ["s3", "cp"] and calls[0][-1] == "s3://bkt/k"
    tagging = json.loads(calls[1][calls[1].index("--tagging") + 1])
    assert tagging == {"TagSet": [{"Key": "a", "Value": "b c"}, {"Key": "d", "Value": "e"}]}
    assert calls[2][:2] == ["s3api", "head-object"]

    run("upload", "--file", archive_file, "--bucket", "b", "--key", "k", "--tags", "novalue", env=env).assert_error(
        EXIT_USAGE, "upload"
    )
    run("upload", "--file", tmp_path / "nope", "--bucket", "b", "--key", "k", env=env).assert_error(
        EXIT_MISSING, "upload"
    )

    dest = tmp_path / "down" / "a.tar.gz"
    dest.parent.mkdir(mode=0o700)  # a private download directory, as the restore makes
    obj = {"FAKE_S3_OBJECT": str(archive_file), "FAKE_S3_SHA256": digest}
    down = run("download", "--bucket", "bkt", "--key", "k", "--file", dest, env={**env, **obj}).summary
    assert down["sha256_checked"] is True and dest.read_bytes() == archive_file.read_bytes()
    run("download", "--bucket", "bkt", "--key", "k", "--file", dest, env={**env, **obj}).assert_error(
        EXIT_REFUSED, "download"
    )
    other = tmp_path / "down" / "b.tar.gz"
    run(
        "download", "--bucket", "bkt", "--key", "k", "--file", other, env={**env, **obj, "FAKE_S3_SHA256": "0" * 64}
    ).assert_error(EXIT_CHECKSUM, "download")
    result = run("download", "--bucket", "bkt", "--key", "k", "--file", other, env={**env, "FAKE_S3_FAIL": "1"})
    result.assert_error(10, "download")
    assert "NoSuchKey" in result.stderr
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.tar.gz"]  # no partial downloads left


def test_script_is_executable_and_versioned() -> None:
    assert SCRIPT.stat().st_mode & stat.S_IXUSR
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert run("version").summary["version"] in text


# ------------------------------------------------------------------------------------------------ benchmark helper


@pytest.mark.long
def test_bench_rsync_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The rsync benchmark (not a timed test) still runs end to end and writes every field of its report."""
    from rehearsal import bench_rsync

    out = tmp_path / "bench-rsync.json"
    # Small homes: what matters here is that every field is measured, not the figures (make bench-rsync).
    assert bench_rsync.main(["--size-mb", "8", "--rounds", "1", "--out", str(out), "--workdir", str(tmp_path)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {
        "goal_ratio", "goal_parallel_ratio", "churn_mb", "runs", "second_pass_growth_for_double_home", "meets_goal"
    }  # fmt: skip
    small, large = report["runs"]
    assert (small["home_mb"], large["home_mb"]) == (8, 16) and small["churn_mb"] == large["churn_mb"] == 0.08
    for run_ in (small, large):
        assert run_["repositories"] > 1 and run_["churned_repositories"] >= 1
        first, noop, second = run_["first_pass"], run_["noop_pass"], run_["second_pass"]
        assert set(first) == set(noop) == {"wall_s", "rsync_s", "files_transferred", "bytes_transferred"}
        assert noop["files_transferred"] == noop["bytes_transferred"] == 0
        assert run_["second_pass_samples_s"] == [second["wall_s"]]
        assert first["bytes_transferred"] >= run_["home_mb"] * 1024 * 1024 * 0.9
        # the second pass moves the churn (about 0.2 MB of new objects), not the home
        assert second["bytes_transferred"] < first["bytes_transferred"] / 20
        assert run_["ratio"] == pytest.approx(second["wall_s"] / first["wall_s"], abs=1e-3)
        # side by side on the same churned data: the sharded passes (4 rsyncs over the repositories) move the same
        sharded = run_["second_pass_parallel"]
        assert run_["parallel"] == 4 and run_["noop_pass_parallel"]["files_transferred"] == 0
        assert sharded["bytes_transferred"] == second["bytes_transferred"]
        assert run_["ratio_parallel"] == pytest.approx(sharded["wall_s"] / first["wall_s"], abs=1e-3)
        # and the pass that lists only what changed (rsync_pass refuses a scan that fell back to a full one)
        changed = run_["second_pass_changed"]
        assert run_["noop_pass_changed"]["files_transferred"] == 0
        assert changed["bytes_transferred"] == second["bytes_transferred"]
        assert run_["ratio_changed"] == pytest.approx(changed["wall_s"] / first["wall_s"], abs=1e-3)
        # the whole workflow on the same home: live pass, churn, locked pass, archive of the whole home
        workflow = run_["workflow"]
        assert workflow["status"] == "SUCCEEDED" and 0 < workflow["lock_window_s"] < workflow["duration_s"]
        assert workflow["archive_bytes"] > 0
        # with a btrfs snapshot instead of the locked pass (as root, as CI runs), on the same churned home
        if os.geteuid() == 0:
            assert 0 < run_["snapshot_s"] < 5 and run_["snapshot_ratio"] == pytest.approx(
                run_["snapshot_s"] / first["wall_s"], abs=1e-3
            )
    assert "second pass" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["bench-rsync.json"]  # generated homes are removed


# --- drill-check: the restore drill's checks of a restored copy -------------------------------------------------------


def _corrupt_one_object(repo: Path) -> None:
    """Overwrite the middle of one loose object (or the pack): git fsck --full must notice."""
    objects = sorted(p for p in (repo / "objects").rglob("*") if p.is_file() and p.parent.name not in ("info",))
    target = next(p for p in objects if p.suffix in ("", ".pack") and p.stat().st_size > 40)
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = b"\0CORRUPT"
    target.write_bytes(bytes(data))


def test_drill_check_fscks_a_sample_of_repositories(home: BitbucketHome) -> None:
    everything = run("drill-check", "--home", home.root, "--sample", "10").ok()
    assert everything["home"]["repositories"] == 5 and everything["home"]["checked"] == 5
    assert sorted(everything["home"]["fsck_ok"], key=int) == [str(i) for i in sorted(home.repo_ids)]
    assert everything["database"] is None
    two = run("drill-check", "--home", home.root, "--sample", "2").ok()
    assert two["home"]["checked"] == 2 and set(two["home"]["fsck_ok"]) <= {str(i) for i in home.repo_ids}

    _corrupt_one_object(home.repo(3))
    result = run("drill-check", "--home", home.root, "--sample", "10")
    result.assert_error(EXIT_CHECKSUM, "drill-check")
    assert "repository 3" in result.stderr

    empty = home.root.parent / "empty-home"
    empty.mkdir()
    assert run("drill-check", "--home", empty).ok()["home"] == {"repositories": 0, "checked": 0, "fsck_ok": []}
    run("drill-check", "--home", home.root.parent / "missing").assert_error(EXIT_MISSING, "drill-check")
    run("drill-check").assert_error(EXIT_USAGE, "drill-check")


def test_drill_check_fscks_each_mesh_nodes_repositories_wherever_its_layout_puts_them(
    home: BitbucketHome, tmp_path: Path
) -> None:
    """A Mesh node keeps its bare repositories in its own layout (a hierarchy of directories): the drill finds them
    by what they are (HEAD, objects/, refs/), not by where the shared home keeps them."""
    node = tmp_path / "mesh-home"
    for n, repo_id in enumerate(sorted(home.repo_ids)):
        target = node / "repositories" / f"{n:02x}" / f"hierarchy-{repo_id}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(home.repo(repo_id), target, symlinks=True)
    (node / "log").mkdir()
    (node / "log" / "HEAD").write_text("not a repository\n")  # a file named HEAD alone is not a repository
    other = tmp_path / "mesh-home-2"
    other.mkdir()
    found = run("drill-check", "--mesh-homes", f"{node} {other}", "--sample", "10").ok()
    first, second = found["mesh"]
    assert first["home"] == str(node) and first["repositories"] == len(home.repo_ids) == first["checked"]
    assert sorted(first["fsck_ok"]) == sorted(f"hierarchy-{i}" for i in home.repo_ids)
    assert second == {"home": str(other), "repositories": 0, "checked": 0, "fsck_ok": []}
    assert found["home"] is None and found["database"] is None

    _corrupt_one_object(node / "repositories" / "02" / f"hierarchy-{sorted(home.repo_ids)[2]}")
    result = run("drill-check", "--mesh-homes", str(node), "--sample", "10")
    result.assert_error(EXIT_CHECKSUM, "drill-check")
    assert f"Mesh node home {node}: repository hierarchy-{sorted(home.repo_ids)[2]}" in result.stderr
    run("drill-check", "--mesh-homes", str(tmp_path / "missing")).assert_error(EXIT_MISSING, "drill-check")


def test_drill_check_finds_bitbucket_tables_with_the_secret_free_password(postgres: Postgres) -> None:
    conn = postgres.conn_args()
    wanted = ["--tables", "project,repository,sta_normal_user"]
    found = run("drill-check", *conn, "--dbname", "bitbucket", *wanted, env=pg_env()).ok()
    assert found["database"]["dbname"] == "bitbucket"
    assert found["database"]["tables_found"] == ["project", "repository", "sta_normal_user"]
    assert found["database"]["tables_total"] == len(TABLES)
    assert found["home"] is None

    missing = run("drill-check", *conn, "--dbname", "bitbucket", "--tables", "project,sta_no_such", env=pg_env())
    missing.assert_error(EXIT_CHECKSUM, "drill-check")
    assert "sta_no_such" in missing.stderr and "project" not in missing.stderr.split("tables:")[-1]

    wrong = run("drill-check", *conn, "--dbname", "bitbucket", *wanted, env=pg_env("not-the-password"))
    wrong.assert_error(EXIT_AUTH, "drill-check")
    assert "not-the-password" not in wrong.stderr
    run("drill-check", *conn, "--dbname", "bitbucket", "--password", "x").assert_error(EXIT_USAGE, "drill-check")
    run("drill-check", *conn, "--dbname", "bitbucket", env=pg_env()).assert_error(EXIT_USAGE, "drill-check")


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path below root with its mode, size and mtime (what rsync -a keeps)."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if path.name == MARKER:  # written by each run
            continue
        st = path.lstat()
        found[str(path.relative_to(root))] = (st.st_mode, st.st_size if path.is_file() else 0, int(st.st_mtime))
    return found


@pytest.mark.parametrize("parallel", ["2", "3", "8"])
def test_the_parallel_pass_leaves_the_tree_a_single_pass_leaves(
    home: BitbucketHome, tmp_path: Path, parallel: str
) -> None:
    """Sharded over the repositories (and one rsync for the rest), with the changes of a locked pass: new commits,
    a deleted repository, a new one, one excluded since the first pass, an extra exclude inside repositories."""
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    extra = ("--exclude", "/shared/config/", "--exclude", "*.keep")
    (home.repo(4) / "hooks" / "x.keep").write_text("left out anywhere\n")
    for staging, flags in ((single, ()), (sharded, ("--parallel", parallel))):
        run("rsync-home", "--home", home.root, "--staging", staging, *extra, *flags).ok()
    home.push_commits(1, "feature/x", 3)
    home.delete_repo(2)
    home.add_repo(6)
    summaries = {}
    for staging, flags in ((single, ()), (sharded, ("--parallel", parallel))):
        summaries[staging.name] = run(
            "rsync-home", "--home", home.root, "--staging", staging, *extra, "--exclude-repo", "5", *flags
        ).ok()
    assert _tree(sharded) == _tree(single)
    assert not (sharded / REPOS / "2").exists() and not (sharded / REPOS / "5").exists()
    assert (sharded / REPOS / "6").is_dir() and not (sharded / REPOS / "4" / "hooks" / "x.keep").exists()
    one, many = summaries["single"], summaries["sharded"]
    assert many["parallel"] == int(parallel) and one["parallel"] == 1
    for key in ("files", "regular_files", "bytes_total", "files_transferred", "bytes_transferred"):
        assert many[key] == one[key], key
    assert many["files_deleted"] >= one["files_deleted"] > 0


def test_the_changed_scan_leaves_the_tree_a_full_pass_leaves(home: BitbucketHome, tmp_path: Path) -> None:
    """A locked pass that copies only what changed since the live pass began: new commits, a deleted repository and
    a new one, a file rewritten in place, a mode changed, a file replaced by a directory, and writes under excluded
    paths (a directory's and an unanchored pattern's), which must stay out."""
    full, changed = tmp_path / "full", tmp_path / "changed"
    # A directory's exclude that names a file (rsync: a trailing slash matches directories only) leaves it in.
    extra = ("--exclude", "/shared/config/", "--exclude", "*.keep", "--exclude-repo", "5")
    extra += ("--exclude", "/shared/docs/notes.txt/")
    (home.root / "shared" / "config").mkdir(parents=True, exist_ok=True)
    (home.root / "shared" / "docs").mkdir(parents=True, exist_ok=True)
    (home.root / "shared" / "docs" / "notes.txt").write_text("before\n")
    (home.root / "shared" / "swap").write_text("a file first\n")
    # Older than the scan's 2 s margin when the live pass begins, so that what is listed is the changes alone, not
    # the whole home, made just now (a change missed would show).
    time.sleep(2.5)
    for staging in (full, changed):
        assert run("rsync-home", "--home", home.root, "--staging", staging, *extra).ok()["scan"] == "full"
    home.push_commits(1, "feature/x", 3)
    home.delete_repo(2)
    home.add_repo(6)
    (home.root / "shared" / "docs" / "notes.txt").write_text("after, in place\n")
    (home.repo(3) / "config").chmod(0o600)
    (home.root / "shared" / "swap").unlink()
    (home.root / "shared" / "swap").mkdir()
    (home.root / "shared" / "swap" / "inside").write_text("now a directory\n")
    (home.root / "shared" / "config" / "secret.properties").write_text("excluded directory\n")
    (home.repo(4) / "hooks" / "x.keep").write_text("excluded anywhere\n")
    (home.repo(5) / "new-file").write_text("an excluded repository\n")
    one = run("rsync-home", "--home", home.root, "--staging", full, *extra).ok()
    few = run("rsync-home", "--home", home.root, "--staging", changed, *extra, "--scan", "changed").ok()
    assert few["scan"] == "changed" and one["scan"] == "full"
    assert _tree(changed) == _tree(full)
    assert not (changed / REPOS / "2").exists() and (changed / REPOS / "6").is_dir()
    assert (changed / "shared" / "docs" / "notes.txt").read_text() == "after, in place\n"
    assert not (changed / "shared" / "config").exists() and not (changed / REPOS / "5").exists()
    assert not (changed / REPOS / "4" / "hooks" / "x.keep").exists()
    assert few["files_transferred"] == one["files_transferred"] and few["files_deleted"] == one["files_deleted"]


def test_the_changed_scan_scans_every_file_when_it_cannot_trust_the_earlier_pass(
    home: BitbucketHome, tmp_path: Path
) -> None:
    staging = tmp_path / "staging"
    first = run("rsync-home", "--home", home.root, "--staging", staging, "--scan", "changed")
    assert first.ok()["scan"] == "full" and "no complete earlier pass" in first.stderr
    other = run("rsync-home", "--home", home.root, "--staging", staging, "--exclude-repo", "3", "--scan", "changed")
    assert other.ok()["scan"] == "full" and "excludes are not the earlier pass's" in other.stderr
    assert not (staging / REPOS / "3").exists()  # the newly excluded repository is deleted, as a full pass does
    # A pass that did not complete leaves no earlier pass to trust.
    (staging / MARKER).write_text((staging / MARKER).read_text().replace("pass ", "pass x"))
    broken = run("rsync-home", "--home", home.root, "--staging", staging, "--exclude-repo", "3", "--scan", "changed")
    assert broken.ok()["scan"] == "full" and "no complete earlier pass" in broken.stderr
    again = run("rsync-home", "--home", home.root, "--staging", staging, "--exclude-repo", "3", "--scan", "changed")
    assert again.ok()["scan"] == "changed" and again.stderr == ""
    run("rsync-home", "--home", home.root, "--staging", staging, "--scan", "some").assert_error(
        EXIT_USAGE, "rsync-home"
    )


def test_parallel_is_bounded() -> None:
    for bad in ("0", "33", "x"):
        run("rsync-home", "--home", "/nonexistent", "--staging", "/tmp/x", "--parallel", bad).assert_error(
            EXIT_USAGE, "rsync-home"
        )


def test_a_terminated_parallel_pass_stops_every_shard(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for repo in range(40):  # enough small files that the shards run for seconds
        (home / REPOS / str(repo)).mkdir(parents=True)
        for i in range(250):
            (home / REPOS / str(repo) / str(i)).write_bytes(b"x" * 1024)
    staging = tmp_path / "staging"
    proc = subprocess.Popen(
        [str(SCRIPT), "rsync-home", "--home", str(home), "--staging", str(staging), "--parallel", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    marker = str(staging).encode()

    def shards() -> list[int]:
        return [
            p for p, argv in command_lines().items() if argv[0].endswith(b"rsync") and any(marker in a for a in argv)
        ]

    assert len(wait_for(lambda: shards() if len(shards()) >= 4 else None)) >= 4  # the shards and the rest's rsync
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert stdout == "" and stderr.startswith("rsync-home: interrupted by SIGTERM")
    assert wait_for(lambda: not shards(), timeout=10)
