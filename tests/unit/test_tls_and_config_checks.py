"""TLS verification is on by default, a CA bundle is used when configured, and a missing bundle stops the synth;
plain http and unverified TLS need a loudly named opt-in, and then every run warns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from functions import steps
from functions.clients import secrets
from functions.clients.bitbucket_answers import Credentials
from functions.models.config import ConfigError
from tests.conftest import instance_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_secret_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "credentials", lambda _secret: Credentials(username="u", password="p4ssw0rd"))


def test_tls_is_verified_by_default(no_secret_lookup: None) -> None:
    assert steps.bitbucket(instance_config())._session.verify is True


def test_a_configured_ca_bundle_is_used(no_secret_lookup: None) -> None:
    client = steps.bitbucket(instance_config(ca_bundle="functions/certs/corp-ca.pem"))
    assert client._session.verify == str(ROOT / "functions" / "certs" / "corp-ca.pem")


def test_verification_can_be_turned_off_only_with_the_loud_opt_in(no_secret_lookup: None) -> None:
    with pytest.raises(ValidationError, match=r"verify_tls is false.*insecure_connection_allowed_for_testing: true"):
        instance_config(verify_tls=False)
    config = instance_config(verify_tls=False, insecure_connection_allowed_for_testing=True)
    assert steps.bitbucket(config)._session.verify is False
    assert config.connection_warning is not None
    assert config.connection_warning.startswith("INSECURE connection to Bitbucket (TLS certificates not verified)")


def test_plain_http_is_refused_without_the_opt_in() -> None:
    with pytest.raises(ValidationError, match=r"base_url 'http://bitbucket\.example\.com' is plain http"):
        instance_config(base_url="http://bitbucket.example.com")
    allowed = instance_config(base_url="http://bitbucket.example.com", insecure_connection_allowed_for_testing=True)
    assert allowed.connection_warning is not None and "plain http (unencrypted)" in allowed.connection_warning


def test_a_secure_connection_has_no_warning_even_with_the_opt_in() -> None:
    assert instance_config().connection_warning is None
    assert instance_config(insecure_connection_allowed_for_testing=True).connection_warning is None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"base_url": "http://bitbucket.example.com"},
            r"^instance 'prod' base_url 'http://bitbucket\.example\.com' is plain http",
        ),
        ({"verify_tls": False}, r"^instance 'prod' verify_tls is false"),
    ],
)
def test_an_insecure_connection_stops_the_synth_with_the_instance_named(change: dict[str, Any], expected: str) -> None:
    from stacks.app_builder import build_app

    config = json.loads((ROOT / "cdk.json").read_text())["context"]["bitbucket-backup"]
    config["bundling"] = "none"
    config["instances"][0].update(change)
    with pytest.raises(ConfigError, match=expected):
        build_app(config)


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
