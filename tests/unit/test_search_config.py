"""The search index in the configuration: `search.strategy` amazon-opensearch, opensearch or none; its snapshot is
the part `search` of a backup, copied as a snapshot and cataloged in the archive bucket."""

from __future__ import annotations

from typing import Any

import pytest

from functions.models.config import ConfigError, parse_instance_config
from functions.strategies import parts_for
from functions.strategies.search_snapshot import SearchSnapshotStrategy

DOMAIN = "arn:aws:es:eu-west-1:123456789012:domain/bitbucket-search"
AMAZON = {
    "strategy": "amazon-opensearch",
    "endpoint": "https://vpc-bb.eu-west-1.es.amazonaws.com",
    "domain_arn": DOMAIN,
}
SELF_MANAGED = {
    "strategy": "opensearch",
    "endpoint": "https://search.internal:9200/",
    "repository": "bitbucket-snapshots",
    "credentials_secret": "bitbucket/search",
}


def config(search: dict[str, Any] | None = None, **extra: Any) -> Any:
    return parse_instance_config(
        {
            "name": "prod",
            "base_url": "https://bitbucket.example.com",
            "credentials_secret": "s",
            "home": {"strategy": "amazon-ebs", "instance_id": "i-0000000000000000a", "volumes": ["/dev/xvdf"]},
            "database": {"strategy": "amazon-rds", "instance_id": "db"},
            **({"search": search} if search is not None else {}),
            **extra,
        }
    )


def test_no_search_index_by_default() -> None:
    parsed = config()
    assert parsed.search.strategy == "none" and parsed.search_index is None
    assert "search" not in parsed.parts and not parsed.uses_archive


@pytest.mark.parametrize("search", [AMAZON, SELF_MANAGED])
def test_the_search_index_is_the_last_part_a_snapshot_cataloged_in_the_archive_bucket(search: dict[str, Any]) -> None:
    parsed = config(search)
    assert parsed.parts == ["home", "database", "search"]
    assert parsed.uses_archive  # the catalog entries (and a domain's repository) live in the archive bucket
    parts = parts_for(parsed)
    assert isinstance(parts.snapshots["search"], SearchSnapshotStrategy)
    assert not parts.snapshots["search"].copied  # not copied to other regions


def test_amazon_defaults_and_the_domains_region() -> None:
    parsed = config(AMAZON)
    assert parsed.search.repository == "bitbucket-backup" and parsed.search.indices == ["bitbucket-*"]
    assert parsed.search.region == "eu-west-1"


def test_the_endpoint_loses_its_trailing_slash() -> None:
    assert config(SELF_MANAGED).search.endpoint == "https://search.internal:9200"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"endpoint": "https://user:pw@search.internal"}, "search.endpoint"),  # credentials never in the URL
        ({"endpoint": "https://search.internal/?x=1"}, "search.endpoint"),
        ({"endpoint": "ftp://search.internal"}, "search.endpoint"),
        ({"repository": "Bitbucket"}, "search.repository"),
        ({"repository": "_snap"}, "search.repository"),
        ({"indices": ["*"]}, "search.indices"),  # every index of the cluster: never
        ({"indices": ["_all"]}, "search.indices"),
        ({"indices": ["bitbucket-*,other"]}, "search.indices"),
        ({"indices": []}, "search.indices"),
        ({"credentials_secret": ""}, "search.credentials_secret"),
    ],
)
def test_refused_settings_of_a_self_managed_cluster(change: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        config({**SELF_MANAGED, **change})


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:es:eu-west-1:123456789012:domain/Bitbucket",
        "arn:aws:es:eu-west-1:1234:domain/bitbucket",
        "arn:aws:s3:::bucket",
        "arn:aws:es:eu-west-1:123456789012:domain/bitbucket/*",
    ],
)
def test_a_domain_arn_must_name_one_domain(arn: str) -> None:
    with pytest.raises(ConfigError, match=r"search\.domain_arn"):
        config({**AMAZON, "domain_arn": arn})


def test_a_self_managed_cluster_needs_its_repository_and_secret() -> None:
    with pytest.raises(ConfigError, match=r"search\.(repository|credentials_secret)"):
        config({"strategy": "opensearch", "endpoint": "https://search.internal"})


def test_plain_http_to_the_search_cluster_only_for_testing() -> None:
    plain = {**SELF_MANAGED, "endpoint": "http://search.internal:9200"}
    with pytest.raises(ConfigError, match="plain http"):
        config(plain)
    allowed = config(plain, base_url="http://127.0.0.1:7990", insecure_connection_allowed_for_testing=True)
    assert allowed.connection_warning is not None and "search cluster" in allowed.connection_warning
