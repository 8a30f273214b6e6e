"""Bitbucket credentials are read through Powertools' parameters utility (functions/clients/secrets.py): cached for
SECRET_CACHE_SECONDS, read again when asked for fresh ones (after a 401), errors named by their AWS code only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.clients import secrets
from functions.errors import PreflightFailed
from rehearsal.runtime import REGION

NAME = "bitbucket/demo/backup-user"


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch, moto_clients: None) -> Iterator[Any]:
    monkeypatch.setenv("SECRET_CACHE_SECONDS", "300")
    monkeypatch.setattr(secrets, "_providers", {})
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=REGION)
        client.create_secret(Name=NAME, SecretString=json.dumps({"username": "admin", "password": "first-Passw0rd"}))
        yield client


def _rotate(client: Any, password: str) -> None:
    client.put_secret_value(SecretId=NAME, SecretString=json.dumps({"username": "admin", "password": password}))


def test_the_secret_is_cached_for_its_max_age_and_read_again_when_fresh_is_asked(secretsmanager: Any) -> None:
    assert secrets.credentials(NAME).password == "first-Passw0rd"
    _rotate(secretsmanager, "second-Passw0rd")
    assert secrets.credentials(NAME).password == "first-Passw0rd"  # cached
    assert secrets.credentials(NAME, fresh=True).password == "second-Passw0rd"
    assert secrets.credentials(NAME).password == "second-Passw0rd"  # the fresh read refreshed the cache


def test_with_no_max_age_every_read_goes_to_secrets_manager(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_CACHE_SECONDS", "0")
    assert secrets.credentials(NAME).password == "first-Passw0rd"
    _rotate(secretsmanager, "second-Passw0rd")
    assert secrets.credentials(NAME).password == "second-Passw0rd"


def test_a_missing_secret_is_named_with_its_aws_error_code_only(secretsmanager: Any) -> None:
    with pytest.raises(PreflightFailed) as raised:
        secrets.credentials("bitbucket/demo/nope")
    assert str(raised.value) == "secret bitbucket/demo/nope cannot be read (ResourceNotFoundException)"


def test_a_binary_secret_has_no_secret_string(secretsmanager: Any) -> None:
    secretsmanager.create_secret(Name="binary", SecretBinary=b"\x00\x01")
    with pytest.raises(PreflightFailed, match="binary has no SecretString"):
        secrets.credentials("binary")


def test_a_value_cached_under_a_longer_max_age_is_not_served_once_caching_is_off(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert secrets.credentials(NAME).password == "first-Passw0rd"  # cached for 300 s
    _rotate(secretsmanager, "second-Passw0rd")
    monkeypatch.setenv("SECRET_CACHE_SECONDS", "0")
    assert secrets.credentials(NAME).password == "second-Passw0rd"
