"""Real parts of a Bitbucket host for the rehearsal and the tests: a home directory shaped like Bitbucket's, whose
repositories are real bare git repositories, and a real PostgreSQL 15 server on loopback with a Bitbucket-ish schema.

Shared by `python -m rehearsal --home-strategy rsync --db-strategy postgresql` and the test suites (tests/host,
tests/integration), so both move real bytes through the same host script.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REPOS = Path("shared/data/repositories")


class PostgresUnavailable(RuntimeError):
    """This machine cannot run the local PostgreSQL (binaries missing, or no user to run it as)."""


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(*args: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "safe.directory=*", *map(str, args)],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(map(str, args))}: {proc.stderr}")
    return proc.stdout


def commit_files(work: Path, files: dict[str, bytes], message: str) -> None:
    for name, content in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)


@dataclass
class BitbucketHome:
    """A home directory shaped like Bitbucket's, whose repositories are bare clones of work repositories."""

    root: Path
    works: Path
    repo_ids: list[int] = field(default_factory=list)

    def repo(self, repo_id: int) -> Path:
        return self.root / REPOS / str(repo_id)

    def add_repo(self, repo_id: int, big_blob: int = 0) -> Path:
        work = self.works / str(repo_id)
        git("init", "-q", work)
        commit_files(
            work, {"README.md": f"# repo {repo_id}\n".encode(), "src/main.c": b"int main(void) { return 0; }\n"}, "init"
        )
        git("tag", "-a", "v1.0", "-m", "release 1.0", cwd=work)
        git("checkout", "-q", "-b", "feature/x", cwd=work)
        commit_files(work, {"src/feature.c": os.urandom(3000)}, "feature work")
        git("tag", "light-tag", cwd=work)
        git("checkout", "-q", "main", cwd=work)
        commit_files(work, {"docs/guide.txt": b"guide\n" * 200}, "docs")
        if big_blob:
            commit_files(work, {"assets/blob.bin": os.urandom(big_blob)}, "binary asset")
        bare = self.repo(repo_id)
        bare.parent.mkdir(parents=True, exist_ok=True)
        git("clone", "-q", "--bare", "--no-local", work, bare)
        git("remote", "add", "bitbucket", bare, cwd=work)
        self.repo_ids.append(repo_id)
        return bare

    def push_commits(self, repo_id: int, branch: str, count: int) -> None:
        """New commits pushed to a branch (loose objects in the bare repository, as a small push leaves them)."""
        work = self.works / str(repo_id)
        git("checkout", "-q", branch, cwd=work)
        for i in range(count):
            commit_files(work, {f"change-{i}.txt": os.urandom(500)}, f"change {i}")
        git("push", "-q", "bitbucket", branch, cwd=work)
        git("checkout", "-q", "main", cwd=work)

    def delete_repo(self, repo_id: int) -> None:
        shutil.rmtree(self.repo(repo_id))
        self.repo_ids.remove(repo_id)


# Home-relative paths that the default excludes must keep out of the backup, and ones that must be in it.
EXCLUDED = [
    "caches/idx/segment",
    "log/atlassian-bitbucket.log",
    "tmp/upload.part",
    "export/dump.zip",
    "plugins/.osgi-plugins/felix/bundle.jar",
    "plugins/.bundled-plugins/b.jar",
    "data/db.lock",
    "data/db.h2.db",
    ".lock",
]
INCLUDED = ["shared/bitbucket.properties", "plugins/installed-plugins/plugin.jar", "shared/config/x.cfg"]


def build_home(tmp_path: Path, repo_ids: range, big_blob_repo: int | None = None) -> BitbucketHome:
    home = BitbucketHome(tmp_path / "bitbucket-home", tmp_path / "work-repos")
    home.root.mkdir(exist_ok=True)  # a btrfs subvolume made beforehand, say
    for repo_id in repo_ids:
        home.add_repo(repo_id, big_blob=400_000 if repo_id == big_blob_repo else 0)
    for rel in EXCLUDED + INCLUDED:
        path = home.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {rel}\n")
    (home.root / "shared/bitbucket.properties").write_text("jdbc.password=not-a-real-one\n")
    return home


SUPERUSER_PASSWORD = "Sup3r-user-pw"
# A quote and a backslash: the password must survive JSON (the secret) and the environment intact.
APP_PASSWORD = 'bb-s3cr3t-"Qx\\w!'


@dataclass
class Postgres:
    host: str
    port: int
    data: Path

    def conn_args(self, user: str = "bitbucket") -> list[str]:
        return ["--host", self.host, "--port", str(self.port), "--user", user]

    def libpq_args(self, user: str, dbname: str) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", user, "-d", dbname]

    def psql(self, sql: str, dbname: str = "bitbucket", user: str = "bitbucket", password: str = APP_PASSWORD) -> str:
        proc = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", *self.libpq_args(user, dbname)],
            input=sql,
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSWORD": password},
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def superuser(self, sql: str) -> str:
        return self.psql(sql, dbname="postgres", user="postgres", password=SUPERUSER_PASSWORD)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_user() -> list[str]:
    """The command prefix that runs PostgreSQL's server binaries: initdb and postgres refuse to run as root."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "bbbackup-pg"):
        if subprocess.run(["id", "-u", name], capture_output=True, check=False).returncode == 0:
            return ["runuser", "-u", name, "--"]
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "bbbackup-pg"],
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0:
        raise PostgresUnavailable(f"running as root and no user to run PostgreSQL as: {created.stderr.strip()}")
    return ["runuser", "-u", "bbbackup-pg", "--"]


SCHEMA = """
CREATE TABLE project (
    id serial PRIMARY KEY, project_key varchar(128) UNIQUE NOT NULL, name varchar(255) NOT NULL,
    description text, project_type integer NOT NULL);
CREATE TABLE repository (
    id serial PRIMARY KEY, project_id integer NOT NULL REFERENCES project(id), slug varchar(128) NOT NULL,
    name varchar(128) NOT NULL, state integer NOT NULL, hierarchy_id varchar(20) NOT NULL,
    is_forkable boolean NOT NULL, is_public boolean NOT NULL, UNIQUE (project_id, slug));
CREATE TABLE sta_normal_user (
    id serial PRIMARY KEY, name varchar(255) UNIQUE NOT NULL, email_address varchar(255), locale varchar(32));
CREATE TABLE sta_pull_request (
    id bigserial PRIMARY KEY, repository_id integer NOT NULL REFERENCES repository(id),
    author_id integer REFERENCES sta_normal_user(id), title varchar(255) NOT NULL, description text,
    from_hash char(40) NOT NULL, to_hash char(40) NOT NULL, pr_state integer NOT NULL,
    created_timestamp timestamptz NOT NULL, payload bytea);
CREATE INDEX idx_pr_repo ON sta_pull_request(repository_id);
CREATE VIEW sta_open_pull_requests AS SELECT * FROM sta_pull_request WHERE pr_state = 0;

INSERT INTO project (project_key, name, description, project_type)
    SELECT 'PRJ' || g, 'Project ' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'Déscription ünïcode ' || g END, g % 2
    FROM generate_series(1, 60) g;
INSERT INTO repository (project_id, slug, name, state, hierarchy_id, is_forkable, is_public)
    SELECT 1 + g % 60, 'repo-' || g, 'Repository ' || g, g % 3, md5(g::text)::varchar(20), g % 2 = 0, g % 5 = 0
    FROM generate_series(1, 2500) g;
INSERT INTO sta_normal_user (name, email_address, locale)
    SELECT 'user' || g, 'user' || g || '@example.com', CASE WHEN g % 4 = 0 THEN 'de_DE' END
    FROM generate_series(1, 400) g;
INSERT INTO sta_pull_request (repository_id, author_id, title, description, from_hash, to_hash, pr_state,
                              created_timestamp, payload)
    SELECT 1 + g % 2500, 1 + g % 400, 'PR ' || g || E' with \\t tab', repeat('lorem ipsum ', g % 20),
           md5('f' || g) || substr(md5('x' || g), 1, 8), md5('t' || g) || substr(md5('y' || g), 1, 8), g % 3,
           timestamptz '2020-01-01 00:00:00+00' + g * interval '17 minutes', decode(md5(g::text), 'hex')
    FROM generate_series(1, 6000) g;
"""
TABLES = ["project", "repository", "sta_normal_user", "sta_pull_request"]


@contextlib.contextmanager
def local_postgres() -> Iterator[Postgres]:
    """A real PostgreSQL 15 on 127.0.0.1 with SCRAM password authentication and a Bitbucket-ish database `bitbucket`
    owned by the role `bitbucket` (password APP_PASSWORD); stopped and removed on exit."""
    if not (PG_BIN / "initdb").exists():
        raise PostgresUnavailable(
            f"PostgreSQL 15 server binaries not found in {PG_BIN} (make host-deps installs postgresql-15)"
        )
    prefix = server_user()
    base = Path(tempfile.mkdtemp(prefix="bbbackup-pg-"))
    base.chmod(0o755)
    data, pwfile, log = base / "data", base / "pwfile", base / "server.log"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    if prefix:
        shutil.chown(base, user=prefix[2])
        shutil.chown(pwfile, user=prefix[2])
    port = _free_port()

    def server(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=base if base.exists() else None,  # teardown must still stop the server if the dir is gone
        )

    try:
        init = server(
            PG_BIN / "initdb", "-D", data, "-U", "postgres", "--pwfile", pwfile, "--auth=scram-sha-256",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        if init.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": "''",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "40",
            "shared_buffers": "32MB",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        started = server(PG_BIN / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "start")
        if started.returncode != 0:
            raise PostgresUnavailable(
                "pg_ctl start failed: " + started.stderr + (log.read_text() if log.exists() else "")
            )
        pg = Postgres("127.0.0.1", port, data)
        escaped = APP_PASSWORD.replace("'", "''")
        pg.superuser(f"CREATE ROLE bitbucket LOGIN CREATEDB PASSWORD '{escaped}';")
        pg.superuser("CREATE DATABASE bitbucket OWNER bitbucket;")
        pg.psql(SCHEMA)
        yield pg
    finally:
        pidfile = data / "postmaster.pid"
        if pidfile.exists():
            stopped = server(PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
            if stopped.returncode != 0 and pidfile.exists():
                with contextlib.suppress(ValueError, OSError):
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def table_fingerprint(pg: Postgres, dbname: str) -> dict[str, tuple[int, str]]:
    """Row count and an md5 of the ordered rows of every table in the public schema."""
    names = pg.psql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        " ORDER BY 1",
        dbname=dbname,
    ).split()
    result = {}
    for name in names:
        row = pg.psql(f"SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM {name} t", dbname=dbname)
        count, digest = row.split("|")
        result[name] = (int(count), digest)
    return result


# --- MySQL / MariaDB ---------------------------------------------------------------------------------------------

MARIADB_SERVER = Path("/usr/sbin/mariadbd")
MARIADB_INSTALL_DB = Path("/usr/bin/mariadb-install-db")
MYSQL_ROOT_PASSWORD = "Ma-root-pw"

MYSQL_SCHEMA = """
SET SESSION max_recursive_iterations = 10000;
CREATE TABLE project (
    id int AUTO_INCREMENT PRIMARY KEY, project_key varchar(128) NOT NULL UNIQUE, name varchar(255) NOT NULL,
    description text, project_type int NOT NULL) ENGINE=InnoDB;
CREATE TABLE repository (
    id int AUTO_INCREMENT PRIMARY KEY, project_id int NOT NULL, slug varchar(128) NOT NULL, name varchar(128) NOT NULL,
    state int NOT NULL, hierarchy_id varchar(20) NOT NULL, is_forkable boolean NOT NULL, is_public boolean NOT NULL,
    UNIQUE (project_id, slug), FOREIGN KEY (project_id) REFERENCES project(id)) ENGINE=InnoDB;
CREATE TABLE sta_normal_user (
    id int AUTO_INCREMENT PRIMARY KEY, name varchar(255) NOT NULL UNIQUE, email_address varchar(255),
    locale varchar(32)) ENGINE=InnoDB;
CREATE TABLE sta_pull_request (
    id bigint AUTO_INCREMENT PRIMARY KEY, repository_id int NOT NULL, author_id int, title varchar(255) NOT NULL,
    description text, from_hash char(40) NOT NULL, to_hash char(40) NOT NULL, pr_state int NOT NULL,
    created_timestamp datetime(3) NOT NULL, payload varbinary(64),
    FOREIGN KEY (repository_id) REFERENCES repository(id), FOREIGN KEY (author_id) REFERENCES sta_normal_user(id),
    INDEX idx_pr_repo (repository_id)) ENGINE=InnoDB;
CREATE VIEW sta_open_pull_requests AS SELECT * FROM sta_pull_request WHERE pr_state = 0;

INSERT INTO project (project_key, name, description, project_type)
    WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 60)
    SELECT CONCAT('PRJ', n), CONCAT('Project ', n), IF(n % 3 = 0, NULL, CONCAT('Déscription ünïcode ', n)), n % 2
    FROM g;
INSERT INTO repository (project_id, slug, name, state, hierarchy_id, is_forkable, is_public)
    WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 2500)
    SELECT 1 + n % 60, CONCAT('repo-', n), CONCAT('Repository ', n), n % 3, LEFT(MD5(n), 20), n % 2 = 0, n % 5 = 0
    FROM g;
INSERT INTO sta_normal_user (name, email_address, locale)
    WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 400)
    SELECT CONCAT('user', n), CONCAT('user', n, '@example.com'), IF(n % 4 = 0, 'de_DE', NULL) FROM g;
INSERT INTO sta_pull_request (repository_id, author_id, title, description, from_hash, to_hash, pr_state,
                              created_timestamp, payload)
    WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 6000)
    SELECT 1 + n % 2500, 1 + n % 400, CONCAT('PR ', n, ' with \\t tab ''quoted'''), REPEAT('lorem ipsum ', n % 20),
           CONCAT(MD5(CONCAT('f', n)), LEFT(MD5(CONCAT('x', n)), 8)), CONCAT(MD5(CONCAT('t', n)), LEFT(MD5(n), 8)),
           n % 3, TIMESTAMP('2020-01-01 00:00:00') + INTERVAL n * 17 MINUTE, UNHEX(MD5(n))
    FROM g;
"""


class MysqlUnavailable(RuntimeError):
    """This machine cannot run the local MariaDB server (binaries missing, or it did not start)."""


@dataclass
class Mysql:
    host: str
    port: int
    data: Path

    def conn_args(self, user: str = "bitbucket") -> list[str]:
        return ["--host", self.host, "--port", str(self.port), "--user", user]

    def sql(self, sql: str, dbname: str = "", user: str = "bitbucket", password: str = APP_PASSWORD) -> str:
        """Runs SQL with the MariaDB client (the password in its environment, as a test may); tab-separated rows."""
        proc = subprocess.run(
            ["mariadb", "--no-defaults", "--protocol=TCP", "-h", self.host, "-P", str(self.port), "-u", user,
             "--batch", "--skip-column-names", "--default-character-set=utf8mb4", *([dbname] if dbname else [])],
            input=sql,
            capture_output=True,
            text=True,
            env={**os.environ, "MYSQL_PWD": password},
            timeout=120,
            check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"mariadb failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def root(self, sql: str) -> str:
        return self.sql(sql, user="root", password=MYSQL_ROOT_PASSWORD)


@contextlib.contextmanager
def local_mysql() -> Iterator[Mysql]:
    """A real MariaDB server on 127.0.0.1 with a Bitbucket-ish database `bitbucket` (utf8mb4_bin, as Atlassian asks)
    that the user `bitbucket` (password APP_PASSWORD) owns, and may create `bb_%` (restores) and `drill_%` databases;
    stopped and removed on exit."""
    if not MARIADB_SERVER.exists() or not MARIADB_INSTALL_DB.exists():
        raise MysqlUnavailable(f"MariaDB server not found at {MARIADB_SERVER} (make host-deps installs mariadb-server)")
    base = Path(tempfile.mkdtemp(prefix="bbbackup-mysql-"))
    base.chmod(0o755)
    data, log, socket_path = base / "data", base / "server.log", base / "mysqld.sock"
    user = ["--user=mysql"] if os.geteuid() == 0 else []
    if user:
        shutil.chown(base, user="mysql")
    port = _free_port()
    server: subprocess.Popen[bytes] | None = None
    try:
        init = subprocess.run(
            # Its own --tmpdir: servers bootstrapping side by side (test workers) collide on /tmp's temporary tables.
            [str(MARIADB_INSTALL_DB), "--no-defaults", *user, f"--datadir={data}", "--skip-test-db",
             "--auth-root-authentication-method=normal", f"--tmpdir={base}"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if init.returncode != 0:
            raise MysqlUnavailable(f"mariadb-install-db failed: {(init.stdout + init.stderr).strip()[-500:]}")
        server = subprocess.Popen(
            [str(MARIADB_SERVER), "--no-defaults", *user, f"--datadir={data}", f"--port={port}",
             "--bind-address=127.0.0.1", f"--socket={socket_path}", f"--pid-file={base / 'mysqld.pid'}",
             f"--log-error={log}", f"--tmpdir={base}", "--skip-log-bin",
             "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
             "--innodb-flush-log-at-trx-commit=0", "--skip-name-resolve", "--max-connections=40"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            ping = subprocess.run(
                ["mariadb-admin", "--no-defaults", f"--socket={socket_path}", "-uroot", "ping"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if ping.returncode == 0:
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise MysqlUnavailable("mariadbd did not start: " + (log.read_text()[-800:] if log.exists() else ""))
            time.sleep(0.2)
        setup = (
            f"CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '{MYSQL_ROOT_PASSWORD}';"
            "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
            f"CREATE USER 'bitbucket'@'%' IDENTIFIED BY '{APP_PASSWORD.replace(chr(92), chr(92) * 2)}';"
            "CREATE DATABASE bitbucket CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
            "GRANT ALL ON bitbucket.* TO 'bitbucket'@'%';"
            "GRANT ALL ON `bb\\_%`.* TO 'bitbucket'@'%';"
            "GRANT ALL ON `drill\\_%`.* TO 'bitbucket'@'%';"
        )
        made = subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={socket_path}", "-uroot"],
            input=setup, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            raise MysqlUnavailable(f"cannot set up MariaDB's users: {made.stderr.strip()}")
        db = Mysql("127.0.0.1", port, data)
        db.sql(MYSQL_SCHEMA, dbname="bitbucket")
        yield db
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def mysql_fingerprint(db: Mysql, dbname: str) -> dict[str, tuple[int, str]]:
    """Row count and an md5 of the ordered rows of every base table of the database."""
    names = db.sql(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA = "
        f"'{dbname}' AND TABLE_NAME <> 'bitbucket_backup_restore' ORDER BY 1"
    ).split()
    result = {}
    for name in names:
        columns = db.sql(
            "SELECT GROUP_CONCAT(CONCAT('IFNULL(HEX(`', COLUMN_NAME, '`), ''~'')') ORDER BY ORDINAL_POSITION) FROM "
            f"information_schema.COLUMNS WHERE TABLE_SCHEMA = '{dbname}' AND TABLE_NAME = '{name}'"
        )
        row = db.sql(
            "SET SESSION group_concat_max_len = 1073741824;"  # the default 1 MB would cut the rows short
            f"SELECT COUNT(*), MD5(GROUP_CONCAT(CONCAT_WS(',', {columns}) ORDER BY id SEPARATOR '|')) FROM `{name}`",
            dbname=dbname,
        )
        count, digest = row.split("\t")
        result[name] = (int(count), digest)
    return result


# --- a btrfs file system on a loop device ----------------------------------------------------------------------


class BtrfsUnavailable(RuntimeError):
    """This machine cannot make a btrfs file system on a loop device (not root, no btrfs-progs, no loop device)."""


def _root_command(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, check=False)


@contextlib.contextmanager
def btrfs_volume(where: Path, size_mb: int = 1024) -> Iterator[Path]:
    """A fresh btrfs file system in a sparse image file, mounted through a loop device at `where`/btrfs; unmounted
    and removed on exit. Needs root (CI runs as root), btrfs-progs and the kernel's btrfs and loop support."""
    if os.geteuid() != 0:
        raise BtrfsUnavailable("mounting a btrfs image needs root")
    if shutil.which("mkfs.btrfs") is None:
        raise BtrfsUnavailable("mkfs.btrfs not found (make host-deps installs btrfs-progs)")
    image, mount = where / "btrfs.img", where / "btrfs"
    with image.open("wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    mount.mkdir()
    mounted = False
    try:
        steps: list[list[str | Path]] = [["mkfs.btrfs", "-q", image], ["mount", "-o", "loop", image, mount]]
        for step in steps:
            done = _root_command(*step)
            if done.returncode != 0:
                raise BtrfsUnavailable(f"{step[0]} failed: {done.stderr.strip()[-300:]}")
        mounted = True
        yield mount
    finally:
        if mounted and _root_command("umount", mount).returncode != 0:
            _root_command("umount", "-l", mount)  # a process still in it: detach now, freed when it leaves
        image.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            mount.rmdir()


def btrfs_subvolume(path: Path) -> Path:
    done = _root_command("btrfs", "subvolume", "create", path)
    if done.returncode != 0:
        raise BtrfsUnavailable(f"btrfs subvolume create failed: {done.stderr.strip()}")
    return path
