"""The mysql strategy end to end: mysqldump --single-transaction of a real MariaDB under the lock, driven by the
synthesized state machine through the stack's MysqlDump document and the real host script, archived by the real AWS
CLI into the stack's bucket (moto), restored into a NEW database by the restore state machine, checked by the drill;
and its failure paths."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rehearsal.hostworld import APP_PASSWORD, TABLES, Mysql, mysql_fingerprint
from tests.integration.conftest import World
from tests.integration.test_copy_strategies import archive_of, assert_failed_cleanly, backed_up, download, restore
from tests.integration.test_drill import drill_checks, restore_executions


@pytest.fixture
def mysql_world(world_factory: Callable[..., World], mysql: Mysql) -> Callable[..., World]:
    def make(home: str = "amazon-ebs", **kwargs: Any) -> World:
        return world_factory(home=home, database="mysql", mysql=mysql, **kwargs)

    return make


def databases(db: Mysql) -> set[str]:
    return set(db.root("SHOW DATABASES").split())


def test_mysqldump_under_the_lock_archived_and_restored_into_a_new_database(
    mysql_world: Callable[..., World], mysql: Mysql, tmp_path: Path
) -> None:
    w = mysql_world()
    result = w.r.run_backup(timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    backup_id = str((result.output or {})["backup_id"])
    # The dump ran under the lock, through the stack's own document, and the password never reached a command line.
    (dump,) = [c for c in w.r.host.commands if ".sh mysql-dump " in c.script]
    locked = w.sim.event_names()
    assert locked.index("locked") < locked.index("unlocked") and dump.exit_code == 0, dump.stderr
    assert all(APP_PASSWORD not in c.script for c in w.r.host.commands)
    assert APP_PASSWORD not in w.all_text(result)

    # The archive in the catalog holds the dump and the database's character set.
    entry = archive_of(result, "database")
    with tarfile.open(download(w.r, entry, tmp_path / "db.tar.gz"), "r:gz") as tar:
        names = tar.getnames()
        charset = tar.extractfile("db/charset")
        assert charset is not None and charset.read() == b"utf8mb4 utf8mb4_bin\n"
    assert {"manifest.json", "db/dump.sql"} <= set(names)
    assert {s["part"] for s in w.r.snapshots(backup_id)} == {"home", "database"}

    dbname = f"bb_restored_{os.getpid()}"
    restored = restore(w, backup_id, {"database": {"dbname": dbname}})
    assert restored.status == "SUCCEEDED", restored.cause
    assert restored.output is not None and restored.output["database"]["dbname"] == dbname
    assert mysql_fingerprint(mysql, dbname) == mysql_fingerprint(mysql, "bitbucket")
    assert sorted(mysql_fingerprint(mysql, dbname)) == sorted(TABLES)
    marker = mysql.sql("SELECT marker FROM bitbucket_backup_restore", dbname=dbname)
    assert marker == f"bitbucket-backup restore {restored.execution_arn}"
    notice = next(n for n in w.r.notifications() if "restore" in (n["subject"] or ""))
    assert f"MySQL database {dbname} on 127.0.0.1:{mysql.port}" in str(notice["message"])
    assert "drop the table bitbucket_backup_restore" in str(notice["message"])
    mysql.root(f"DROP DATABASE {dbname}")


def test_a_wrong_password_fails_the_locked_dump_cleanly(mysql_world: Callable[..., World]) -> None:
    w = mysql_world()
    wrong = "Wrong-passw0rd-for-mysql"
    secret = w.r.instance_config["database"]["password_secret"]
    w.r.client("secretsmanager").put_secret_value(
        SecretId=secret, SecretString=json.dumps({"username": "bitbucket", "password": wrong})
    )
    result = w.r.run_backup(timeout=300)
    message = assert_failed_cleanly(w, result, "copy", "mysqldump", "exit 8", "authentication failed")
    assert wrong not in w.all_text(result) and wrong not in message


def test_a_restore_never_drops_a_database_it_did_not_create(mysql_world: Callable[..., World], mysql: Mysql) -> None:
    """Someone creates the target between the restore's check and its load: the load refuses it, and the failure
    path's drop refuses it too (it lacks this restore's marker), so it is kept; one notification says so."""
    w = mysql_world()
    backup_id = backed_up(w)
    dbname = f"bb_raced_{os.getpid()}"
    itself = restore(w, backup_id, {"database": {"dbname": "bitbucket"}})
    assert itself.status == "FAILED" and "the backed-up database itself" in str(itself.cause)
    mysql.root(f"CREATE DATABASE {dbname}_taken")
    taken = restore(w, backup_id, {"database": {"dbname": f"{dbname}_taken"}})
    assert taken.status == "FAILED" and "already exists" in str(taken.cause)
    assert "Failed: validate" in taken.states_entered()
    mysql.root(f"DROP DATABASE {dbname}_taken")

    def someone_creates_it(instance_id: str, script: str) -> None:
        if ".sh download " in script:
            mysql.root(f"CREATE DATABASE {dbname}; CREATE TABLE {dbname}.theirs (id int)")

    w.r.host.before_run.append(someone_creates_it)
    before = len(w.r.notifications())
    result = restore(w, backup_id, {"database": {"dbname": dbname}})
    assert result.status == "FAILED"
    failures = [n for n in w.r.notifications()[before:] if "restore FAILED" in (n["subject"] or "")]
    assert len(failures) == 1 and "already exists" in str(failures[0]["message"]), failures
    assert f"refusing to drop {dbname}: it was not created by this restore" in str(failures[0]["message"])
    assert dbname in databases(mysql)
    assert mysql.sql("SHOW TABLES", dbname=dbname, user="root", password="Ma-root-pw") == "theirs"
    mysql.root(f"DROP DATABASE {dbname}")


def test_a_drill_restores_the_mysql_dump_checks_its_tables_and_drops_it(
    world_factory: Callable[..., World], mysql: Mysql
) -> None:
    w = world_factory(home="none", database="mysql", mysql=mysql, drill=True)
    backup_id = backed_up(w)
    result = w.r.run_drill()
    assert result.status == "SUCCEEDED", result.cause
    assert result.output is not None and result.output["verified"] is True
    (restored,) = restore_executions(w.r)
    assert json.loads(restored["input"])["target"]["database"]["dbname"].startswith("drill_demo_")
    (check,) = drill_checks(w.r)
    assert check.exit_code == 0, check.stderr
    assert "(--engine 'mysql')" in check.script
    summary = json.loads(check.stdout.strip().splitlines()[-1])
    assert summary["database"]["tables_found"] == ["project", "repository", "sta_normal_user"]
    assert summary["database"]["tables_total"] == len(TABLES)
    assert not [d for d in databases(mysql) if d.startswith("drill_")]  # torn down
    assert result.output["backup_id"] == backup_id
