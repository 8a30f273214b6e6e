"""Disaster-recovery copies into another account (moto with two accounts): the source snapshots are shared with the
destination account, the destination's role copies them there (so that account owns the copies), they carry the
catalog tags and end complete, the destination's own keep_backups prunes there, and the shares are removed again once
the copies are complete (or the run failed and kept its originals). A role the stack may not assume fails the run
visibly."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import boto3
import pytest
from moto.ec2.models.elastic_block_store import EBSBackend
from moto.rds.models import RDSBackend

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
from rehearsal.fake_account import ACCOUNT, REGION
from tests.integration.conftest import World, backup_id_of

DR = "eu-central-1"
DR_ACCOUNT = "210987654321"
ROLE_NAME = "bitbucket-dr-copies"
ROLE_ARN = f"arn:aws:iam::{DR_ACCOUNT}:role/{ROLE_NAME}"
TARGET = f"{DR}/{DR_ACCOUNT}"
# The README's trust policy: the source account, narrowed to the stack's roles (moto does not evaluate conditions).
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "sts:AssumeRole",
            "Condition": {"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:role/BitbucketDiyBackup-*"}},
        }
    ],
}


def _admin_of_dr_account(service: str, region: str) -> Any:
    """A client acting in the destination account as its administrator does when setting it up (moto selects the
    account of a request by its `x-moto-account-id` header)."""
    made = boto3.client(service, region_name=region)
    made.meta.events.register(
        "before-sign", lambda request, **_: request.headers.__setitem__("x-moto-account-id", DR_ACCOUNT)
    )
    return made


def _as_dr_role(service: str) -> Any:
    """A client in the destination account and region with the role's credentials (moto maps an assumed role's keys
    to the role's account)."""
    credentials = boto3.client("sts", region_name=REGION).assume_role(RoleArn=ROLE_ARN, RoleSessionName="test")[
        "Credentials"
    ]
    return boto3.client(
        service,
        region_name=DR,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def _deployed(**target: Any) -> dict[str, Any]:
    """The stack as deployed for copies into the destination account (its roles' permissions); the test's real key
    replaces the placeholder."""
    key = f"arn:aws:kms:{DR}:{DR_ACCOUNT}:key/placeholder"
    return {"copies": [{"region": DR, "kms_key_id": key, "account_id": DR_ACCOUNT, "role_arn": ROLE_ARN, **target}]}


@pytest.fixture
def world(world_factory: Callable[..., World]) -> World:
    return world_factory(deployed=_deployed())


def _setup_dr_account(world: World, trust: dict[str, Any] = TRUST, **target: Any) -> dict[str, Any]:
    _admin_of_dr_account("iam", "us-east-1").create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
    key = _admin_of_dr_account("kms", DR).create_key(Description="DR copies")["KeyMetadata"]["Arn"]
    assert f":{DR_ACCOUNT}:" in key
    copy = {"region": DR, "kms_key_id": key, "account_id": DR_ACCOUNT, "role_arn": ROLE_ARN, **target}
    world.r.configure(copies=[copy])
    return copy


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", resource.get("TagList", []))}


def _ours(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((s for s in found if _tags(s).get(TOOL_TAG) == TOOL_VALUE), key=lambda s: _tags(s)[BACKUP_ID_TAG])


def _ebs_copies(ec2: Any) -> list[dict[str, Any]]:
    return _ours(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])


def _rds_copies(rds: Any) -> list[dict[str, Any]]:
    return _ours(rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"])


def _shared_with(world: World, original: dict[str, Any]) -> list[str]:
    """The accounts an original is shared with now, as its own account sees it."""
    if original["kind"] == "ebs-snapshot":
        permissions = world.r.client("ec2").describe_snapshot_attribute(
            SnapshotId=original["id"], Attribute="createVolumePermission"
        )["CreateVolumePermissions"]
        return sorted(p["UserId"] for p in permissions if "UserId" in p)
    attributes = world.r.client("rds").describe_db_snapshot_attributes(DBSnapshotIdentifier=original["id"])
    (restore,) = (
        a for a in attributes["DBSnapshotAttributesResult"]["DBSnapshotAttributes"] if a["AttributeName"] == "restore"
    )
    return sorted(restore["AttributeValues"])


@pytest.fixture
def shares() -> Iterator[list[tuple[str, str, str]]]:
    """Every share added or removed in moto: (snapshot, account, "add" | "remove")."""
    seen: list[tuple[str, str, str]] = []
    add_ebs, remove_ebs = EBSBackend.add_create_volume_permission, EBSBackend.remove_create_volume_permission
    modify_rds = RDSBackend.modify_db_snapshot_attribute

    def added(self: Any, snapshot_id: str, user_ids: Any = None, groups: Any = None) -> Any:
        seen.extend((snapshot_id, u, "add") for u in user_ids or [])
        return add_ebs(self, snapshot_id, user_ids=user_ids, groups=groups)

    def removed(self: Any, snapshot_id: str, user_ids: Any = None, groups: Any = None) -> Any:
        seen.extend((snapshot_id, u, "remove") for u in user_ids or [])
        return remove_ebs(self, snapshot_id, user_ids=user_ids, groups=groups)

    def modified(self: Any, **kwargs: Any) -> Any:
        identifier = kwargs["db_snapshot_identifier"]
        seen.extend((identifier, v, "add") for v in kwargs.get("values_to_add") or [])
        seen.extend((identifier, v, "remove") for v in kwargs.get("values_to_remove") or [])
        return modify_rds(self, **kwargs)

    with (
        mock.patch.object(EBSBackend, "add_create_volume_permission", added),
        mock.patch.object(EBSBackend, "remove_create_volume_permission", removed),
        mock.patch.object(RDSBackend, "modify_db_snapshot_attribute", modified),
    ):
        yield seen


def test_copies_are_made_and_owned_by_the_destination_account_and_the_shares_removed(
    world: World, shares: list[tuple[str, str, str]]
) -> None:
    _setup_dr_account(world)
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    backup_id = backup_id_of(result)
    originals = {s["kind"]: s for s in world.r.snapshots(backup_id)}
    assert set(originals) == {"ebs-snapshot", "rds-snapshot"}
    assert {s["status"] for s in originals.values()} == {COMPLETE}

    # Shared with the destination account for the copy, and no longer once the copies were complete.
    for original in originals.values():
        assert [(a, op) for s, a, op in shares if s == original["id"]] == [(DR_ACCOUNT, "add"), (DR_ACCOUNT, "remove")]
        assert _shared_with(world, original) == []
    assert result.output is not None
    assert len(result.output["unshared"]) == 2 and result.output["unshare_errors"] == []

    # The copies are in the destination account (which owns them) and region, with the catalog tags, complete.
    assert _as_dr_role("sts").get_caller_identity()["Account"] == DR_ACCOUNT
    (home,) = _ebs_copies(_as_dr_role("ec2"))
    assert home["OwnerId"] == DR_ACCOUNT
    tags = _tags(home)
    assert tags[INSTANCE_TAG] == "demo" and tags[BACKUP_ID_TAG] == backup_id and tags[PART_TAG] == "home"
    assert tags[STATUS_TAG] == COMPLETE and tags["Device"] == "/dev/xvdf"
    assert tags[COPY_OF_TAG] == originals["ebs-snapshot"]["id"] and tags[SOURCE_REGION_TAG] == REGION
    (database,) = _rds_copies(_as_dr_role("rds"))
    assert database["DBSnapshotIdentifier"] == backup_id
    assert database["DBSnapshotArn"].startswith(f"arn:aws:rds:{DR}:{DR_ACCOUNT}:snapshot:")
    db_tags = _tags(database)
    assert db_tags[STATUS_TAG] == COMPLETE and db_tags[PART_TAG] == "database" and db_tags[COPY_OF_TAG] == backup_id
    assert db_tags[SOURCE_REGION_TAG] == REGION

    # Nothing was copied into the source account's own copy of that region.
    assert _ebs_copies(boto3.client("ec2", region_name=DR)) == []
    assert _rds_copies(boto3.client("rds", region_name=DR)) == []
    assert {(c["target"], c["copy_of"]) for c in result.output["copies"]} == {
        (TARGET, o["id"]) for o in originals.values()
    }
    assert not world.sim.locked


def test_the_destinations_keep_backups_prunes_there_as_its_role(world: World) -> None:
    _setup_dr_account(world, keep_backups=1)
    made = []
    for _ in range(2):
        result = world.r.run_backup()
        assert result.status == "SUCCEEDED", result.cause
        made.append(backup_id_of(result))
        time.sleep(1.05)  # backup ids have a resolution of one second
    # Locally both are kept (keep_backups 2); in the destination account only the newest.
    assert {s["backup_id"] for s in world.r.snapshots()} == set(made)
    assert [_tags(s)[BACKUP_ID_TAG] for s in _ebs_copies(_as_dr_role("ec2"))] == [made[-1]]
    assert [s["DBSnapshotIdentifier"] for s in _rds_copies(_as_dr_role("rds"))] == [made[-1]]
    assert result.output is not None
    assert result.output["pruned"] == [f"{made[0]} in {TARGET}"]
    assert all(_shared_with(world, s) == [] for s in world.r.snapshots())


def test_a_role_that_does_not_trust_the_stack_fails_the_run_visibly_and_keeps_the_local_backup(world: World) -> None:
    elsewhere = json.loads(json.dumps(TRUST).replace(ACCOUNT, "999999999999"))
    _setup_dr_account(world, trust=elsewhere)
    result = world.r.run_backup()
    assert result.status == "FAILED"
    assert "Failed: copy-regions" in result.states_entered()
    (note,) = world.failure_notifications()
    assert "at step copy-regions" in note["subject"]
    assert "AccessDenied" in note["message"] and ROLE_ARN in note["message"]
    backup_id = backup_id_of(result)
    originals = world.r.snapshots(backup_id)
    assert len(originals) == 2 and {s["status"] for s in originals} == {COMPLETE}
    assert all(_shared_with(world, s) == [] for s in originals)
    assert not world.sim.locked


def test_a_failed_copy_leaves_no_original_shared(world: World, shares: list[tuple[str, str, str]]) -> None:
    _setup_dr_account(world)
    copy_snapshot = EBSBackend.copy_snapshot

    def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        snapshot = copy_snapshot(self, *args, **kwargs)
        snapshot.status = "error"  # what a copy whose key the destination cannot use ends in
        return snapshot

    with mock.patch.object(EBSBackend, "copy_snapshot", broken):
        result = world.r.run_backup()
    assert result.status == "FAILED" and result.error == "CopyFailed"
    backup_id = backup_id_of(result)
    originals = world.r.snapshots(backup_id)
    assert {s["status"] for s in originals} == {COMPLETE}
    # What was shared for the copies is not any more; the unfinished copies are gone.
    added = {s for s, _, op in shares if op == "add"}
    assert added and added <= {o["id"] for o in originals}
    assert added <= {s for s, _, op in shares if op == "remove"}
    assert all(_shared_with(world, s) == [] for s in originals)
    assert _ebs_copies(_as_dr_role("ec2")) == [] and _rds_copies(_as_dr_role("rds")) == []
    (note,) = world.failure_notifications()
    assert f"no longer shared with account {DR_ACCOUNT}" in note["message"]


def test_archives_are_copied_into_the_destination_accounts_bucket_by_its_role(
    world_factory: Callable[..., World], shares: list[tuple[str, str, str]]
) -> None:
    from moto.s3.models import s3_backends

    world = world_factory(home="rsync", database="amazon-rds", deployed=_deployed(archive_bucket="dr-archives"))
    _admin_of_dr_account("s3", DR).create_bucket(
        Bucket="dr-archives", CreateBucketConfiguration={"LocationConstraint": DR}
    )
    assert s3_backends.bucket_accounts["dr-archives"] == ("aws", DR_ACCOUNT)
    _setup_dr_account(world, archive_bucket="dr-archives")
    result = world.r.run_backup(timeout=300)
    assert result.status == "SUCCEEDED", result.cause
    backup_id = backup_id_of(result)
    (archive,) = (a for a in world.r.snapshots(backup_id) if a["kind"] == "s3-archive")

    s3 = _as_dr_role("s3")
    (copied,) = s3.list_objects_v2(Bucket="dr-archives")["Contents"]
    assert copied["Key"] == archive["key"] and str(copied["Size"]) == archive["size"]
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket="dr-archives", Key=copied["Key"])["TagSet"]}
    assert tags[STATUS_TAG] == COMPLETE and tags[PART_TAG] == "home" and tags[BACKUP_ID_TAG] == backup_id
    assert tags[COPY_OF_TAG] == archive["id"] and tags[SOURCE_REGION_TAG] == REGION
    assert [_tags(s)[BACKUP_ID_TAG] for s in _rds_copies(_as_dr_role("rds"))] == [backup_id]
    # Only the snapshot was shared (the role reads archives through the bucket policy), and it is no longer.
    assert {s for s, _, _ in shares} == {backup_id}
    assert result.output is not None and len(result.output["unshared"]) == 1
