"""TLS verification is on by default, a CA bundle is used when configured, and a missing bundle stops the synth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions import workflow
from functions.clients.bitbucket import Credentials
from functions.models.config import ConfigError, InstanceConfig

ROOT = Path(__file__).resolve().parents[2]


def _instance(**extra: Any) -> InstanceConfig:
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


@pytest.fixture
def no_secret_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflow, "credentials", lambda _secret: Credentials(username="u", password="p4ssw0rd"))


def test_tls_is_verified_by_default(no_secret_lookup: None) -> None:
    assert workflow.bitbucket(_instance())._session.verify is True


def test_a_configured_ca_bundle_is_used(no_secret_lookup: None) -> None:
    client = workflow.bitbucket(_instance(ca_bundle="functions/certs/corp-ca.pem"))
    assert client._session.verify == str(ROOT / "functions" / "certs" / "corp-ca.pem")


def test_verification_can_be_turned_off_explicitly(no_secret_lookup: None) -> None:
    assert workflow.bitbucket(_instance(verify_tls=False))._session.verify is False


def test_a_missing_ca_bundle_stops_the_synth_with_the_instance_named() -> None:
    from stacks.app_builder import build_app

    config = json.loads((ROOT / "cdk.json").read_text())["context"]["bitbucket-backup"]
    config["bundling"] = "none"
    config["instances"][0]["ca_bundle"] = "functions/certs/missing.pem"
    with pytest.raises(ConfigError, match=r"instance 'prod': ca_bundle 'functions/certs/missing\.pem'"):
        build_app(config)


def test_a_401_reads_the_secret_again_once(simulator: Any) -> None:
    from functions.clients.bitbucket import BitbucketClient
    from functions.errors import BitbucketRequestFailed

    stale = Credentials(username="admin", password="old-password")
    fresh = Credentials(username="admin", password="s3cret-Passw0rd")
    calls: list[int] = []

    def refresh() -> Credentials:
        calls.append(1)
        return fresh

    lock = BitbucketClient(simulator.url, stale, timeout=2, retries=0, refresh=refresh).lock()
    assert lock.unlock_token and simulator.locked and calls == [1]
    # Without a way to refresh, or when the fresh secret is refused too, a 401 is final.
    with pytest.raises(BitbucketRequestFailed, match="401"):
        BitbucketClient(simulator.url, stale, timeout=2, retries=0).maintenance()
    with pytest.raises(BitbucketRequestFailed, match="401"):
        BitbucketClient(simulator.url, stale, timeout=2, retries=0, refresh=lambda: stale).maintenance()
