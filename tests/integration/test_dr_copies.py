"""Disaster-recovery copies: the backup's snapshots copied to a second region (moto, two regions), tagged like the
originals, marked complete by finalize, pruned by the target's own keep_backups; a copy ending in `error` fails the
run visibly while the local backup stays complete; a copy refused for a limit is retried."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import boto3
import pytest
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_block_store import EBSBackend

from functions.models.steps import BACKUP
from functions.strategies import (
    BACKUP_ID_TAG,
    COMPLETE,
    COPY_OF_TAG,
    INSTANCE_TAG,
    PART_TAG,
    SOURCE_REGION_TAG,
    STATUS_TAG,
    TOOL_TAG,
    TOOL_VALUE,
)
from rehearsal.fake_account import REGION
from tests.integration.conftest import World, backup_id_of, fail_backend

DR = "eu-central-1"


def _with_copies(world: World, **target: Any) -> dict[str, Any]:
    key = boto3.client("kms", region_name=DR).create_key(Description="DR copies")["KeyMetadata"]["Arn"]
    copy = {"region": DR, "kms_key_id": key, **target}
    world.r.configure(copies=[copy])
    return copy


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", resource.get("TagList", []))}


def _ebs_copies() -> list[dict[str, Any]]:
    found = boto3.client("ec2", region_name=DR).describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": f"tag:{TOOL_TAG}", "Values": [TOOL_VALUE]}]
    )["Snapshots"]
    return sorted(found, key=lambda s: _tags(s)[BACKUP_ID_TAG])


def _rds_copies() -> list[dict[str, Any]]:
    found = boto3.client("rds", region_name=DR).describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    return sorted((s for s in found if _tags(s).get(TOOL_TAG) == TOOL_VALUE), key=lambda s: s["DBSnapshotIdentifier"])


# The stack as deployed for copies into DR (its roles' permissions); the test's real key replaces the placeholder.
DEPLOYED = {"copies": [{"region": DR, "kms_key_id": "arn:aws:kms:eu-central-1:123456789012:key/placeholder"}]}


@pytest.fixture
def dr(world_factory: Callable[..., World]) -> World:
    world = world_factory(deployed=DEPLOYED)
    _with_copies(world)
    return world


def test_copies_in_the_other_region_carry_the_catalog_tags_and_are_complete(dr: World) -> None:
    result = dr.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    backup_id = backup_id_of(result)
    originals = {s["id"]: s for s in dr.r.snapshots(backup_id)}
    assert {s["status"] for s in originals.values()} == {COMPLETE}

    (home,) = _ebs_copies()
    tags = _tags(home)
    home_original = next(s for s in originals.values() if s["kind"] == "ebs-snapshot")
    assert tags[BACKUP_ID_TAG] == backup_id and tags[PART_TAG] == "home" and tags[STATUS_TAG] == COMPLETE
    assert tags[COPY_OF_TAG] == home_original["id"] and tags[SOURCE_REGION_TAG] == REGION
    assert tags["Device"] == "/dev/xvdf"

    (database,) = _rds_copies()
    assert database["DBSnapshotIdentifier"] == backup_id
    assert f":rds:{DR}:" in database["DBSnapshotArn"]
    db_tags = _tags(database)
    assert db_tags[STATUS_TAG] == COMPLETE and db_tags[PART_TAG] == "database" and db_tags[COPY_OF_TAG] == backup_id

    assert result.output is not None
    assert {(c["target"], c["copy_of"]) for c in result.output["copies"]} == {(DR, i) for i in originals}
    entered = result.states_entered()
    assert (
        entered.index(BACKUP.unlock.state)
        < entered.index(BACKUP.copy_regions.state)
        < entered.index(BACKUP.finalize.state)
    )
    assert not dr.sim.locked


def test_copies_are_pruned_by_their_own_keep_backups(dr: World) -> None:
    _with_copies(dr, keep_backups=1)
    dr.r.configure(keep_backups=3)
    made = []
    for _ in range(3):
        result = dr.r.run_backup()
        assert result.status == "SUCCEEDED", result.cause
        made.append(backup_id_of(result))
        time.sleep(1.05)  # backup ids have a resolution of one second
    assert len(set(made)) == 3
    # Locally all three are kept; in the DR region only the newest.
    assert {s["backup_id"] for s in dr.r.snapshots()} == set(made)
    assert [_tags(s)[BACKUP_ID_TAG] for s in _ebs_copies()] == [made[-1]]
    assert [s["DBSnapshotIdentifier"] for s in _rds_copies()] == [made[-1]]
    assert result.output is not None
    assert result.output["pruned"] == [f"{made[1]} in {DR}"]


def test_a_copy_ending_in_error_fails_the_run_visibly_and_keeps_the_local_backup(dr: World) -> None:
    original_copy = EBSBackend.copy_snapshot

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        snapshot = original_copy(self, *args, **kwargs)
        snapshot.status = "error"  # what a copy whose destination key is unusable ends in
        return snapshot

    with mock.patch.object(EBSBackend, "copy_snapshot", broken):
        result = dr.r.run_backup()
    assert result.status == "FAILED"
    assert result.error == "CopyFailed"
    assert "Failed: copy-regions" in result.states_entered()
    backup_id = backup_id_of(result)
    notes = dr.failure_notifications()
    assert len(notes) == 1, notes
    message = notes[0]["message"]
    assert "at step copy-regions" in notes[0]["subject"]
    home_original = next(s for s in dr.r.snapshots(backup_id) if s["kind"] == "ebs-snapshot")
    assert f"of {home_original['id']} (home) to {DR} ended in state 'error'" in message
    assert "unlocked before the failure" in message
    assert not dr.sim.locked and 100 in dr.sim.progress_history
    # The local backup is good and complete; the broken copy (and its unfinished sibling) is gone from the DR region.
    assert {s["status"] for s in dr.r.snapshots(backup_id)} == {COMPLETE}
    assert len(dr.r.snapshots(backup_id)) == 2
    assert _ebs_copies() == [] and _rds_copies() == []
    assert dr.r.run_record() is None


def test_a_copy_refused_for_a_limit_is_retried_with_back_off(dr: World) -> None:
    error = EC2ClientError("ResourceLimitExceeded", "Too many snapshot copies in progress")
    with fail_backend(EBSBackend, "copy_snapshot", error, times=1):
        result = dr.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    refused = [i for i in dr.r.runtime.invocations if i.handler == BACKUP.copy_regions.handler and i.error]
    assert [i.error for i in refused] == ["AwsRateLimited"]
    assert len(_ebs_copies()) == 1 and len(_rds_copies()) == 1


def test_throttling_of_the_copy_call_is_retried(dr: World) -> None:
    error = EC2ClientError("RequestLimitExceeded", "Request limit exceeded.")
    with fail_backend(EBSBackend, "copy_snapshot", error, times=1):
        result = dr.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert [_tags(s)[STATUS_TAG] for s in _ebs_copies()] == [COMPLETE]


# Another deployment of this tool (the same stack name, in the DR region) backs up an instance of the same name there.
OTHER_DEPLOYMENT = f"123456789012/{DR}/BitbucketDiyBackup"


def _other_deployments_backups(count: int) -> list[str]:
    """`count` complete backups (EBS and RDS snapshots) of another deployment's instance 'demo', made in DR."""
    ec2, rds = boto3.client("ec2", region_name=DR), boto3.client("rds", region_name=DR)
    volume = ec2.create_volume(AvailabilityZone=f"{DR}a", Size=8)["VolumeId"]
    rds.create_db_instance(
        DBInstanceIdentifier="other-demo-db",
        DBInstanceClass="db.t3.medium",
        Engine="postgres",
        AllocatedStorage=10,
        MasterUsername="bitbucket",
        MasterUserPassword="not-a-real-secret-1",
    )
    made = []
    for day in range(1, count + 1):
        backup_id = f"demo-2020010{day}-000000"
        for part in ("home", "database"):
            tags = {
                TOOL_TAG: TOOL_VALUE,
                "bitbucket-backup:deployment": OTHER_DEPLOYMENT,
                INSTANCE_TAG: "demo",
                BACKUP_ID_TAG: backup_id,
                PART_TAG: part,
                STATUS_TAG: COMPLETE,
            }
            tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
            if part == "home":
                ec2.create_snapshot(VolumeId=volume, TagSpecifications=[{"ResourceType": "snapshot", "Tags": tag_list}])
            else:
                rds.create_db_snapshot(
                    DBSnapshotIdentifier=backup_id, DBInstanceIdentifier="other-demo-db", Tags=tag_list
                )
        made.append(backup_id)
    return made


def test_pruning_the_copies_leaves_another_deployments_backups_of_the_same_name_alone(dr: World) -> None:
    _with_copies(dr, keep_backups=1)
    theirs = _other_deployments_backups(3)
    ours = []
    for _ in range(2):
        result = dr.r.run_backup()
        assert result.status == "SUCCEEDED", result.cause
        ours.append(backup_id_of(result))
        time.sleep(1.05)  # backup ids have a resolution of one second
    # Every one of the other deployment's backups is still there; of ours only the newest copy.
    assert sorted(_tags(s)[BACKUP_ID_TAG] for s in _ebs_copies()) == [*theirs, ours[-1]]
    assert sorted(s["DBSnapshotIdentifier"] for s in _rds_copies()) == [*theirs, ours[-1]]
    assert result.output is not None and result.output["pruned"] == [f"{ours[0]} in {DR}"]
    # Our copies carry our deployment's id, which the IAM conditions require.
    mine = [s for s in _ebs_copies() if _tags(s)[BACKUP_ID_TAG] == ours[-1]]
    assert [_tags(s)["bitbucket-backup:deployment"] for s in mine] == [f"123456789012/{REGION}/BitbucketDiyBackup"]
