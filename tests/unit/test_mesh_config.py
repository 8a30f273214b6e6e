"""Mesh nodes in the configuration: named parts mesh-<name>, each a host of its own, copied as the home is."""

from __future__ import annotations

from typing import Any

import pytest

from functions.models.config import ConfigError, parse_instance_config
from functions.models.part_config import EbsHomeConfig, RsyncHomeConfig
from functions.strategies import parts_for

SHARED = {"strategy": "amazon-ebs", "instance_id": "i-0000000000000000a", "volumes": ["/dev/xvdf"]}


def node(name: str, instance_id: str, strategy: str = "amazon-ebs", **home: Any) -> dict[str, Any]:
    if strategy == "amazon-ebs":
        return {"name": name, "home": {"strategy": strategy, "instance_id": instance_id, "volumes": ["/dev/xvdf"]}}
    return {
        "name": name,
        "home": {"strategy": "rsync", "instance_id": instance_id, "home_path": "/m", "staging_path": "/s", **home},
    }


def config(*nodes: dict[str, Any], **extra: Any) -> Any:
    return parse_instance_config(
        {
            "name": "prod",
            "base_url": "https://bitbucket.example.com",
            "credentials_secret": "s",
            "home": SHARED,
            "database": {"strategy": "amazon-rds", "instance_id": "db"},
            "mesh_nodes": list(nodes),
            **extra,
        }
    )


def test_each_node_is_a_part_copied_by_its_homes_strategy() -> None:
    parsed = config(node("b", "i-0000000000000000b"), node("c", "i-0000000000000000c", "rsync"))
    assert parsed.parts == ["home", "database", "mesh-b", "mesh-c"]
    assert isinstance(parsed.home_of("mesh-b"), EbsHomeConfig) and isinstance(parsed.home_of("mesh-c"), RsyncHomeConfig)
    assert parsed.uses_archive  # the rsync node's archive
    parts = parts_for(parsed)
    assert sorted(parts.snapshots) == ["database", "home", "mesh-b"] and list(parts.hosts) == ["mesh-c"]
    assert [c.part for c in parts.catalogs] == ["home", "database", "mesh-b", "mesh-c"]
    with pytest.raises(ValueError, match="no home part 'mesh-x'"):
        parsed.home_of("mesh-x")


@pytest.mark.parametrize(
    ("nodes", "extra", "expected"),
    [
        ([node("b", "i-0000000000000000b"), node("b", "i-0000000000000000c")], {}, "b is listed twice"),
        ([node("b", "i-0000000000000000a")], {}, "i-0000000000000000a holds more than one home"),
        ([node("b", "i-0000000000000000b", "rsync")], {"zero_downtime": True}, "Mesh node b is copied by rsync"),
        ([node("b", "i-0000000000000000b", "rsync", exclude_repos=[1])], {}, "exclude_repos applies to the shared"),
        ([node("B", "i-0000000000000000b")], {}, r"mesh_nodes\.0\.name"),
        ([{"name": "b", "home": {"strategy": "none"}}], {}, r"mesh_nodes\.0\.home"),
    ],
)
def test_refused_nodes_are_named(nodes: list[dict[str, Any]], extra: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        config(*nodes, **extra)


def test_zero_downtime_takes_ebs_nodes() -> None:
    assert config(node("b", "i-0000000000000000b"), zero_downtime=True).zero_downtime


def test_a_drill_of_rsync_nodes_needs_a_drill_host() -> None:
    with pytest.raises(ConfigError, match=r"drill\.host_instance_id is required to check the rsync Mesh nodes"):
        config(node("c", "i-0000000000000000c", "rsync"), drill={"schedule": "rate(7 days)"})
    assert config(node("b", "i-0000000000000000b"), drill={"schedule": "rate(7 days)"}).drill is not None
