"""The rehearsal's EBS Snapshot Lock for moto (rehearsal/moto_fixes_immutability.py): it behaves as EC2 documents,
and it is still needed (the first test fails once moto implements the calls: then drop the patch)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from rehearsal import moto_fixes_immutability as fixes
from rehearsal.fake_account import REGION


def test_moto_still_lacks_ebs_snapshot_lock() -> None:
    from moto.ec2.responses import EC2Response

    for method in ("lock_snapshot", "describe_locked_snapshots"):
        assert not hasattr(EC2Response, method), f"moto implements {method} now: drop the rehearsal's patch"


@pytest.fixture
def ec2() -> Iterator[Any]:
    with mock_aws(), fixes.patched():
        yield boto3.client("ec2", region_name=REGION)


def _snapshot(ec2: Any) -> str:
    volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"]
    return str(ec2.create_snapshot(VolumeId=volume)["SnapshotId"])


def _expire(snapshot_id: str) -> None:
    from moto.ec2.models import ec2_backends

    snapshot = ec2_backends["123456789012"][REGION].snapshots[snapshot_id]
    lock = fixes.lock_of(snapshot)
    assert lock is not None
    lock["expires"] = datetime.now(UTC) - timedelta(seconds=1)


def test_a_locked_snapshot_cannot_be_deleted_until_its_lock_expires(ec2: Any) -> None:
    snapshot = _snapshot(ec2)
    locked = ec2.lock_snapshot(SnapshotId=snapshot, LockMode="compliance", LockDuration=7)
    assert locked["LockState"] == "compliance" and locked["LockDuration"] == 7
    (described,) = ec2.describe_locked_snapshots(SnapshotIds=[snapshot])["Snapshots"]
    assert described["LockState"] == "compliance"
    assert described["LockExpiresOn"] > datetime.now(UTC) + timedelta(days=6)
    with pytest.raises(ClientError) as refused:
        ec2.delete_snapshot(SnapshotId=snapshot)
    assert refused.value.response["Error"]["Code"] == fixes.LOCKED_CODE
    _expire(snapshot)
    assert ec2.describe_locked_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["LockState"] == "expired"
    ec2.delete_snapshot(SnapshotId=snapshot)


def test_a_compliance_lock_can_only_be_extended(ec2: Any) -> None:
    snapshot = _snapshot(ec2)
    ec2.lock_snapshot(SnapshotId=snapshot, LockMode="compliance", LockDuration=7)
    for change in ({"LockMode": "compliance", "LockDuration": 1}, {"LockMode": "governance", "LockDuration": 30}):
        with pytest.raises(ClientError):
            ec2.lock_snapshot(SnapshotId=snapshot, **change)
    assert ec2.lock_snapshot(SnapshotId=snapshot, LockMode="compliance", LockDuration=30)["LockDuration"] == 30


def test_a_governance_lock_and_unlocked_snapshots(ec2: Any) -> None:
    locked, free = _snapshot(ec2), _snapshot(ec2)
    assert ec2.lock_snapshot(SnapshotId=locked, LockMode="governance", LockDuration=1)["LockState"] == "governance"
    assert [s["SnapshotId"] for s in ec2.describe_locked_snapshots()["Snapshots"]] == [locked]
    assert ec2.describe_locked_snapshots(SnapshotIds=[free])["Snapshots"] == []
    ec2.delete_snapshot(SnapshotId=free)
