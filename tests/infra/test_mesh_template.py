"""Mesh nodes in the template: the nodes' copy step may snapshot and run commands on the nodes only, and the shared
home's copy step may not touch a node."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rehearsal.fake_account import set_fake_credentials
from rehearsal.synth import mesh_node, rehearsal_project_config, synth_template
from tests.infra.test_drill_template import policy_of

EBS_NODE, RSYNC_NODE = mesh_node(1, "amazon-ebs"), mesh_node(2, "rsync")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """A shared home on EBS, an RDS database, one Mesh node on EBS and one copied by rsync."""
    set_fake_credentials()
    config = rehearsal_project_config("amazon-ebs", "amazon-rds")
    config["instances"][0]["mesh_nodes"] = [EBS_NODE, RSYNC_NODE]
    return synth_template(config)


def _resources(statements: list[dict[str, Any]], action: str) -> str:
    """Every resource of the statements allowing `action`, as one text (ARNs are Fn::Join'ed)."""
    found = [
        s["Resource"] for s in statements if action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    ]
    return json.dumps(found)


def test_the_nodes_copy_step_snapshots_and_commands_the_nodes_only(template: dict[str, Any]) -> None:
    shared_home = rehearsal_project_config("amazon-ebs", "amazon-rds")["instances"][0]["home"]["instance_id"]
    ebs_node, rsync_node = EBS_NODE["home"]["instance_id"], RSYNC_NODE["home"]["instance_id"]
    nodes = policy_of(template, "BackupMeshNode")
    snapshots, commands = _resources(nodes, "ec2:CreateSnapshots"), _resources(nodes, "ssm:SendCommand")
    assert ebs_node in snapshots and shared_home not in snapshots and rsync_node not in snapshots
    assert rsync_node in commands and ebs_node in commands  # rsync; flush and freeze
    assert shared_home not in commands
    assert "RsyncHome" in commands and "PgDump" not in commands

    home = policy_of(template, "BackupHome")
    snapshots, commands = _resources(home, "ec2:CreateSnapshots"), _resources(home, "ssm:SendCommand")
    assert shared_home in snapshots and ebs_node not in snapshots
    assert rsync_node not in commands and ebs_node not in commands

    # The steps that handle every host copy before and after the lock reach the rsync node's host too.
    for prefix in ("PrepareHost", "Archive"):
        assert rsync_node in _resources(policy_of(template, prefix), "ssm:SendCommand"), prefix
