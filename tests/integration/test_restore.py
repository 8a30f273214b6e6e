"""The restore state machine end to end in the rehearsal: back up, then restore into NEW targets, and check what was
created, what was refused before anything was created, and what a failure leaves behind (nothing, unless kept)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_block_store import EBSBackend

from functions.models.steps import RESTORE
from functions.strategies import (
    BACKUP_ID_TAG,
    INSTANCE_TAG,
    PART_TAG,
    RESTORE_FAILED,
    RESTORE_TAG,
    RESTORE_TARGET_TAG,
    RESTORED,
    STATUS_TAG,
    TOOL_TAG,
    TOOL_VALUE,
)
from rehearsal.bitbucket_simulator import BitbucketSimulator
from rehearsal.runtime import Rehearsal, RunResult
from tests.integration.conftest import PASSWORD, World

MOUNT_POINT = "/var/atlassian/application-data/bitbucket"


# --- helpers --------------------------------------------------------------------------------------------------------


def backed_up(w: World) -> str:
    result = w.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert result.output
    return str(result.output["backup_id"])


def zone(w: World) -> str:
    instance = w.r.client("ec2").describe_instances(InstanceIds=[w.r.resources["ec2_instance"]])
    return str(instance["Reservations"][0]["Instances"][0]["Placement"]["AvailabilityZone"])


def restore(w: World, backup_id: str, target: dict[str, Any], **extra: Any) -> RunResult:
    return w.r.run_restore({"instance": "demo", "backup_id": backup_id, "target": target, **extra})


def tags(described: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in described.get("Tags", described.get("TagList", []))}


def db_instances(w: World) -> dict[str, dict[str, Any]]:
    return {d["DBInstanceIdentifier"]: d for d in w.r.client("rds").describe_db_instances()["DBInstances"]}


def db_clusters(w: World) -> dict[str, dict[str, Any]]:
    return {c["DBClusterIdentifier"]: c for c in w.r.client("rds").describe_db_clusters()["DBClusters"]}


def volumes(w: World) -> dict[str, dict[str, Any]]:
    return {v["VolumeId"]: v for v in w.r.client("ec2").describe_volumes()["Volumes"]}


def attachments(w: World) -> set[tuple[str, str, str]]:
    return {(a["VolumeId"], a["InstanceId"], a["Device"]) for v in volumes(w).values() for a in v["Attachments"]}


def inventory(w: World) -> dict[str, Any]:
    """Everything a restore could create, detach or delete."""
    return {
        "db_instances": sorted(db_instances(w)),
        "db_clusters": sorted(db_clusters(w)),
        "volumes": sorted(volumes(w)),
        "attachments": sorted(attachments(w)),
    }


def restore_notices(w: World) -> list[dict[str, Any]]:
    return [n for n in w.r.notifications() if "restore" in (n["subject"] or "").lower()]


def failure_notices(w: World) -> list[dict[str, Any]]:
    return [n for n in restore_notices(w) if "FAILED" in n["subject"]]


def execution_of(result: RunResult) -> str:
    return result.execution_arn


def stopped_target(w: World, *, tag: bool = True, stop: bool = True) -> str:
    """A second instance in the same zone, to restore the home onto."""
    ec2 = w.r.client("ec2")
    spec: dict[str, Any] = {"ImageId": "ami-12c6146b", "MinCount": 1, "MaxCount": 1, "InstanceType": "m5.large"}
    spec["Placement"] = {"AvailabilityZone": zone(w)}
    if tag:
        spec["TagSpecifications"] = [
            {"ResourceType": "instance", "Tags": [{"Key": RESTORE_TARGET_TAG, "Value": "demo"}]}
        ]
    instance_id = str(ec2.run_instances(**spec)["Instances"][0]["InstanceId"])
    if stop:
        ec2.stop_instances(InstanceIds=[instance_id])
    return instance_id


def instance_state(w: World, instance_id: str) -> str:
    described = w.r.client("ec2").describe_instances(InstanceIds=[instance_id])
    return str(described["Reservations"][0]["Instances"][0]["State"]["Name"])


def fake_mount(w: World, *, fail: bool = False) -> Any:
    """`mount` and `mountpoint` for the local Run Command host (real ones need root and a device)."""
    log = w.r.host.root / ".mount.log"
    mounted = w.r.host.root / ".mounted"
    (w.r.host.bin / "mountpoint").write_text(f'#!/usr/bin/env bash\ngrep -qxF -- "$2" {mounted} 2>/dev/null\n')
    body = (
        'echo "mount: $1: wrong fs type, bad option, bad superblock" >&2; exit 32'
        if fail
        else f'echo "$1" >> {mounted}'
    )
    (w.r.host.bin / "mount").write_text(f'#!/usr/bin/env bash\necho "$@" >> {log}\n{body}\n')
    (w.r.host.bin / "df").write_text(
        '#!/usr/bin/env bash\necho "Filesystem 1024-blocks Used Available Capacity Mounted on"\n'
    )
    for name in ("mountpoint", "mount", "df"):
        (w.r.host.bin / name).chmod(0o755)
    return log


def with_mount_points(w: World) -> None:
    """Configured after the backup (its flush would need the path on the local host)."""
    w.r.configure(home=w.r.instance_config["home"] | {"mount_points": [MOUNT_POINT]})


# --- restoring each strategy ----------------------------------------------------------------------------------------


def test_rds_and_ebs_are_restored_into_new_resources_with_the_originals_settings(world: World) -> None:
    r = world.r
    ec2, rds = r.client("ec2"), r.client("rds")
    # Give the original database settings that moto's restore would NOT copy by itself.
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = ec2.create_security_group(GroupName="bitbucket-db", Description="db", VpcId=vpc)["GroupId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
    rds.create_db_subnet_group(DBSubnetGroupName="bitbucket-db", DBSubnetGroupDescription="db", SubnetIds=subnets[:2])
    rds.create_db_parameter_group(
        DBParameterGroupName="bitbucket-pg", DBParameterGroupFamily="postgres16", Description="x"
    )
    rds.modify_db_instance(
        DBInstanceIdentifier="bitbucket-demo",
        DBParameterGroupName="bitbucket-pg",
        VpcSecurityGroupIds=[group],
        DBSubnetGroupName="bitbucket-db",
        ApplyImmediately=True,
    )
    backup_id = backed_up(world)
    snapshot = next(s for s in r.snapshots(backup_id) if s["kind"] == "ebs-snapshot")
    before = inventory(world)

    result = restore(
        world,
        backup_id,
        {"database": {"instance_id": "restored-bitbucket"}, "home": {"availability_zone": zone(world)}},
    )

    assert result.status == "SUCCEEDED", result.cause
    assert result.states_entered()[-1] == "Restore complete"
    # The database: a new instance, with the original's class, network and parameter group.
    restored = db_instances(world)["restored-bitbucket"]
    original = db_instances(world)["bitbucket-demo"]
    assert restored["DBInstanceStatus"] == "available"
    assert restored["DBInstanceClass"] == original["DBInstanceClass"] == "db.t3.medium"
    assert [g["DBParameterGroupName"] for g in restored["DBParameterGroups"]] == ["bitbucket-pg"]
    assert [g["VpcSecurityGroupId"] for g in restored["VpcSecurityGroups"]] == [group]
    assert restored["DBSubnetGroup"]["DBSubnetGroupName"] == "bitbucket-db"
    assert not restored.get("PubliclyAccessible")
    db_tags = tags(restored)
    assert db_tags[TOOL_TAG] == TOOL_VALUE and db_tags[INSTANCE_TAG] == "demo" and db_tags[PART_TAG] == "database"
    assert db_tags[BACKUP_ID_TAG] == backup_id and db_tags[STATUS_TAG] == RESTORED
    assert db_tags[RESTORE_TAG] == execution_of(result)
    # The home: one new volume from the backup's snapshot, in the asked zone, like the original (gp3, 100 GB).
    new_volumes = {v: d for v, d in volumes(world).items() if v not in before["volumes"]}
    assert len(new_volumes) == 1
    ((volume_id, volume),) = new_volumes.items()
    assert volume["SnapshotId"] == snapshot["id"]
    assert volume["AvailabilityZone"] == zone(world)
    assert (volume["VolumeType"], volume["Size"]) == ("gp3", 100)
    assert volume["Attachments"] == []
    volume_tags = tags(volume)
    assert volume_tags["Device"] == "/dev/xvdf" and volume_tags[PART_TAG] == "home"
    assert volume_tags[STATUS_TAG] == RESTORED and volume_tags[BACKUP_ID_TAG] == backup_id
    assert volume_tags[TOOL_TAG] == TOOL_VALUE and volume_tags[RESTORE_TAG] == execution_of(result)
    # Nothing that existed was detached or deleted; only the two new resources were added.
    after = inventory(world)
    assert after["attachments"] == before["attachments"]
    assert set(before["volumes"]) < set(after["volumes"]) and set(before["db_instances"]) < set(after["db_instances"])
    assert sorted(set(after["db_instances"]) - set(before["db_instances"])) == ["restored-bitbucket"]
    # The result, in the output and in one notification: what was created and what to do next.
    output = result.output or {}
    assert output["status"] == "restored" and output["backup_id"] == backup_id
    assert output["database"]["endpoint"].startswith("restored-bitbucket.") and output["database"]["endpoint"].endswith(
        ":5432"
    )
    assert [v["volume_id"] for v in output["home"]["volumes"]] == [volume_id]
    assert any("bitbucket.properties" in s and output["database"]["endpoint"] in s for s in output["next_steps"])
    assert any(s.startswith("Start Bitbucket") for s in output["next_steps"])
    notices = restore_notices(world)
    assert len(notices) == 1 and "succeeded" in notices[0]["subject"]
    message = notices[0]["message"]
    for expected in (backup_id, output["database"]["endpoint"], volume_id, "bitbucket.properties", "Start Bitbucket"):
        assert expected in message, expected
    assert "demo" in json.dumps(notices[0]["attributes"]["instance"])
    assert PASSWORD not in world.all_text(result)


def test_target_settings_override_the_originals(world: World) -> None:
    backup_id = backed_up(world)
    result = restore(
        world,
        backup_id,
        {
            "database": {"instance_id": "restored-bigger", "instance_class": "db.m5.large"},
            "home": {"availability_zone": "eu-west-1b", "volume_type": "io2", "iops": 4000},
        },
    )
    assert result.status == "SUCCEEDED", result.cause
    assert db_instances(world)["restored-bigger"]["DBInstanceClass"] == "db.m5.large"
    (volume,) = [v for v in volumes(world).values() if tags(v).get(RESTORE_TAG) == execution_of(result)]
    assert (volume["VolumeType"], volume["Iops"], volume["AvailabilityZone"]) == ("io2", 4000, "eu-west-1b")


def test_aurora_is_restored_into_a_new_cluster_with_a_writer(world_factory: Callable[..., World]) -> None:
    world = world_factory(database="amazon-aurora")
    rds = world.r.client("rds")
    rds.create_db_instance(
        DBInstanceIdentifier="bitbucket-demo-1",
        DBClusterIdentifier="bitbucket-demo",
        Engine="aurora-postgresql",
        DBInstanceClass="db.r6g.large",
    )
    backup_id = backed_up(world)
    before = inventory(world)

    # Only the database: a restore may leave a part out.
    result = restore(
        world, backup_id, {"database": {"cluster_id": "restored-new", "writer_instance_id": "restored-new-1"}}
    )

    assert result.status == "SUCCEEDED", result.cause
    cluster = db_clusters(world)["restored-new"]
    assert cluster["Engine"] == "aurora-postgresql" and cluster["Status"] == "available"
    assert tags(cluster)[STATUS_TAG] == RESTORED and tags(cluster)[RESTORE_TAG] == execution_of(result)
    assert [(m["DBInstanceIdentifier"], m["IsClusterWriter"]) for m in cluster["DBClusterMembers"]] == [
        ("restored-new-1", True)
    ]
    writer = db_instances(world)["restored-new-1"]
    assert writer["DBInstanceClass"] == "db.r6g.large", "the original writer's class"
    assert tags(writer)[STATUS_TAG] == RESTORED
    assert "bitbucket-demo" in db_clusters(world) and "bitbucket-demo-1" in db_instances(world)
    assert inventory(world)["volumes"] == before["volumes"], "no home target: no volume"
    output = result.output or {}
    assert output["database"]["cluster_id"] == "restored-new" and "home" not in output
    assert output["database"]["endpoint"] in restore_notices(world)[0]["message"]


def test_home_is_attached_to_a_stopped_instance_and_mounted(world: World) -> None:
    backup_id = backed_up(world)
    target = stopped_target(world)
    with_mount_points(world)
    log = fake_mount(world)
    before = inventory(world)

    result = restore(world, backup_id, {"home": {"attach_to_instance_id": target, "mount": True}})

    assert result.status == "SUCCEEDED", result.cause
    assert RESTORE.mount_home.state in result.states_entered()
    created = [v for v in volumes(world).values() if tags(v).get(RESTORE_TAG) == execution_of(result)]
    assert [(a["InstanceId"], a["Device"]) for v in created for a in v["Attachments"]] == [(target, "/dev/xvdf")]
    assert set(before["attachments"]) <= set(attachments(world)), "existing attachments are untouched"
    assert instance_state(world, target) == "running", "mounting through SSM needs the instance running"
    assert log.read_text().split() == [MOUNT_POINT]
    output = result.output or {}
    assert output["home"]["attached_to"] == target and output["home"]["mounted"] == [MOUNT_POINT]
    assert f"mounted at {MOUNT_POINT}" in restore_notices(world)[0]["message"]


def test_attach_without_mount_leaves_the_instance_stopped(world: World) -> None:
    backup_id = backed_up(world)
    target = stopped_target(world)
    result = restore(world, backup_id, {"home": {"attach_to_instance_id": target}})
    assert result.status == "SUCCEEDED", result.cause
    assert RESTORE.mount_home.state not in result.states_entered()
    assert instance_state(world, target) == "stopped"
    assert world.r.host.commands == [], "no Run Command without mount"
    assert any(s.startswith(f"Start {target} and mount") for s in (result.output or {})["next_steps"])


# --- refusals: before anything is created ---------------------------------------------------------------------------


class RefusalWorld:
    def __init__(self, world: World, backup_id: str) -> None:
        self.world, self.backup_id = world, backup_id


@pytest.fixture(scope="class")
def refusals() -> Iterator[RefusalWorld]:
    """One world and one backup for every refusal: a refusal creates nothing, so they cannot disturb each other."""
    sim = BitbucketSimulator(password=PASSWORD, drain_seconds=0.05).start()
    r = Rehearsal(sim.url, password=PASSWORD).__enter__()
    try:
        world = World(sim, r)
        yield RefusalWorld(world, backed_up(world))
    finally:
        r.__exit__(None, None, None)
        sim.stop()


def _running_target(w: World) -> dict[str, Any]:
    return {"home": {"attach_to_instance_id": stopped_target(w, stop=False)}}


def _untagged_target(w: World) -> dict[str, Any]:
    return {"home": {"attach_to_instance_id": stopped_target(w, tag=False)}}


def _occupied_device(w: World) -> dict[str, Any]:
    target = stopped_target(w)
    ec2 = w.r.client("ec2")
    volume = ec2.create_volume(AvailabilityZone=zone(w), Size=10)["VolumeId"]
    ec2.attach_volume(VolumeId=volume, InstanceId=target, Device="/dev/xvdf")
    return {"home": {"attach_to_instance_id": target}}


REFUSALS: list[tuple[str, Any, Any, str, str]] = [
    # (case, backup id (or a function of the real one), target (or a function of the world), error, message part)
    (
        "existing-db",
        None,
        {"database": {"instance_id": "bitbucket-demo"}},
        "RestoreRefused",
        "'bitbucket-demo' is already in use",
    ),
    (
        "unknown-backup",
        "demo-20200101-000000",
        None,
        "RestoreRefused",
        "no backup demo-20200101-000000 of instance 'demo'",
    ),
    ("other-instance", "prod-20261123-082818", None, "RestoreRefused", "is not a backup of instance 'demo'"),
    ("prefix-lookalike", "demo-eu-20261123-082818", None, "RestoreRefused", "is not a backup of instance 'demo'"),
    ("malformed-id", "latest", None, "RestoreRefused", "'latest' is not a backup id"),
    ("running-target", None, _running_target, "RestoreRefused", "is 'running', not 'stopped'"),
    ("untagged-target", None, _untagged_target, "RestoreRefused", f"does not carry the tag {RESTORE_TARGET_TAG}=demo"),
    ("occupied-device", None, _occupied_device, "RestoreRefused", "device /dev/xvdf of instance"),
    (
        "missing-target",
        None,
        {"home": {"attach_to_instance_id": "i-00000000000000000"}},
        "RestoreRefused",
        "target instance i-00000000000000000 does not exist",
    ),
    (
        "wrong-zone",
        None,
        lambda w: {"home": {"availability_zone": "eu-west-1c", "attach_to_instance_id": stopped_target(w)}},
        "RestoreRefused",
        "volumes can only be attached in the instance's zone",
    ),
    (
        "aurora-fields-on-rds",
        None,
        {"database": {"cluster_id": "x", "writer_instance_id": "y"}},
        "RestoreRefused",
        "are for Aurora",
    ),
    (
        "mount-unconfigured",
        None,
        lambda w: {"home": {"attach_to_instance_id": stopped_target(w), "mount": True}},
        "RestoreRefused",
        "home.mount_points is not configured",
    ),
    (
        "typo-in-target",
        None,
        {"database": {"instance_id": "x", "instance_klass": "db.t3.small"}},
        "InvalidInput",
        "instance_klass",
    ),
    ("empty-target", None, {}, "InvalidInput", "nothing to restore"),
]


class TestRefusals:
    @pytest.mark.parametrize(("case", "backup", "target", "error", "message"), REFUSALS, ids=[c[0] for c in REFUSALS])
    def test_refused_before_anything_is_created(
        self, refusals: RefusalWorld, case: str, backup: Any, target: Any, error: str, message: str
    ) -> None:
        w = refusals.world
        wanted = target(w) if callable(target) else target
        if wanted is None:
            wanted = {"database": {"instance_id": "restored-bitbucket"}, "home": {"availability_zone": zone(w)}}
        before, notices = inventory(w), len(failure_notices(w))

        result = restore(w, backup or refusals.backup_id, wanted)

        assert result.status == "FAILED", case
        assert result.error == error, result.cause
        assert message in (result.cause or ""), result.cause
        assert "Failed: validate" in result.states_entered()
        assert inventory(w) == before, "a refusal must create, detach or delete nothing"
        new = failure_notices(w)[notices:]
        assert len(new) == 1 and "at step validate" in new[0]["subject"]
        assert message in new[0]["message"] and "nothing was created" in new[0]["message"]

    def test_incomplete_backup_is_refused(self, refusals: RefusalWorld) -> None:
        w = refusals.world
        snapshot = next(s for s in w.r.snapshots(refusals.backup_id) if s["kind"] == "ebs-snapshot")
        ec2 = w.r.client("ec2")
        ec2.create_tags(Resources=[snapshot["id"]], Tags=[{"Key": STATUS_TAG, "Value": "in-progress"}])
        try:
            before = inventory(w)
            result = restore(w, refusals.backup_id, {"database": {"instance_id": "restored-bitbucket"}})
            assert result.status == "FAILED" and result.error == "RestoreRefused"
            assert f"backup {refusals.backup_id} is not complete ({snapshot['id']} is in-progress" in (
                result.cause or ""
            )
            assert inventory(w) == before
        finally:
            ec2.create_tags(Resources=[snapshot["id"]], Tags=[{"Key": STATUS_TAG, "Value": "complete"}])

    def test_unknown_backup_lists_the_available_ones(self, refusals: RefusalWorld) -> None:
        result = restore(refusals.world, "demo-20200101-000000", {"database": {"instance_id": "restored-bitbucket"}})
        assert f"available: {refusals.backup_id}" in (result.cause or "")


# --- failures: what the restore created is removed (or kept), one notice ------------------------------------------


def failing_create_volume(after: int = 0) -> Any:
    """moto's CreateVolume fails from call number `after + 1` on, like AWS out of capacity in a zone."""
    original = EBSBackend.create_volume
    calls = {"n": 0}

    def create_volume(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after:
            raise EC2ClientError("InsufficientVolumeCapacity", "There is not enough capacity to fulfill your request")
        return original(self, *args, **kwargs)

    return mock.patch.object(EBSBackend, "create_volume", create_volume)


def test_failure_mid_restore_deletes_the_database_it_created_and_notifies_once(world: World) -> None:
    backup_id = backed_up(world)
    before = inventory(world)
    with failing_create_volume():
        result = restore(
            world,
            backup_id,
            {"database": {"instance_id": "restored-bitbucket"}, "home": {"availability_zone": zone(world)}},
        )

    assert result.status == "FAILED"
    assert result.error == "RestoreFailed"
    assert "restore-home: CreateVolume from snap-" in (result.cause or "") and "InsufficientVolumeCapacity" in (
        result.cause or ""
    )
    assert "Failed: restore-home" in result.states_entered()
    assert RESTORE.restore_database.state in result.states_entered(), "the database had been restored first"
    assert inventory(world) == before, "the restored database is deleted again; nothing else touched"
    (notice,) = failure_notices(world)
    assert "at step restore-home" in notice["subject"]
    assert "deleted DB instance restored-bitbucket" in notice["message"]


def test_keep_on_failure_keeps_what_was_created_for_inspection(world: World) -> None:
    backup_id = backed_up(world)
    with failing_create_volume():
        result = restore(
            world,
            backup_id,
            {"database": {"instance_id": "restored-bitbucket"}, "home": {"availability_zone": zone(world)}},
            keep_on_failure=True,
        )
    assert result.status == "FAILED"
    kept = db_instances(world)["restored-bitbucket"]
    assert tags(kept)[STATUS_TAG] == RESTORE_FAILED
    (notice,) = failure_notices(world)
    assert "kept DB instance restored-bitbucket for inspection" in notice["message"]


def test_volumes_of_a_half_finished_step_are_found_by_their_tag_and_deleted(world: World) -> None:
    world.r.configure(home=world.r.instance_config["home"] | {"volumes": ["/dev/xvdf", "/dev/xvdg"]})
    backup_id = backed_up(world)
    before = inventory(world)
    with failing_create_volume(after=1):
        result = restore(world, backup_id, {"home": {"availability_zone": zone(world)}})
    assert result.status == "FAILED" and "Failed: restore-home" in result.states_entered()
    assert inventory(world) == before
    (notice,) = failure_notices(world)
    text = notice["message"].rsplit("\n\n", 1)[0]  # the readable part, without the JSON copy
    assert text.count("deleted volume vol-") == 1, text


def test_failed_mount_detaches_only_what_it_attached_and_stops_the_instance_it_started(world: World) -> None:
    backup_id = backed_up(world)
    target = stopped_target(world)
    with_mount_points(world)
    fake_mount(world, fail=True)
    before = inventory(world)

    result = restore(world, backup_id, {"home": {"attach_to_instance_id": target, "mount": True}})

    assert result.status == "FAILED" and result.error == "HostCommandFailed"
    assert "wrong fs type" in (result.cause or "")
    assert inventory(world) == before, "the restored volume is detached and deleted; the target's own root volume stays"
    assert instance_state(world, target) == "stopped", "the restore started it, so it stops it again"
    (notice,) = failure_notices(world)
    assert "at step mount-home" in notice["subject"]
    for expected in (f"stopped {target} again", "detached volume vol-", "deleted volume vol-"):
        assert expected in notice["message"], notice["message"]


def test_the_execution_input_and_history_hold_no_secret(world: World) -> None:
    backup_id = backed_up(world)
    result = restore(world, backup_id, {"database": {"instance_id": "restored-bitbucket"}})
    assert result.status == "SUCCEEDED", result.cause
    text = json.dumps(result.history, default=str) + json.dumps(world.r.notifications(), default=str)
    assert PASSWORD not in text and "not-a-real-secret" not in text
