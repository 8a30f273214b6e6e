"""Mesh nodes in the template: the nodes' copy step may snapshot and run commands on the nodes only, and the shared
home's copy step may not touch a node."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.models.steps import BACKUP, RESTORE
from rehearsal.fake_account import set_fake_credentials
from rehearsal.synth import mesh_node, rehearsal_project_config, synth_template
from tests.infra.asl import function_of, path_where
from tests.infra.conftest import resolve_join
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

    # Each deletes what it made for a run already failed (functions/backup.py): its own part's snapshots only.
    for policy, part in ((nodes, {"StringLike": "mesh-*"}), (home, {"StringEquals": "home"})):
        (delete,) = [s for s in policy if "ec2:DeleteSnapshot" in json.dumps(s["Action"])]
        ((operator, value),) = part.items()
        assert delete["Condition"][operator]["aws:ResourceTag/bitbucket-backup:part"] == value

    # The steps that handle every host copy before and after the lock reach the rsync node's host too.
    for prefix in ("PrepareHost", "Archive"):
        assert rsync_node in _resources(policy_of(template, prefix), "ssm:SendCommand"), prefix


def _machines(template: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [
        json.loads(resolve_join(r["Properties"]["DefinitionString"], template))
        for logical, r in template["Resources"].items()
        if r["Type"] == "AWS::StepFunctions::StateMachine" and logical.startswith(prefix)
    ]


def _the_mesh_nodes_are_copied_at_once(branch: dict[str, Any]) -> None:
    """The third branch: a Map state over the run's Mesh nodes (every node's copy at once, each waited for in its own
    function as the home's is), then one progress report for them all; skipped without nodes."""
    inner = branch["States"]
    choice = inner["Mesh nodes configured?"]
    assert choice["Choices"][0] == {"Variable": "$.run.flow.mesh[0]", "IsPresent": True, "Next": "Copy Mesh nodes"}
    assert inner[choice["Default"]]["Result"] == [] and inner[choice["Default"]].get("End") is True
    each = inner["Copy Mesh nodes"]
    assert each["Type"] == "Map" and each["ItemsPath"] == "$.run.flow.mesh" and "MaxConcurrency" not in each
    assert each["ItemSelector"] == {"run.$": "$.run", "part.$": "$$.Map.Item.Value"}
    node = each["ItemProcessor"]["States"]
    copy = node[each["ItemProcessor"]["StartAt"]]
    assert copy["Parameters"] == {"run.$": "$.run", "part.$": "$.part"}
    done = node[copy["Next"]]
    assert done["Choices"][0]["Variable"] == "$.part_result.done"
    again = node[done["Default"]]
    assert function_of(again) == function_of(copy) and again["Parameters"]["progress.$"] == "$.part_result"
    assert not [n for n, st in node.items() if st["Type"] == "Wait"], "no Wait state under the lock"
    locked = path_where(branch, {"$.run.flow.zero_downtime": False})
    assert locked == [
        "Mesh nodes configured?",
        "Copy Mesh nodes",
        "Report Mesh nodes progress?",
        "Report Mesh nodes progress",
    ]
    assert inner["Report Mesh nodes progress"]["Parameters"] == {"run.$": "$.run", "part": "mesh"}


def test_the_backup_copies_the_nodes_in_a_third_branch_and_warms_an_environment_per_node(
    template: dict[str, Any],
) -> None:
    (definition,) = _machines(template, "Backup")
    states = definition["States"]
    parallel = states[BACKUP.copy.state]
    starts = [b["StartAt"] for b in parallel["Branches"]]
    assert starts == ["Home configured?", "Database configured?", "Mesh nodes configured?"]
    assert parallel["ResultSelector"] == {
        "home.$": "$[0].part_result",
        "database.$": "$[1].part_result",
        "mesh.$": "$[2].mesh_result",
    }
    _the_mesh_nodes_are_copied_at_once(parallel["Branches"][2])
    warm = [b["States"][b["StartAt"]] for b in states[BACKUP.warm_up.state]["Branches"]]
    (each,) = [w for w in warm if w["Type"] == "Map"]
    assert each["ItemsPath"] == "$.run.flow.mesh"
    progress = [w for w in warm if w["Type"] == "Task" and "Progress" in function_of(w)]
    assert len(progress) == 3, "a progress report per branch of the copy can overlap"


def test_the_restore_restores_the_nodes_in_a_map_state(template: dict[str, Any]) -> None:
    for definition in _machines(template, "Restore"):
        states = definition["States"]
        assert states["No home to restore"]["Next"] == "Restore Mesh nodes?"
        # Every Mesh node's home at once (a Map state over the plan's nodes), or none.
        choice = states["Restore Mesh nodes?"]
        assert choice["Choices"] == [{"Variable": "$.plan.mesh[0]", "IsPresent": True, "Next": "Restore Mesh nodes"}]
        assert states[choice["Default"]]["Result"] == [] and states[choice["Default"]]["ResultPath"] == "$.mesh"
        each = states["Restore Mesh nodes"]
        assert each["Type"] == "Map" and each["ItemsPath"] == "$.plan.mesh" and each["ResultPath"] == "$.mesh"
        assert each["ItemSelector"] == {"plan.$": "$.plan", "part.$": "$$.Map.Item.Value"}
        assert each["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": RESTORE.restore_mesh.failed_state}
        ]
        node = each["ItemProcessor"]["States"]
        task = node[RESTORE.restore_mesh.state]
        assert task["Parameters"] == {"plan.$": "$.plan", "part.$": "$.part"} and task["ResultPath"] == "$.created"
        assert node[task["Next"]]["Parameters"] == {"part.$": "$.part", "created.$": "$.created"}
        assert states[RESTORE.wait_restore.state]["Parameters"]["created"]["mesh.$"] == "$.mesh"
