"""The search cluster's client (functions/clients/search.py) against the snapshot-API simulator: whatever answers in
the cluster's place is untrusted (redirects, size, shape, status), idempotent calls are retried and starts are not,
credentials are read again once after a 401, and Amazon OpenSearch requests are signed as the functions' roles."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from functions.clients.aws import clients_from
from functions.clients.bitbucket_answers import Credentials
from functions.clients.search import SearchCluster
from functions.errors import SearchRequestFailed, SearchUnavailable
from functions.models.part_config import AmazonOpenSearchConfig, SelfManagedSearchConfig
from rehearsal.search_simulator import RedirectTarget, SearchSimulator

PASSWORD = "Cluster-Passw0rd!"
DOMAIN = "arn:aws:es:us-east-1:123456789012:domain/bitbucket-search"


@pytest.fixture
def sim() -> Iterator[SearchSimulator]:
    with SearchSimulator(auth="basic", username="backup", password=PASSWORD, path_repo=["/tmp"]) as server:
        server.add_repository("snaps", "fs", {"location": "/tmp/snaps"})
        server.add_index("bitbucket-search-v1", [{"n": 1}])
        yield server


def _cluster(sim: SearchSimulator, passwords: list[str] | None = None, **kwargs: Any) -> SearchCluster:
    config = SelfManagedSearchConfig(
        strategy="opensearch", endpoint=sim.url, repository="snaps", credentials_secret="search"
    )
    given = list(passwords or [PASSWORD])
    asked: list[bool] = []

    def credentials(fresh: bool) -> Credentials:
        asked.append(fresh)
        return Credentials(username="backup", password=given.pop(0) if len(given) > 1 else given[0])

    cluster = SearchCluster(config, credentials=credentials, backoff=0.01, **kwargs)
    cluster.asked = asked  # type: ignore[attr-defined]
    return cluster


def test_a_snapshot_is_started_read_and_deleted(sim: SearchSimulator) -> None:
    cluster = _cluster(sim)
    assert cluster.repository_settings("t") == {"type": "fs", "settings": {"location": "/tmp/snaps"}}
    cluster.create_snapshot("t", "demo-20261203-010203-abcd1234", ["bitbucket-*"], {"instance": "demo"})
    info = cluster.snapshot("t", "demo-20261203-010203-abcd1234")
    assert info is not None and info.indices == ["bitbucket-search-v1"] and info.metadata == {"instance": "demo"}
    assert cluster.delete_snapshot("t", "demo-20261203-010203-abcd1234") is True
    assert cluster.snapshot("t", "demo-20261203-010203-abcd1234") is None
    assert cluster.delete_snapshot("t", "demo-20261203-010203-abcd1234") is False


def test_a_redirect_is_never_followed_and_nothing_reaches_the_other_origin(sim: SearchSimulator) -> None:
    with RedirectTarget() as elsewhere:
        sim.inject("repository-get", redirect_to=elsewhere.url + "/steal?token=x")
        with pytest.raises(
            SearchRequestFailed, match=r"redirect to http://127\.0\.0\.1:[0-9]+/steal \(query not shown\)"
        ) as caught:
            _cluster(sim).repository_settings("validate")
        assert "never followed" in str(caught.value) and "token" not in str(caught.value)
        assert elsewhere.arrived == []


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ({"oversize_bytes": 2 * 1024 * 1024}, "more than 1,048,576 bytes"),
        (
            {"status": 200, "body": "<html>login</html>", "headers": {"Content-Type": "text/html"}},
            r"not JSON \(text/html",
        ),
        ({"status": 200, "body": "[" * 100 + "]" * 100}, "not JSON"),
        ({"status": 200, "body": "[]"}, "JSON that is not an object"),
        ({"status": 200, "body": '{"snapshots": [{"snapshot": "s-1", "state": "DONE"}]}'}, "has no known state"),
    ],
)
def test_answers_that_are_not_the_clusters_are_refused_in_words(
    sim: SearchSimulator, fault: dict[str, Any], said: str
) -> None:
    sim.inject("snapshot-get", **fault)
    with pytest.raises(SearchRequestFailed, match=said) as caught:
        _cluster(sim).snapshot("wait-snapshots", "s-1")
    assert str(caught.value).startswith("wait-snapshots: ") and "Traceback" not in str(caught.value)


def test_a_servers_refusal_is_told_printable_and_bounded(sim: SearchSimulator) -> None:
    reason = "\x1b[31mdisk full\x1b[0m " + "x" * 5000
    body = json.dumps({"error": {"type": "snapshot_creation_exception", "reason": reason}, "status": 400})
    sim.inject("snapshot-create", status=400, body=body)
    with pytest.raises(SearchRequestFailed) as caught:
        _cluster(sim).create_snapshot("copy-search", "s-1", ["bitbucket-*"], {})
    text = str(caught.value)
    assert "disk full" in text and "\x1b" not in text and len(text) < 400
    assert caught.value.status == 400 and caught.value.kind == "snapshot_creation_exception"


def test_idempotent_calls_are_retried_and_a_start_is_not(sim: SearchSimulator) -> None:
    cluster = _cluster(sim)
    sim.inject("snapshot-get", status=503, body="{}")
    assert cluster.snapshot("t", "nothing") is None  # the 503 retried, then the real 404
    sim.inject("snapshot-create", status=503, body="{}")
    before = len(sim.requests)
    with pytest.raises(SearchUnavailable, match="HTTP 503"):
        cluster.create_snapshot("copy-search", "s-1", ["bitbucket-*"], {})
    assert len(sim.requests) - before == 1, "a start is never sent twice"
    assert sim.snapshots("snaps") == []


def test_an_unreachable_cluster_is_unavailable_in_words() -> None:
    config = SelfManagedSearchConfig(
        strategy="opensearch", endpoint="http://127.0.0.1:9", repository="snaps", credentials_secret="search"
    )
    cluster = SearchCluster(config, credentials=lambda fresh: Credentials("u", PASSWORD), retries=0, timeout=1)
    with pytest.raises(SearchUnavailable, match="connection failed") as caught:
        cluster.snapshot("wait-snapshots", "s-1")
    assert PASSWORD not in str(caught.value)


def test_a_rotated_password_is_read_again_once(sim: SearchSimulator) -> None:
    cluster = _cluster(sim, passwords=["old-password", PASSWORD])
    assert cluster.repository_settings("validate") is not None
    assert cluster.asked == [False, True]  # type: ignore[attr-defined]
    wrong = _cluster(sim, passwords=["wrong", "still-wrong"])
    with pytest.raises(SearchRequestFailed, match="HTTP 401"):
        wrong.repository_settings("validate")


@pytest.mark.parametrize("name", ["../secrets", "a/b", "UPPER", "_all", ""])
def test_names_are_checked_before_they_go_into_a_path(sim: SearchSimulator, name: str) -> None:
    with pytest.raises(ValueError, match="not a valid"):
        _cluster(sim).snapshot("t", name)


def test_restored_indices_are_deleted_by_name_only(sim: SearchSimulator) -> None:
    with pytest.raises(ValueError, match="pattern"):
        _cluster(sim).delete_indices("t", ["restored-*"])


def _signing_as(key_id: str, secret: str) -> Any:
    def factory(service: str, region: str | None) -> Any:
        return boto3.client(
            service, region_name=region or "us-east-1", aws_access_key_id=key_id, aws_secret_access_key=secret
        )

    return clients_from(factory)


def test_amazon_requests_are_signed_as_the_functions_role_and_authorized_by_the_domain() -> None:
    secrets = {"AKIDBACKUP": "backup-secret"}
    allowed: list[tuple[str, str]] = []

    def authorize(key: str, action: str, resource: str) -> bool:
        allowed.append((key, action))
        return action == "es:ESHttpGet"

    with SearchSimulator(auth="sigv4", domain_arn=DOMAIN, secret_for=secrets.get, allowed=authorize) as sim:
        sim.add_repository("bitbucket-backup", "s3", {"bucket": "b", "role_arn": "arn:aws:iam::1:role/r"})
        config = AmazonOpenSearchConfig(strategy="amazon-opensearch", endpoint=sim.url, domain_arn=DOMAIN)
        cluster = SearchCluster(config, backoff=0.01)
        with _signing_as("AKIDBACKUP", "backup-secret"):
            assert cluster.repository_settings("validate") is not None
            with pytest.raises(SearchRequestFailed, match="not authorized to perform: es:ESHttpPut"):
                cluster.create_snapshot("copy-search", "s-1", ["bitbucket-*"], {})
        assert allowed[0] == ("AKIDBACKUP", "es:ESHttpGet")
        with _signing_as("AKIDBACKUP", "a-wrong-secret"), pytest.raises(SearchRequestFailed, match="signature"):
            cluster.repository_settings("validate")
