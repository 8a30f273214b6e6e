"""Bitbucket Data Center with Mesh nodes: every node's home copied under the one lock, beside the shared home and the
database, as parts of one backup (issue 14, item 1)."""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from functions.models.steps import BACKUP
from functions.strategies import COMPLETE
from tests.integration.conftest import World, assert_failed_cleanly, backup_id_of

NODES = ["mesh-node1", "mesh-node2", "mesh-node3"]


def _copies(w: World) -> list[tuple[str, float, float]]:
    """The Mesh nodes' copy invocations (not their warm-ups): part, start, end."""
    return [
        (call.event["part"], call.started, call.ended)
        for call in w.r.runtime.invocations
        if call.handler == BACKUP.copy_mesh.handler and not call.event.get("warm")
    ]


def _call(w: World, handler: str) -> tuple[float, float]:
    """When the one step invocation of `handler` (lock, unlock) started and ended."""
    (call,) = [c for c in w.r.runtime.invocations if c.handler == handler and not c.event.get("warm")]
    return call.started, call.ended


def test_ebs_mesh_nodes_are_snapshotted_at_once_under_the_one_lock(world_factory: Callable[..., World]) -> None:
    w = world_factory(mesh_nodes=3)
    result = w.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    backup_id = backup_id_of(result)
    assert backup_id is not None
    found = w.r.snapshots(backup_id)
    assert sorted(s["part"] for s in found) == sorted(["home", "database", *NODES])
    assert all(s["status"] == COMPLETE for s in found), found
    # Each node's snapshot is of its configured volume (/dev/xvdf), not of the one beside it, and named after it.
    ec2 = w.r.client("ec2")
    for part in NODES:
        (snapshot,) = [s for s in found if s["part"] == part]
        described = ec2.describe_snapshots(SnapshotIds=[snapshot["id"]])["Snapshots"][0]
        assert described["VolumeId"] == w.r.resources[f"{part}_volumes"]["/dev/xvdf"]
        tags = {t["Key"]: t["Value"] for t in described["Tags"]}
        assert tags["Name"] == f"{backup_id}-{part}/dev/xvdf" and tags["bitbucket-backup:part"] == part
    # One invocation per node, all under the lock, and at once (each began before any other ended).
    copies = _copies(w)
    assert sorted(part for part, _, _ in copies) == NODES
    assert max(start for _, start, _ in copies) < min(end for _, _, end in copies), copies
    locked, unlocked = _call(w, BACKUP.lock.handler)[1], _call(w, BACKUP.unlock.handler)[0]
    assert all(locked < start and end < unlocked for _, start, end in copies), (locked, copies, unlocked)
    # Progress counts every part: the home, the database, the three nodes (reported once, together), then 100.
    progress = w.sim.progress_history
    assert progress == sorted(progress) and progress[-2:] == [90, 100], progress
    assert 10 + 80 * 3 // 5 in progress or 10 + 80 * 4 // 5 in progress or 10 + 80 * 5 // 5 in progress, progress
    assert w.r.cold_starts_while_locked() == [], "each node's copy ran in an environment warmed before the lock"
    assert not w.r.iam.denied


def test_rsync_mesh_nodes_are_archived_with_their_repositories(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    w = world_factory(mesh_nodes=2, mesh_strategy="rsync")
    result = w.r.run_backup(timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    backup_id = backup_id_of(result)
    archives = {a["part"]: a for a in result.output["archive"]}
    assert set(archives) == {"mesh-node1", "mesh-node2"}
    s3 = w.r.client("s3")
    for part, archive in archives.items():
        assert archive["key"] == f"demo/{backup_id}/{backup_id}-{part}.tar.gz"
        local = tmp_path / f"{part}.tar.gz"
        s3.download_file(archive["bucket"], archive["key"], str(local))
        with tarfile.open(local) as tar:
            names = tar.getnames()
        # The node's own home: its repositories, and none of the other node's files.
        home = w.r.resources[f"{part}_home"]
        repo = next(p for p in home.root.rglob("HEAD") if "repositories" in str(p))
        assert f"home/{repo.relative_to(home.root)}" in names, names[:20]
    commands = [c for c in w.r.host.commands if ".sh rsync-home " in c.script]
    for part in archives:
        on_node = [c for c in commands if c.instance_id == w.r.resources[f"{part}_host"]]
        assert len(on_node) == 2, "a live pass before the lock and a locked one"
    assert not w.r.iam.denied


def test_a_mesh_node_that_fails_fails_the_run_and_nothing_of_it_is_kept(world_factory: Callable[..., World]) -> None:
    w = world_factory(mesh_nodes=2, mesh_strategy="rsync")
    node2 = w.r.resources["mesh-node2_host"]
    passes: list[str] = []

    def time_out_the_locked_pass(instance_id: str, script: str) -> None:
        if instance_id == node2 and ".sh rsync-home " in script:
            passes.append(script)
            if len(passes) == 2:  # the locked pass
                w.r.host.faults[node2] = "TimedOut"

    w.r.host.before_run.append(time_out_the_locked_pass)
    result = w.r.run_backup(timeout=300)
    w.r.host.faults.pop(node2, None)
    assert_failed_cleanly(w, result, BACKUP.copy.label)
    assert "copy mesh-node2: rsync (locked)" in str(result.cause) and "TimedOut" in str(result.cause)
    # Locked, then unlocked by the failure path (a branch's report still in flight may reach Bitbucket after the
    # unlock: it is refused, the task being cancelled).
    lock_events = [name for name in w.sim.event_names() if name in ("locked", "unlocked")]
    assert lock_events == ["locked", "unlocked"] and not w.sim.locked
    backup_id = backup_id_of(result)
    # The shared home's snapshot and the other node's copy are not kept as a backup; no archive was made.
    assert not [s for s in w.r.snapshots(backup_id) if s["status"] == COMPLETE]
    assert not w.r.archives()


def test_each_ebs_mesh_node_is_restored_as_new_volumes_of_its_own(world_factory: Callable[..., World]) -> None:
    w = world_factory(mesh_nodes=2)
    backup = w.r.run_backup()
    backup_id = backup_id_of(backup)
    zone = w.r.resources["zone"]
    target = {"mesh": {"node1": {"availability_zone": zone}, "node2": {"availability_zone": zone}}}
    result = w.r.run_restore({"instance": "demo", "backup_id": backup_id, "target": target})
    assert result.status == "SUCCEEDED", result.cause
    ec2 = w.r.client("ec2")
    for part in ("mesh-node1", "mesh-node2"):
        (volume,) = result.output[part]["volumes"]
        (snapshot,) = [s for s in w.r.snapshots(backup_id) if s["part"] == part]
        assert volume["snapshot_id"] == snapshot["id"]
        described = ec2.describe_volumes(VolumeIds=[volume["volume_id"]])["Volumes"][0]
        tags = {t["Key"]: t["Value"] for t in described["Tags"]}
        assert tags["bitbucket-backup:part"] == part and tags["bitbucket-backup:status"] == "restored"
    assert "home" not in result.output and "database" not in result.output, "only the nodes were asked for"
    steps = "\n".join(result.output["next_steps"])
    assert "Mesh node node1's (stopped) host" in steps and "Mesh node node2's (stopped) host" in steps
    # A node's volumes are new volumes only: attaching and mounting are the shared home's.
    refused = w.r.run_restore(
        {
            "instance": "demo",
            "backup_id": backup_id,
            "target": {"mesh": {"node1": {"attach_to_instance_id": zone_host(w)}}},
        }
    )
    assert refused.status == "FAILED" and "target.mesh.node1.attach_to_instance_id does not apply" in str(refused.cause)
    unknown = w.r.run_restore(
        {"instance": "demo", "backup_id": backup_id, "target": {"mesh": {"node9": {"availability_zone": zone}}}}
    )
    assert unknown.status == "FAILED" and "has no Mesh node 'node9'" in str(unknown.cause)


def zone_host(w: World) -> str:
    return str(w.r.resources["mesh-node1_host"])


def test_each_rsync_mesh_node_is_extracted_into_its_own_directory(world_factory: Callable[..., World]) -> None:
    w = world_factory(mesh_nodes=2, mesh_strategy="rsync", home="none")
    backup = w.r.run_backup(timeout=300)
    assert backup.status == "SUCCEEDED", backup.cause
    backup_id = backup_id_of(backup)
    root = w.r.host.root
    target = {"mesh": {"node1": {"path": str(root / "restored-1")}, "node2": {"path": str(root / "restored-2")}}}
    result = w.r.run_restore({"instance": "demo", "backup_id": backup_id, "target": target}, timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    for n in (1, 2):
        home = w.r.resources[f"mesh-node{n}_home"]
        restored = root / f"restored-{n}" / "home"
        originals = {str(p.relative_to(home.root)) for p in home.root.rglob("*") if p.is_file()}
        copied = {str(p.relative_to(restored)) for p in restored.rglob("*") if p.is_file()}
        # The node's own files (less the seed's excludes: caches, logs, the lock), its git objects all there.
        objects = {f for f in originals if "/objects/" in f or f.endswith("/HEAD")}
        assert objects and objects <= copied <= originals, (sorted(objects - copied), sorted(copied - originals))
        assert result.output[f"mesh-node{n}"]["path"] == str(root / f"restored-{n}")
    # Outside the instance's restore roots, a node's directory is refused before anything is created.
    outside = w.r.run_restore(
        {"instance": "demo", "backup_id": backup_id, "target": {"mesh": {"node1": {"path": "/srv/elsewhere/x"}}}}
    )
    assert outside.status == "FAILED" and "target.mesh.node1.path /srv/elsewhere/x is not below a restore root" in str(
        outside.cause
    )


def test_a_failed_node_restore_removes_what_the_restore_extracted_and_nothing_else(
    world_factory: Callable[..., World],
) -> None:
    w = world_factory(mesh_nodes=2, mesh_strategy="rsync", home="none")
    backup_id = backup_id_of(w.r.run_backup(timeout=300))
    root = w.r.host.root
    first, second = root / "restored-1", root / "restored-2"

    def fill_the_second_directory(instance_id: str, script: str) -> None:
        # Somebody puts a file into node2's directory after the validate step checked that it was empty.
        if " extract --archive " in script and f"'{second}'" in script:
            second.mkdir(exist_ok=True)
            (second / "someone-elses.txt").write_text("not the restore's\n")

    w.r.host.before_run.append(fill_the_second_directory)
    target = {"mesh": {"node1": {"path": str(first)}, "node2": {"path": str(second)}}}
    result = w.r.run_restore({"instance": "demo", "backup_id": backup_id, "target": target}, timeout=300)
    assert result.status == "FAILED", result.output
    failures = [n for n in w.r.notifications() if "restore FAILED" in (n["subject"] or "")]
    assert len(failures) == 1, w.r.notifications()
    message = failures[0]["message"]
    assert "mesh-node1: removed what this restore extracted into" in message, message
    assert not list(first.rglob("*.pack")) and not (first / "home").exists(), "node1's extraction was removed"
    assert (second / "someone-elses.txt").read_text() == "not the restore's\n", "nothing of anyone else's removed"


def test_mesh_nodes_are_copied_to_the_dr_region_and_pruned_like_any_part(world_factory: Callable[..., World]) -> None:
    """No shared home on EBS here: the copy and prune permissions come from the nodes' snapshots alone."""
    from tests.integration.test_dr_copies import DEPLOYED, PART_TAG, STATUS_TAG, _ebs_copies, _tags, _with_copies

    w = world_factory(mesh_nodes=2, home="none", deployed=DEPLOYED)
    _with_copies(w)
    ids = []
    for n in range(3):  # keep_backups is 2: the third run prunes the first, here and in the DR region
        if n:
            time.sleep(1.05)  # backup ids have a resolution of one second
        result = w.r.run_backup()
        assert result.status == "SUCCEEDED", result.cause
        ids.append(backup_id_of(result))
    copies = _ebs_copies()
    assert sorted((_tags(c)["bitbucket-backup:backup-id"], _tags(c)[PART_TAG]) for c in copies) == sorted(
        (backup_id, part) for backup_id in ids[1:] for part in ("mesh-node1", "mesh-node2")
    )
    assert {_tags(c)[STATUS_TAG] for c in copies} == {COMPLETE}
    assert w.r.snapshots(ids[0]) == [], "the oldest backup's node snapshots were pruned"
    assert sorted(s["part"] for s in w.r.snapshots(ids[2])) == ["database", "mesh-node1", "mesh-node2"]
    assert not w.r.iam.denied


def test_a_node_whose_volume_is_not_attached_fails_the_run_before_the_lock(world_factory: Callable[..., World]) -> None:
    w = world_factory(mesh_nodes=2)
    nodes = w.r.instance_config["mesh_nodes"]
    nodes[1]["home"]["volumes"] = ["/dev/xvdz"]
    w.r.configure(mesh_nodes=nodes)
    result = w.r.run_backup()
    assert result.status == "FAILED"
    assert "mesh-node2: volume /dev/xvdz is not attached to" in str(result.cause), result.cause
    assert "locked" not in w.sim.event_names(), "checked while Bitbucket was live"
    assert len(w.failure_notifications()) == 1


def test_the_command_line_restores_the_nodes_it_is_given(
    world_factory: Callable[..., World], capsys: pytest.CaptureFixture[str]
) -> None:
    from bitbucket_backup_cli.base import OK, USAGE
    from bitbucket_backup_cli.main import main
    from rehearsal.fake_account import REGION
    from rehearsal.serve import LocalEndpoint

    w = world_factory(mesh_nodes=2)
    backup_id = backup_id_of(w.r.run_backup())
    zone = w.r.resources["zone"]
    with LocalEndpoint(w.r) as endpoint:
        assert main(["--endpoint-url", endpoint.url, "--region", REGION, "list", "--json"]) == OK
        (row,) = [r for r in json.loads(capsys.readouterr().out)["backups"] if r["backup_id"] == backup_id]
        assert row["parts"] == ["home", "database", "mesh-node1", "mesh-node2"] and row["status"] == "complete"
        base = ["--endpoint-url", endpoint.url, "--region", REGION, "restore", str(backup_id), "--instance", "demo"]
        for wrong, said in (
            (["--only", "mesh"], "give at least one"),
            (["--only", "mesh", "--mesh-node", "node9=" + zone], "has no Mesh node 'node9'"),
            (["--only", "mesh", "--mesh-node", "node1=/srv/x"], "node node1 is on EBS: give an availability zone"),
        ):
            assert main([*base, *wrong]) == USAGE, wrong
            assert said in capsys.readouterr().err
        code = main([*base, "--only", "mesh", "--mesh-node", f"node2={zone}", "--wait", "--poll-interval", "0.05"])
        out = capsys.readouterr().out
        assert code == OK, out
    assert "Mesh node node2's volumes" in out and "node1" not in out
    restored = [v for v in w.r.client("ec2").describe_volumes()["Volumes"] if "Tags" in v]
    parts = {t["Value"] for v in restored for t in v["Tags"] if t["Key"] == "bitbucket-backup:part"}
    assert parts == {"mesh-node2"}


def test_the_drill_restores_every_node_and_fscks_its_repositories(world_factory: Callable[..., World]) -> None:
    from functions.drill import VERIFIED_TAG

    w = world_factory(drill=True, home="none", mesh_nodes=2, mesh_strategy="rsync")
    backup_id = backup_id_of(w.r.run_backup(timeout=300))
    result = w.r.run_drill()
    assert result.status == "SUCCEEDED", result.cause
    out = result.output
    assert out is not None and out["verified"] is True
    checked = {entry["home"]: entry for entry in out["result"]["mesh"]}
    drill_root = w.r.host.root / "drill"
    for n in (1, 2):
        entry = checked[f"{drill_root}/{backup_id}-mesh-node{n}/home"]
        ids = w.r.resources[f"mesh-node{n}_home"].repo_ids
        assert sorted(entry["fsck_ok"], key=int) == [str(i) for i in sorted(ids)] and entry["checked"] == len(ids)
        assert not (drill_root / f"{backup_id}-mesh-node{n}").exists(), "the drill's copy of the node is removed"
    assert any("mesh-node1: git fsck --full" in c for c in out["checks"])
    assert {s["verified"] for s in w.r.snapshots(backup_id)} == {f"verified {out['date']}"}
    assert all(a["tags"][VERIFIED_TAG] == out["date"] for a in w.r.archives())


def test_a_drill_fails_on_a_corrupt_node_repository_and_says_which(world_factory: Callable[..., World]) -> None:
    from tests.host.test_host_script import _corrupt_one_object

    w = world_factory(drill=True, home="none", mesh_nodes=2, mesh_strategy="rsync")
    node = w.r.resources["mesh-node2_home"]
    _corrupt_one_object(node.repo(2))  # before the backup: the copy carries it, as a bad disk's would
    backup_id = backup_id_of(w.r.run_backup(timeout=300))
    result = w.r.run_drill()
    assert result.status == "FAILED"
    assert f"Mesh node home {w.r.host.root}/drill/{backup_id}-mesh-node2/home: repository 2" in str(result.cause)
    verdicts = {s["part"]: s["verified"] or "" for s in w.r.snapshots(backup_id)}
    assert set(verdicts) == {"database", "mesh-node1", "mesh-node2"}, verdicts
    assert all(v.startswith("drill failed") for v in verdicts.values()), verdicts
    assert not list((w.r.host.root / "drill").glob(f"{backup_id}-*")), "the drill's copies are removed"


def test_a_backup_made_before_a_node_was_added_stays_restorable(world_factory: Callable[..., World]) -> None:
    w = world_factory(mesh_nodes=2)
    nodes = w.r.instance_config["mesh_nodes"]
    w.r.configure(mesh_nodes=nodes[:1])  # node2 joins the cluster later
    backup_id = backup_id_of(w.r.run_backup())
    assert sorted(s["part"] for s in w.r.snapshots(backup_id)) == ["database", "home", "mesh-node1"]
    w.r.configure(mesh_nodes=nodes)
    zone = w.r.resources["zone"]
    result = w.r.run_restore(
        {"instance": "demo", "backup_id": backup_id, "target": {"mesh": {"node1": {"availability_zone": zone}}}}
    )
    assert result.status == "SUCCEEDED", result.cause
    absent = w.r.run_restore(
        {"instance": "demo", "backup_id": backup_id, "target": {"mesh": {"node2": {"availability_zone": zone}}}}
    )
    assert absent.status == "FAILED" and f"backup {backup_id} has no mesh-node2 copy" in str(absent.cause)
