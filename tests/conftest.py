"""Test layering: fake AWS credentials for everything; a Bitbucket simulator; a moto world; a rehearsal."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions import trusted_config
from functions.clients import aws
from functions.models.config import InstanceConfig
from rehearsal.bitbucket_simulator import BitbucketSimulator
from rehearsal.fake_account import ACCOUNT, REGION, set_fake_credentials
from rehearsal.hostworld import Mysql, MysqlUnavailable, Postgres, PostgresUnavailable, local_mysql, local_postgres


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_fake_credentials()
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.setenv("SECRET_CACHE_SECONDS", "0")
    # Each test deploys its own world: a parameter version read by an earlier test is not this one's.
    trusted_config.clear_cache()
    # What the stack passes to the functions (the rehearsal's stack is in this account and region).
    monkeypatch.setenv("DEPLOYMENT_ID", f"{ACCOUNT}/{REGION}/BitbucketDiyBackup")


@pytest.fixture(scope="module")
def moto_clients() -> Iterator[None]:
    """The functions' AWS clients, passed in (`functions.clients.aws.clients_from`): one per service and region for
    the tests of a module, made against moto's in-process mock (moto stubs every client made after it is imported,
    so the module's tests can share them; loading the service models costs seconds). The process's own cache, which
    a deployed function uses, is never touched."""
    made: dict[tuple[str, str | None], Any] = {}

    def client(service: str, region: str | None = None) -> Any:
        if (service, region) not in made:
            made[service, region] = aws.new_client(service, region)
        return made[service, region]

    with aws.clients_from(client):
        yield


def instance_config(**extra: Any) -> InstanceConfig:
    """A minimal valid instance (no home, an RDS database), with `extra` fields on top."""
    return InstanceConfig.model_validate(
        {
            "name": "prod",
            "base_url": "https://bitbucket.example.com",
            "credentials_secret": "s",
            "home": {"strategy": "none"},
            "database": {"strategy": "amazon-rds", "instance_id": "db"},
            **extra,
        }
    )


def create_runs_table(name: str) -> None:
    """The run table as the stack makes it (stacks/constructs/run_table.py): one item per instance."""
    aws.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "instance", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "instance", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture
def simulator() -> Iterator[BitbucketSimulator]:
    sim = BitbucketSimulator(username="admin", password="s3cret-Passw0rd", drain_seconds=0.05).start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL 15 on 127.0.0.1 with SCRAM password authentication and a Bitbucket-ish database."""
    try:
        server = local_postgres()
        pg = server.__enter__()
    except PostgresUnavailable as error:
        pytest.skip(str(error))
    try:
        yield pg
    finally:
        server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def mysql() -> Iterator[Mysql]:
    """A real MariaDB server on 127.0.0.1 with a Bitbucket-ish database (utf8mb4_bin)."""
    try:
        server = local_mysql()
        db = server.__enter__()
    except MysqlUnavailable as error:
        pytest.skip(str(error))
    try:
        yield db
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs (root only), so "disk full" is real ENOSPC rather than a simulation."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root (CI runs as root)")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (unprivileged container?): {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The longest first: xdist hands tests out in this order, and one of them started last would keep the run going
    # while the other workers sit idle.
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
