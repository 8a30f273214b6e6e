"""functions.trusted_config: the newest version for the validate step, exactly the named version afterwards, read
once per warm process; an instance name is never a path of the caller's choosing (over moto's SSM)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from functions import trusted_config
from functions.clients import aws
from functions.errors import UnknownInstance
from functions.models.config import parse_instance_config

PREFIX = "/bitbucket-backup/instances"
CONFIG: dict[str, Any] = {
    "name": "prod",
    "base_url": "https://bitbucket.example.com",
    "credentials_secret": "bitbucket/prod/backup-user",
    "home": {"strategy": "amazon-ebs", "instance_id": "i-0a0a0a0a0a0a0a0a0", "volumes": ["/dev/xvdf"]},
    "database": {"strategy": "amazon-rds", "instance_id": "bitbucket"},
}


# The functions' clients are passed in, made against moto once for the module's tests (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("moto_clients")


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The parameter names GetParameter was called with (a botocore hook on the functions' own SSM client)."""
    with mock_aws():
        monkeypatch.setenv("CONFIG_PARAMETER_PREFIX", PREFIX)
        ssm = aws.client("ssm")
        for url in ("https://bitbucket.example.com", "https://bitbucket-new.example.com"):
            value = parse_instance_config({**CONFIG, "base_url": url}).model_dump_json()
            ssm.put_parameter(Name=f"{PREFIX}/prod", Value=value, Type="String", Overwrite=True)
        names: list[str] = []

        def record(params: dict[str, Any], **_: Any) -> None:
            names.append(str(params["Name"]))

        ssm.meta.events.register("provide-client-params.ssm.GetParameter", record, unique_id="test-reads")
        try:
            yield names
        finally:
            ssm.meta.events.unregister("provide-client-params.ssm.GetParameter", unique_id="test-reads")


def test_validate_reads_the_newest_version_later_steps_the_one_it_read_once(reads: list[str]) -> None:
    newest, version = trusted_config.load("prod")
    assert version == 2 and newest.base_url == "https://bitbucket-new.example.com"
    # A run validated against version 1 keeps it, and a warm process asks SSM for it only once.
    for _ in range(3):
        pinned, _ = trusted_config.load("prod", 1, step="lock")
        assert pinned.base_url == "https://bitbucket.example.com"
    assert reads == [f"{PREFIX}/prod", f"{PREFIX}/prod:1"]


@pytest.mark.parametrize("name", ["../secrets", "prod/../../x", "Prod", "prod:1"])
def test_an_instance_name_selects_one_parameter_only(reads: list[str], name: str) -> None:
    with pytest.raises(UnknownInstance, match="is not an instance name"):
        trusted_config.load(name, step="lock")
    assert reads == []


def test_an_unknown_version_names_the_step(reads: list[str]) -> None:
    with pytest.raises(UnknownInstance, match=r"^lock: no instance 'prod' \(version 9\)"):
        trusted_config.load("prod", 9, step="lock")
