"""The host-copy strategies end to end: rsync home and pg_dump database driven by the synthesized state machine,
SSM Run Command executed by the local host running the real host script against real git repositories and a real
PostgreSQL 15, the archives uploaded by the real AWS CLI to the stack's bucket (moto, over HTTP on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from functions.models.steps import FAILED_PREFIX
from functions.strategies import BACKUP_ID_TAG, COMPLETE, PART_TAG, STATUS_TAG
from rehearsal.hostworld import (
    APP_PASSWORD,
    EXCLUDED,
    REPOS,
    TABLES,
    Postgres,
    git,
    table_fingerprint,
)
from rehearsal.runtime import Rehearsal, RunResult
from tests.integration.conftest import World

SCRIPT = Path(__file__).resolve().parents[2] / "functions" / "host" / "bitbucket-backup-host.sh"


@pytest.fixture
def copy_world(world_factory: Callable[..., World], postgres: Postgres, tmp_path: Path) -> Callable[..., World]:
    def make(home: str = "rsync", database: str = "postgresql", **kwargs: Any) -> World:
        # The tests restore archives into their tmp_path: a restore root of the instance (restore.allowed_roots).
        kwargs.setdefault("instance_overrides", {"restore": {"allowed_roots": [str(tmp_path)]}})
        return world_factory(home=home, database=database, postgres=postgres, **kwargs)

    return make


def rsync_passes(r: Rehearsal) -> list[str]:
    """The rsync-home commands the home host ran, in order."""
    return [c.script for c in r.host.commands if ".sh rsync-home " in c.script]


def between_passes(r: Rehearsal, change: Callable[[], None]) -> None:
    """Run `change` on the home host just before the second (locked) rsync pass, as users' pushes would land."""
    seen: list[str] = []

    def hook(instance_id: str, script: str) -> None:
        if ".sh rsync-home " in script:
            seen.append(script)
            if len(seen) == 2:
                change()

    r.host.before_run.append(hook)


def download(r: Rehearsal, entry: dict[str, Any], to: Path) -> Path:
    body = r.client("s3").get_object(Bucket=entry["bucket"], Key=entry["key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == entry["sha256"] and len(body) == int(entry["size"])
    to.write_bytes(body)
    return to


def host_script(*args: str | Path) -> dict[str, Any]:
    proc = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    summary: dict[str, Any] = json.loads(proc.stdout)
    return summary


def refs(repo: Path) -> str:
    return git("for-each-ref", "--format=%(objectname) %(refname)", cwd=repo)


def archive_of(result: RunResult, part: str) -> dict[str, Any]:
    assert result.output is not None
    return next(a for a in result.output["archive"] if a["part"] == part)


def assert_failed_cleanly(w: World, result: RunResult, step: str, *needles: str) -> str:
    """Failed at `step`, Bitbucket unlocked, exactly one failure notification naming the cause, and nothing of this
    run marked complete (no archive object of it at all)."""
    assert result.status == "FAILED", result.output
    assert FAILED_PREFIX + step in result.states_entered()
    assert not w.sim.locked
    failures = w.failure_notifications()
    assert len(failures) == 1, w.r.notifications()
    message = str(failures[0]["message"])
    for needle in needles:
        assert needle in message, message
    assert all(a["tags"].get(STATUS_TAG) != COMPLETE for a in w.r.archives())
    assert w.r.run_record() is None or "token" not in json.dumps(w.r.run_record())
    assert APP_PASSWORD not in w.all_text(result)
    return message


def test_rsync_and_pg_dump_move_real_bytes_and_the_archives_restore(
    copy_world: Callable[..., World], postgres: Postgres, tmp_path: Path
) -> None:
    w = copy_world()
    home = w.r.bitbucket_home
    assert home is not None
    changed: dict[str, Any] = {}

    def change() -> None:
        # Between the live pass and the locked pass: a push, a deleted repository, a new one.
        home.push_commits(1, "main", 3)
        home.push_commits(2, "feature/x", 1)
        home.delete_repo(3)
        home.add_repo(9)
        changed["locked_at"] = w.sim.locked

    between_passes(w.r, change)
    result = w.r.run_backup(timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    assert result.output is not None and not w.sim.locked

    # The expensive pass ran live, the second one under the lock (the changes landed just before it).
    passes = rsync_passes(w.r)
    assert len(passes) == 2 and changed["locked_at"] is True
    assert result.output["lock_window_s"] is not None

    # Two archives, each a complete, tagged object in the stack's bucket; the summary names bucket, key, size, sum.
    backup_id = result.output["backup_id"]
    archives = {a["key"]: a for a in w.r.archives()}
    assert len(archives) == 2
    for part in ("home", "database"):
        entry = archive_of(result, part)
        tags = archives[entry["key"]]["tags"]
        assert tags[PART_TAG] == part and tags[BACKUP_ID_TAG] == backup_id and tags[STATUS_TAG] == COMPLETE

    # The home archive restores into an empty directory: every repository passes git fsck with the same refs as the
    # source after the changes; the deleted one is gone, the new one there, the excluded paths absent.
    restored = tmp_path / "restored-home"
    host_script("extract", "--archive", download(w.r, archive_of(result, "home"), tmp_path / "home.tar.gz"),
                "--target", restored)  # fmt: skip
    manifest = json.loads((restored / "manifest.json").read_text())
    assert manifest["backup_id"] == backup_id and manifest["instance"] == "demo"
    restored_repos = restored / "home" / REPOS
    assert sorted(int(p.name) for p in restored_repos.iterdir()) == sorted(home.repo_ids) == [1, 2, 4, 9]
    for repo_id in home.repo_ids:
        git("fsck", "--full", "--strict", cwd=restored_repos / str(repo_id))
        assert refs(restored_repos / str(repo_id)) == refs(home.repo(repo_id))
    for rel in EXCLUDED:
        assert not (restored / "home" / rel).exists(), rel

    # The database archive holds a pg_dump directory that pg_restore turns into an identical database.
    db_dir = tmp_path / "restored-db"
    host_script("extract", "--archive", download(w.r, archive_of(result, "database"), tmp_path / "db.tar.gz"),
                "--target", db_dir)  # fmt: skip
    name = f"restored_{os.getpid()}"
    env = {**os.environ, "PGPASSWORD": APP_PASSWORD}
    proc = subprocess.run(
        [str(SCRIPT), "pg-restore", "--dump", str(db_dir / "db"), *postgres.conn_args(), "--dbname", name],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    fingerprint = table_fingerprint(postgres, name)
    assert sorted(fingerprint) == sorted(TABLES) and fingerprint == table_fingerprint(postgres, "bitbucket")
    postgres.superuser(f"DROP DATABASE {name}")

    # The password reached pg_dump only through the host's Secrets Manager call: never in a command or a message.
    assert all(APP_PASSWORD not in c.script for c in w.r.host.commands)
    assert APP_PASSWORD not in w.all_text(result)
    # The dump directory was removed once its archive was in S3; no archive stays in the work directory.
    assert not any((w.r.host.root / "dumps").glob("demo-*"))
    assert not list((w.r.host.root / "archive-work").iterdir())


def test_the_hosts_report_the_long_parts_progress_to_the_stacks_log_group(
    copy_world: Callable[..., World], postgres: Postgres
) -> None:
    """The whole path of a progress report: the stack's group in the functions' environment, the documents'
    parameters, the host script's reporter and the AWS CLI, into the stream `demo/<backup id>/<part>` that
    `bitbucket-backup backup --wait` reads (bitbucket_backup_cli/host_progress.py). pg_dump waits for a table lock
    held for 8 s, so that its phase outlasts the reporter's first interval however busy the machine."""
    from bitbucket_backup_cli.host_progress import parse
    from tests.host.test_host_script import table_locked

    w = copy_world()
    w.r.host.env["BITBUCKET_BACKUP_PROGRESS_SECONDS"] = "0.2"
    held: list[threading.Thread] = []

    def hold_a_table(instance_id: str, script: str) -> None:
        if ".sh pg-dump " in script and not held:
            locked = threading.Event()

            def hold() -> None:
                with table_locked(postgres, "repository"):
                    locked.set()
                    time.sleep(8)  # two AWS CLI starts (the stream, the first report) on a busy machine

            held.append(threading.Thread(target=hold, daemon=True))
            held[0].start()
            assert locked.wait(30)

    w.r.host.before_run.append(hold_a_table)
    result = w.r.run_backup(timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    assert result.output is not None and held
    logs = w.r.client("logs")
    (group,) = [
        g["logGroupName"] for g in logs.describe_log_groups()["logGroups"] if "-HostProgress" in g["logGroupName"]
    ]
    stream = f"demo/{result.output['backup_id']}/database"
    deadline = time.monotonic() + 30
    while True:  # the 100 % line is put in the background once the dump is written
        events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
        reports = [parse(stream, e["message"], e["timestamp"], "demo") for e in events]
        dumped = [r for r in reports if r is not None and r.phase == "pg_dump"]
        if any(r.percent == 100 for r in dumped) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert None not in reports, [e["message"] for e in events]
    assert dumped and dumped[-1].percent == 100 and dumped[-1].done == dumped[-1].total
    during = dumped[:-1]
    assert during and all(r.percent is None and r.total is None for r in during), "no report while pg_dump ran"
    assert all(r.done <= dumped[-1].done for r in during)


@pytest.mark.parametrize(("home", "database"), [("rsync", "amazon-rds"), ("amazon-ebs", "postgresql")])
def test_mixed_strategies(copy_world: Callable[..., World], home: str, database: str) -> None:
    w = copy_world(home=home, database=database)
    result = w.r.run_backup(timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    assert result.output is not None
    kinds = {a["part"]: a["kind"] for a in result.output["artifacts"]}
    archived = "home" if home == "rsync" else "database"
    snapshot = "database" if archived == "home" else "home"
    assert kinds[archived] == "s3-archive" and kinds[snapshot] in ("ebs-snapshot", "rds-snapshot")
    assert [a["part"] for a in result.output["archive"]] == [archived]
    assert [a["tags"][PART_TAG] for a in w.r.archives()] == [archived]


def test_keep_backups_prunes_old_archives_with_every_version(copy_world: Callable[..., World]) -> None:
    w = copy_world(instance_overrides={"keep_backups": 1})
    first = w.r.run_backup(timeout=300)
    assert first.status == "SUCCEEDED", first.cause
    time.sleep(1.1)  # backup ids have a one-second resolution
    second = w.r.run_backup(timeout=300)
    assert second.status == "SUCCEEDED", second.cause
    assert first.output is not None and second.output is not None
    assert {a["tags"][BACKUP_ID_TAG] for a in w.r.archives()} == {second.output["backup_id"]}
    pruned = " ".join(map(str, second.output["pruned"]))
    assert first.output["backup_id"] in pruned
    bucket = archive_of(second, "home")["bucket"]
    versions = w.r.client("s3").list_object_versions(Bucket=bucket, Prefix=f"demo/{first.output['backup_id']}/")
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")


def test_rsync_source_missing_under_the_lock(copy_world: Callable[..., World]) -> None:
    w = copy_world()
    home = w.r.bitbucket_home
    assert home is not None
    between_passes(w.r, lambda: home.root.rename(home.root.with_name("moved-away")))
    result = w.r.run_backup(timeout=300)
    message = assert_failed_cleanly(w, result, "copy", "home", "not found")
    assert "locked" in " ".join(w.sim.event_names())
    assert "exit 3" in message


def test_pg_dump_with_a_wrong_password(copy_world: Callable[..., World]) -> None:
    w = copy_world()
    wrong = "Wrong-passw0rd-for-test"
    secret = w.r.instance_config["database"]["password_secret"]
    w.r.client("secretsmanager").put_secret_value(
        SecretId=secret, SecretString=json.dumps({"username": "bitbucket", "password": wrong})
    )
    result = w.r.run_backup(timeout=300)
    message = assert_failed_cleanly(w, result, "copy", "pg_dump", "exit 8")
    assert wrong not in w.all_text(result) and wrong not in message


def test_ssm_command_timed_out(copy_world: Callable[..., World]) -> None:
    w = copy_world()
    w.r.host.faults[w.r.resources["database_host"]] = "TimedOut"
    result = w.r.run_backup(timeout=300)
    assert_failed_cleanly(w, result, "prepare", "TimedOut")


def test_ssm_command_timed_out_under_the_lock(copy_world: Callable[..., World]) -> None:
    w = copy_world()
    db_host = w.r.resources["database_host"]

    def time_out_the_dump(instance_id: str, script: str) -> None:
        if ".sh pg-dump " in script:
            w.r.host.faults[db_host] = "TimedOut"

    w.r.host.before_run.append(time_out_the_dump)
    result = w.r.run_backup(timeout=300)
    message = assert_failed_cleanly(w, result, "copy", "pg_dump", "TimedOut")
    assert "locked" in w.sim.event_names() and "unlocked" in w.sim.event_names()
    assert "copy database" in message


def test_archive_disk_full_after_the_unlock(copy_world: Callable[..., World], tiny_fs: Path) -> None:
    w = copy_world(instance_overrides={"archive": {"work_path": str(tiny_fs)}})
    result = w.r.run_backup(timeout=300)
    message = assert_failed_cleanly(w, result, "archive", "no space left")
    assert "exit 4" in message
    assert not w.r.archives()
    # Nothing half-written keeps a name in the work directory; the stopped upload's archive (killed, as the agent
    # cancels, its trap never ran) is the only file left, and the next run's archive step removes it.
    left = [f.name for f in tiny_fs.iterdir()]
    assert all(not name.startswith(".") and name.endswith(".tar.gz") for name in left), left
    result = w.r.run_backup(timeout=300)
    assert result.status == "FAILED"
    assert not set(left) & {f.name for f in tiny_fs.iterdir()}, "the earlier run's archive was not removed"


def test_the_failure_path_stops_the_runs_host_commands_before_it_removes_what_they_write(
    copy_world: Callable[..., World], tiny_fs: Path
) -> None:
    """The database's archive fails while the home's still runs (here: never ends, as a slow upload): the failure
    path cancels the run's own still-running command and waits for its end before removing the run's archives, so
    that nothing of the run lands in the bucket after the cleanup. Commands of other runs are never touched."""
    w = copy_world(instance_overrides={"archive": {"work_path": str(tiny_fs)}})
    home_host, ssm = w.r.resources["home_host"], w.r.client("ssm")
    check = next(
        d["Name"] for d in ssm.list_documents()["DocumentIdentifiers"] if d["Name"].endswith("CheckTargetDirectory")
    )
    foreign: list[str] = []

    def hang_the_home_archive(instance_id: str, script: str) -> None:
        if instance_id == home_host and "ArchiveUpload" in script and not foreign:
            w.r.host.faults[home_host] = "InProgress"
            # Another run's command on the same host, running too: not this run's to cancel.
            sent = ssm.send_command(
                InstanceIds=[home_host],
                DocumentName=check,
                Parameters={"path": [str(tiny_fs / "elsewhere")]},
                Comment="bitbucket-diy-backup demo-20200101-000000: another run",
            )
            foreign.append(sent["Command"]["CommandId"])

    w.r.host.before_run.append(hang_the_home_archive)
    result = w.r.run_backup(timeout=300)
    w.r.host.faults.pop(home_host, None)
    message = assert_failed_cleanly(w, result, "archive", "no space left")
    assert f"cancelled archive home on {home_host}" in message, message
    invocations = [
        ssm.get_command_invocation(CommandId=c["CommandId"], InstanceId=home_host)
        for c in ssm.list_commands(InstanceId=home_host)["Commands"]
    ]
    assert [i["Status"] for i in invocations if "archive home" in i["Comment"]] == ["Cancelled"]
    assert ssm.get_command_invocation(CommandId=foreign[0], InstanceId=home_host)["Status"] == "InProgress"
    assert not w.r.archives()


# ------------------------------------------------------------------------------------------------ restore


def restore(w: World, backup_id: str, target: dict[str, Any], **extra: Any) -> RunResult:
    return w.r.run_restore({"instance": "demo", "backup_id": backup_id, "target": target, **extra}, timeout=300)


def backed_up(w: World) -> str:
    result = w.r.run_backup(timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    assert result.output is not None
    return str(result.output["backup_id"])


def test_restore_extracts_the_home_and_pg_restores_into_new_targets(
    copy_world: Callable[..., World], postgres: Postgres, tmp_path: Path
) -> None:
    w = copy_world()
    home = w.r.bitbucket_home
    assert home is not None
    backup_id = backed_up(w)
    target_dir = tmp_path / "restored"
    owner = pwd.getpwuid(os.getuid()).pw_name
    dbname = f"restored_{os.getpid()}"
    result = restore(w, backup_id, {"home": {"path": str(target_dir), "owner": owner}, "database": {"dbname": dbname}})
    assert result.status == "SUCCEEDED", result.cause
    assert result.output is not None
    assert result.output["home"]["path"] == str(target_dir) and result.output["home"]["files"] > 0
    assert result.output["database"]["dbname"] == dbname

    # The home: every repository passes git fsck with the source's refs; excluded paths are absent; owned by owner.
    repos = target_dir / "home" / REPOS
    assert sorted(int(p.name) for p in repos.iterdir()) == sorted(home.repo_ids)
    for repo_id in home.repo_ids:
        git("fsck", "--full", "--strict", cwd=repos / str(repo_id))
        assert refs(repos / str(repo_id)) == refs(home.repo(repo_id))
    for rel in EXCLUDED:
        assert not (target_dir / "home" / rel).exists(), rel
    assert {p.stat().st_uid for p in target_dir.rglob("*")} == {os.getuid()}

    # The database: identical tables, marked as this restore's (what the cleanup would check before dropping it).
    assert table_fingerprint(postgres, dbname) == table_fingerprint(postgres, "bitbucket")
    marker = postgres.superuser(
        f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{dbname}'"
    )
    assert marker == f"bitbucket-backup restore {result.execution_arn}"
    postgres.superuser(f"DROP DATABASE {dbname}")

    notice = next(n for n in w.r.notifications() if "restore" in (n["subject"] or ""))
    assert "succeeded" in notice["subject"] and str(target_dir) in str(notice["message"])
    assert dbname in str(notice["message"])
    assert APP_PASSWORD not in w.all_text(result)


def test_restore_refuses_a_non_empty_directory_and_an_existing_database(
    copy_world: Callable[..., World], tmp_path: Path
) -> None:
    w = copy_world()
    backup_id = backed_up(w)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep-me.txt").write_text("somebody's data\n")
    cases = [
        ({"home": {"path": str(busy)}}, "not an empty directory"),
        ({"database": {"dbname": "new_db", "port": 1}}, "cannot check the target database"),
        ({"database": {"dbname": "postgres"}}, "already exists"),
        ({"home": {"path": str(tmp_path / "new"), "availability_zone": "eu-west-1a"}}, "does not apply"),
        ({"database": {"instance_id": "bitbucket-new"}}, "does not apply"),
    ]
    for target, needle in cases:
        result = restore(w, backup_id, target)
        assert result.status == "FAILED", target
        assert "Failed: validate" in result.states_entered()
        assert needle in str(result.cause), result.cause
    assert [p.name for p in busy.iterdir()] == ["keep-me.txt"]
    assert not (tmp_path / "new").exists()


def test_a_corrupt_archive_fails_the_restore_and_cleans_up_what_it_extracted(
    copy_world: Callable[..., World], postgres: Postgres, tmp_path: Path
) -> None:
    w = copy_world()
    backup_id = backed_up(w)
    db_archive = next(a for a in w.r.archives() if a["tags"][PART_TAG] == "database")
    bucket = w.r.archive_bucket
    s3 = w.r.client("s3")
    sha = s3.head_object(Bucket=bucket, Key=db_archive["key"])["Metadata"]["sha256"]

    def corrupt(instance_id: str, script: str) -> None:
        # After validate, before the download: the stored bytes of the backup's version no longer match the SHA-256
        # it was stored with. (A newer version written to the key would not do: the restore downloads the version
        # the backup recorded.)
        if ".sh download " in script and "database" in script:
            from moto.s3.models import s3_backends

            s3.put_object(Bucket=bucket, Key=db_archive["key"], Body=b"a newer version", Metadata={"sha256": sha})
            versions = s3_backends["123456789012"]["aws"].buckets[bucket].keys.getlist(db_archive["key"])
            versions[0].value = b"not the archive"

    w.r.host.before_run.append(corrupt)
    target_dir = tmp_path / "restored"
    dbname = f"corrupt_{os.getpid()}"
    result = restore(w, backup_id, {"home": {"path": str(target_dir)}, "database": {"dbname": dbname}})
    assert result.status == "FAILED"
    failures = [n for n in w.r.notifications() if "restore FAILED" in (n["subject"] or "")]
    assert len(failures) == 1
    message = str(failures[0]["message"])
    # The version's bytes fail the download's checksum (the AWS CLI's, or the manifest's SHA-256).
    assert ("SHA-256" in message or "checksum" in message) and "removed what this restore extracted" in message
    # Whatever the home restore had extracted is gone again; no database was created.
    assert not target_dir.exists() or not list(target_dir.iterdir())
    assert postgres.superuser(f"SELECT count(*) FROM pg_database WHERE datname = '{dbname}'") == "0"


def test_exclude_repos_by_id_and_by_project_and_slug(copy_world: Callable[..., World], tmp_path: Path) -> None:
    w = copy_world(database="none")
    home = {**w.r.instance_config["home"], "exclude_repos": [2, "PRJ/four"]}
    w.r.configure(home=home)

    # A name Bitbucket does not know: refused while live, before anything is locked or copied.
    refused = w.r.run_backup(timeout=300)
    assert refused.status == "FAILED" and "Failed: validate" in refused.states_entered()
    assert "PRJ/four" in str(refused.cause) and "locked" not in w.sim.event_names()
    assert not rsync_passes(w.r)

    w.sim.add_repository("PRJ/four", 4)
    result = w.r.run_backup(timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    restored = tmp_path / "restored"
    host_script("extract", "--archive", download(w.r, archive_of(result, "home"), tmp_path / "home.tar"),
                "--target", restored)  # fmt: skip
    assert sorted(int(p.name) for p in (restored / "home" / REPOS).iterdir()) == [1, 3]
    manifest = json.loads((restored / "manifest.json").read_text())
    assert manifest["bitbucket_version"] == "8.19.1"


def test_command_line_lists_archives_and_restores_them(
    copy_world: Callable[..., World], postgres: Postgres, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bitbucket-backup` over HTTP against this world: `list` shows the archive parts with their sizes and where they
    are, `restore --target-path --target-db-id --wait` extracts and pg_restores them."""
    from bitbucket_backup_cli.base import OK, USAGE
    from bitbucket_backup_cli.main import main
    from rehearsal.fake_account import REGION
    from rehearsal.serve import LocalEndpoint

    w = copy_world()
    backup_id = backed_up(w)
    with LocalEndpoint(w.r) as endpoint:
        base = ["--endpoint-url", endpoint.url, "--region", REGION]
        assert main([*base, "list", "--json"]) == OK
        rows = json.loads(capsys.readouterr().out)["backups"]
        row = next(r for r in rows if r["backup_id"] == backup_id)
        assert row["status"] == "complete" and row["parts"] == ["home", "database"]
        assert all(a["kind"] == "s3-archive" and a["id"].startswith("s3://") for a in row["artifacts"])
        assert 0 < row["size_gb"]["database"] < 1

        # A volume option for an archive is a usage error, before anything starts.
        assert main([*base, "restore", backup_id, "--instance", "demo", "--availability-zone", "eu-west-1a"]) == USAGE
        capsys.readouterr()

        target, dbname = tmp_path / "restored", f"cli_{os.getpid()}"
        argv = [*base, "restore", backup_id, "--instance", "demo", "--target-path", str(target),
                "--target-db-id", dbname, "--owner", pwd.getpwuid(os.getuid()).pw_name, "--wait",
                "--poll-interval", "0.05"]  # fmt: skip
        code = main(argv)
        out = capsys.readouterr().out
        assert code == OK, out
        assert str(target) in out and dbname in out
    assert (target / "manifest.json").is_file()
    assert postgres.superuser(f"SELECT count(*) FROM pg_database WHERE datname = '{dbname}'") == "1"
    postgres.superuser(f"DROP DATABASE {dbname}")


def test_object_locked_archives_are_kept_until_their_retention_ends(copy_world: Callable[..., World]) -> None:
    w = copy_world(
        database="none",
        instance_overrides={"keep_backups": 1},
        project_overrides={"archive_object_lock": {"mode": "GOVERNANCE", "days": 1}},
    )
    first = w.r.run_backup(timeout=300)
    assert first.status == "SUCCEEDED", first.cause
    assert first.output is not None
    entry = archive_of(first, "home")
    head = w.r.client("s3").head_object(Bucket=entry["bucket"], Key=entry["key"])
    assert head["ObjectLockMode"] == "GOVERNANCE"
    time.sleep(1.1)
    second = w.r.run_backup(timeout=300)
    assert second.status == "SUCCEEDED", second.cause
    assert second.output is not None
    # keep_backups=1 would delete the first backup, but its archive is locked for a day: kept, and said so.
    assert second.output["pruned"] == [] and second.output["prune_error"] is None
    assert {a["tags"][BACKUP_ID_TAG] for a in w.r.archives()} == {first.output["backup_id"], second.output["backup_id"]}
    assert any("object-locked (GOVERNANCE)" in line for line in w.r.logs.lines)


def test_a_stopped_restore_is_cleaned_up_by_the_restore_safety_net(
    copy_world: Callable[..., World], postgres: Postgres, tmp_path: Path
) -> None:
    """StopExecution runs no Catch: the restore's safety net (EventBridge → Lambda) reads the stopped execution's plan
    from its history and removes what it had created, as the failure path would have."""
    from tests.integration.conftest import wait_for, waiting_in

    w = copy_world()
    backup_id = backed_up(w)
    w.r.configure(timing={**w.r.instance_config["timing"], "restore_poll_interval_seconds": 5})
    db_host = w.r.resources["database_host"]

    def stall_the_database_restore(instance_id: str, script: str) -> None:
        if ".restore-db." in script:
            w.r.host.faults[db_host] = "InProgress"  # pg_restore "still running" when the operator presses Stop

    w.r.host.before_run.append(stall_the_database_restore)
    target, dbname = tmp_path / "restored", f"stopped_{os.getpid()}"
    execution = w.r.start(
        {
            "instance": "demo",
            "backup_id": backup_id,
            "target": {"home": {"path": str(target)}, "database": {"dbname": dbname}},
        },
        state_machine_arn=w.r.restore_state_machine_arn,
    )
    # The home extracted (in the background, as the agent runs it), the database restore still running.
    wait_for(lambda: waiting_in(w, execution, "Wait for restore") and (target / "manifest.json").is_file())
    w.r.client("stepfunctions").stop_execution(executionArn=execution, cause="operator pressed Stop")
    w.r.host.faults.pop(db_host)
    result = w.r.wait(execution)

    assert result.status == "ABORTED"
    (net,) = [d for d in w.r.delivered if "RestoreSafetyNet" in d["target"]]
    assert net["result"]["action"] == "cleaned", net
    assert not target.exists() or not list(target.iterdir())
    assert postgres.superuser(f"SELECT count(*) FROM pg_database WHERE datname = '{dbname}'") == "0"
    notices = [n for n in w.r.notifications() if "restore ABORTED" in (n["subject"] or "")]
    assert len(notices) == 1 and "cleaned up by the safety net" in notices[0]["subject"]
    assert "removed what this restore extracted" in str(notices[0]["message"])
