"""Test layering: fake AWS credentials for everything; a Bitbucket simulator; a moto world; a rehearsal."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from rehearsal.bitbucket_simulator import BitbucketSimulator
from rehearsal.hostworld import Postgres, PostgresUnavailable, local_postgres
from rehearsal.runtime import REGION, set_fake_credentials


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    set_fake_credentials()
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.setenv("SECRET_CACHE_SECONDS", "0")


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


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
