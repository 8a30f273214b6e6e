"""The host script's MySQL / MariaDB subcommands, run for real against a MariaDB server the tests start: mysqldump
--single-transaction, the restore into a NEW marked database, the drop of only a marked one, the drill's check, and
the password that never reaches a command line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rehearsal.hostworld import APP_PASSWORD, Mysql, mysql_fingerprint
from tests.host.conftest import (
    EXIT_AUTH,
    EXIT_CHECKSUM,
    EXIT_COPY,
    EXIT_MISSING,
    EXIT_REFUSED,
    EXIT_USAGE,
    SCRIPT,
    TABLES,
    run,
    wait_for,
)
from tests.host.test_host_script import archive, command_lines, fake_aws

EXIT_RESTORE = 9
MARKER = "bitbucket-backup restore arn:aws:states:eu-west-1:123456789012:execution:r:1"


def my_env(password: str = APP_PASSWORD) -> dict[str, str]:
    return {"MYSQL_PWD": password}


def databases(db: Mysql) -> set[str]:
    return set(db.root("SHOW DATABASES").split())


def dump_to(db: Mysql, out: Path) -> dict[str, object]:
    return run("mysql-dump", *db.conn_args(), "--dbname", "bitbucket", "--out", out, env=my_env()).summary


def test_mysql_dump_archive_and_restore_round_trip(mysql: Mysql, tmp_path: Path) -> None:
    """What a backup and a restore do on the host: dump, archive with an empty home, extract, load into a NEW
    database with the source's character set and collation; every row, the view and the counters come along."""
    out = tmp_path / "dumps" / "db"
    out.parent.mkdir(mode=0o700)
    summary = dump_to(mysql, out)
    assert summary["database"] == "bitbucket" and int(str(summary["bytes"])) > 100_000
    assert sorted(p.name for p in out.iterdir()) == ["charset", "dump.sql"]
    assert (out / "charset").read_text() == "utf8mb4 utf8mb4_bin\n"
    assert [p.name for p in out.parent.iterdir()] == ["db"]  # renamed into place, no partial directory left
    assert oct(out.stat().st_mode & 0o777) == "0o700"

    staging = tmp_path / "empty-home"
    staging.mkdir()
    archive(staging, tmp_path / "a.tar.gz", "--dump", out)
    with tarfile.open(tmp_path / "a.tar.gz", "r:gz") as tar:
        assert "db/dump.sql" in tar.getnames()
    target = tmp_path / "restore"
    run("extract", "--archive", tmp_path / "a.tar.gz", "--target", target).ok()

    restored = run(
        "mysql-restore", "--dump", target / "db", *mysql.conn_args(), "--dbname", "bb_round_trip", "--comment", MARKER,
        env=my_env(),
    ).summary  # fmt: skip
    assert restored["database"] == "bb_round_trip" and restored["collation"] == "utf8mb4_bin"
    source, copy = mysql_fingerprint(mysql, "bitbucket"), mysql_fingerprint(mysql, "bb_round_trip")
    assert sorted(source) == sorted(TABLES)
    assert source == copy
    assert source["sta_pull_request"][0] == 6000 and source["repository"][0] == 2500
    assert mysql.sql("SELECT COUNT(*) FROM sta_open_pull_requests", dbname="bb_round_trip") == "2000"
    collation = "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'bb_round_trip'"
    assert mysql.root(collation) == "utf8mb4_bin"
    counter = "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_NAME = 'project' AND TABLE_SCHEMA = "
    assert int(mysql.root(counter + "'bb_round_trip'")) == int(mysql.root(counter + "'bitbucket'")) > 60
    # The marker names the restore that made it; mysql-drop checks it.
    assert mysql.sql("SELECT marker FROM bitbucket_backup_restore", dbname="bb_round_trip") == MARKER
    drill = run(
        "drill-check", *mysql.conn_args(), "--dbname", "bb_round_trip", "--engine", "mysql",
        "--tables", "project,repository,sta_normal_user", env=my_env(),
    ).ok()  # fmt: skip
    assert drill["database"]["tables_found"] == ["project", "repository", "sta_normal_user"]
    assert drill["database"]["tables_total"] == len(TABLES)  # the marker is not one of Bitbucket's


def test_mysql_restore_and_drop_touch_only_a_new_marked_database(mysql: Mysql, tmp_path: Path) -> None:
    conn = mysql.conn_args()
    check = run("mysql-restore", "--check-only", *conn, "--dbname", "bb_marked", env=my_env()).summary
    assert check["check_only"] is True and check["exists"] is False
    refused = run("mysql-restore", "--check-only", *conn, "--dbname", "bitbucket", env=my_env())
    refused.assert_error(EXIT_REFUSED, "mysql-restore")
    out = tmp_path / "db"
    dump_to(mysql, out)
    before = mysql_fingerprint(mysql, "bitbucket")
    over = run("mysql-restore", "--dump", out, *conn, "--dbname", "bitbucket", "--comment", MARKER, env=my_env())
    over.assert_error(EXIT_REFUSED, "mysql-restore")
    assert "already exists" in over.stderr and mysql_fingerprint(mysql, "bitbucket") == before
    run("mysql-restore", "--dump", out, *conn, "--dbname", "bb_marked", "--comment", MARKER, env=my_env()).ok()

    # The source has no marker, a wrong marker is not this restore's: both refused, both kept.
    run("mysql-drop", *conn, "--dbname", "bitbucket", "--comment", MARKER, env=my_env()).assert_error(
        EXIT_REFUSED, "mysql-drop"
    )
    run("mysql-drop", *conn, "--dbname", "bb_marked", "--comment", MARKER + "x", env=my_env()).assert_error(
        EXIT_REFUSED, "mysql-drop"
    )
    assert {"bitbucket", "bb_marked"} <= databases(mysql)
    assert run("mysql-drop", *conn, "--dbname", "bb_marked", "--comment", MARKER, env=my_env()).summary["dropped"]
    assert "bb_marked" not in databases(mysql)
    again = run("mysql-drop", *conn, "--dbname", "bb_marked", "--comment", MARKER, env=my_env()).summary
    assert again["dropped"] is False  # the cleanup may run twice
    # A name that would leave its quotes is refused before any SQL.
    bad = run("mysql-drop", *conn, "--dbname", "x`; DROP DATABASE bitbucket; --", "--comment", MARKER, env=my_env())
    bad.assert_error(EXIT_USAGE, "mysql-drop")


def test_a_cut_off_or_broken_dump_leaves_no_database_behind(mysql: Mysql, tmp_path: Path) -> None:
    out = tmp_path / "db"
    dump_to(mysql, out)
    text = (out / "dump.sql").read_text()

    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "dump.sql").write_text(text[: len(text) // 2])  # as if the copy had stopped half-way
    result = run("mysql-restore", "--dump", cut, *mysql.conn_args(), "--dbname", "bb_cut", env=my_env())
    result.assert_error(EXIT_CHECKSUM, "mysql-restore")
    assert "incomplete" in result.stderr and "bb_cut" not in databases(mysql)

    broken = tmp_path / "broken"
    broken.mkdir()
    statements = text.split("INSERT INTO `sta_pull_request`", 1)
    (broken / "dump.sql").write_text(statements[0] + "INSERT INTO `no_such_table` VALUES (1);\n" + statements[1])
    result = run("mysql-restore", "--dump", broken, *mysql.conn_args(), "--dbname", "bb_broken", env=my_env())
    result.assert_error(EXIT_RESTORE, "mysql-restore")
    assert "no_such_table" in result.stderr and "bb_broken" not in databases(mysql)  # dropped again: a retry works


def test_mysql_dump_with_a_wrong_password_a_missing_database_or_no_server(mysql: Mysql, tmp_path: Path) -> None:
    wrong = "Wr0ng-password-xyz"
    result = run("mysql-dump", *mysql.conn_args(), "--dbname", "bitbucket", "--out", tmp_path / "a", env=my_env(wrong))
    result.assert_error(EXIT_AUTH, "mysql-dump")
    assert "authentication failed" in result.stderr and wrong not in result.stderr + result.stdout
    missing = run("mysql-dump", *mysql.conn_args(), "--dbname", "nosuch", "--out", tmp_path / "b", env=my_env())
    missing.assert_error(EXIT_MISSING, "mysql-dump")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = run(
        "mysql-dump", "--host", "127.0.0.1", "--port", str(port), "--user", "u", "--dbname", "d", "--out",
        tmp_path / "c", env=my_env(),
    )  # fmt: skip
    unreachable.assert_error(EXIT_COPY, "mysql-dump")
    run(
        "mysql-dump", *mysql.conn_args(), "--dbname", "bitbucket", "--out", tmp_path / "d", "--password", "x"
    ).assert_error(EXIT_USAGE, "mysql-dump")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@contextmanager
def table_locked(db: Mysql, table: str) -> Iterator[None]:
    """Holds a WRITE lock on a table, so that mysqldump's read of it blocks (and stays observable) until released."""
    holder = subprocess.Popen(
        ["mariadb", "--no-defaults", "--protocol=TCP", "-h", db.host, "-P", str(db.port), "-u", "bitbucket",
         "bitbucket"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, **my_env()},
    )  # fmt: skip
    assert holder.stdin is not None
    holder.stdin.write(f"LOCK TABLES {table} WRITE;\n")
    holder.stdin.flush()
    wait_for(lambda: db.root(f"SHOW OPEN TABLES FROM bitbucket WHERE `Table` = '{table}' AND In_use > 0") != "")
    try:
        yield
    finally:
        holder.stdin.write("UNLOCK TABLES;\n")
        holder.stdin.close()
        holder.wait(timeout=30)


def blocked_dump(out: Path, seen: list[list[bytes]]) -> int:
    """The pid of the mysqldump that writes into out's partial directory, once it waits on the lock."""
    partial = f"--result-file={out.parent}/.{out.name}.partial.".encode()

    def find() -> int | None:
        lines = command_lines()
        seen.extend(lines.values())
        for pid, argv in lines.items():
            if argv[0].endswith((b"mysqldump", b"mariadb-dump")) and any(partial in a for a in argv):
                return pid
        return None

    pid: int = wait_for(find, interval=0.005)
    return pid


def test_the_password_reaches_mysqldump_only_in_a_private_option_file(mysql: Mysql, tmp_path: Path) -> None:
    """With --password-secret the password goes from the AWS CLI into a variable and from there into an option file
    only its user can read: no process's argv or environment holds it while the dump runs, and the file is gone
    after. SIGTERM then stops the dump and leaves nothing behind."""
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bitbucket-db-AbCdEf"
    bindir = fake_aws(tmp_path, {"username": "bitbucket", "password": APP_PASSWORD})
    dumps = tmp_path / "dumps"
    dumps.mkdir(mode=0o700)
    out = dumps / "db"
    env = {k: v for k, v in os.environ.items() if k != "MYSQL_PWD"}
    env["PATH"] = f"{bindir}:{env['PATH']}"
    seen: list[list[bytes]] = []
    secret = APP_PASSWORD.encode()
    with table_locked(mysql, "sta_pull_request"):
        proc = subprocess.Popen(
            [str(SCRIPT), "mysql-dump", *mysql.conn_args(), "--dbname", "bitbucket", "--out", str(out),
             "--password-secret", arn],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        pid = blocked_dump(out, seen)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        option_file = Path(next(a for a in argv if a.startswith(b"--defaults-file=")).split(b"=", 1)[1].decode())
        assert secret not in Path(f"/proc/{pid}/environ").read_bytes()
        assert option_file.stat().st_mode & 0o077 == 0 and option_file.parent.stat().st_mode & 0o077 == 0
        assert secret.replace(b"\\", b"\\\\").replace(b'"', b'\\"') in option_file.read_bytes()  # escaped, intact
        for _ in range(5):
            seen += command_lines().values()
        assert proc.poll() is None  # still blocked: everything above was observed during the dump
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert stdout == "" and stderr.startswith("mysql-dump: interrupted by SIGTERM")
    assert any(b"get-secret-value" in a for a in seen) and not [a for a in seen if any(secret in x for x in a)]
    assert not option_file.exists() and list(dumps.iterdir()) == []
    assert APP_PASSWORD not in stderr

    # Unblocked, the same dump completes and reads the secret once.
    (tmp_path / "aws-calls.jsonl").unlink()
    done = subprocess.run(
        [str(SCRIPT), "mysql-dump", *mysql.conn_args(), "--dbname", "bitbucket", "--out", str(out),
         "--password-secret", arn],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dump"] == str(out)
    calls = [json.loads(line) for line in (tmp_path / "aws-calls.jsonl").read_text().splitlines()]
    assert [c[:2] for c in calls] == [["secretsmanager", "get-secret-value"]]


def test_drill_check_of_a_mysql_database(mysql: Mysql) -> None:
    conn = [*mysql.conn_args(), "--dbname", "bitbucket", "--engine", "mysql"]
    missing = run("drill-check", *conn, "--tables", "project,sta_no_such", env=my_env())
    missing.assert_error(EXIT_CHECKSUM, "drill-check")
    assert "sta_no_such" in missing.stderr
    wrong = run("drill-check", *conn, "--tables", "project", env=my_env("not-the-password"))
    wrong.assert_error(EXIT_AUTH, "drill-check")
    assert "not-the-password" not in wrong.stderr
    other = run("drill-check", *mysql.conn_args(), "--dbname", "bitbucket", "--engine", "oracle", "--tables", "x")
    other.assert_error(EXIT_USAGE, "drill-check")
