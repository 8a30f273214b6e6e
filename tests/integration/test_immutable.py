"""Immutable backups (issue 10, finding 7) in the rehearsal: finalize locks the complete EBS snapshots, here and in
the DR region, for keep_backups x the schedule's gap; pruning keeps a backup while its lock lasts and removes it on a
later run once the lock has expired; nothing else deletes it meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from rehearsal import moto_fixes_immutability as fixes
from rehearsal.fake_account import ACCOUNT, REGION
from tests.integration.conftest import World, backup_id_of

DR = "eu-central-1"


def _locks(region: str) -> dict[str, str]:
    found = boto3.client("ec2", region_name=region).describe_locked_snapshots()["Snapshots"]
    return {s["SnapshotId"]: s["LockState"] for s in found}


def _expire_all() -> None:
    from moto.ec2.models import ec2_backends

    for region in (REGION, DR):
        for snapshot in ec2_backends[ACCOUNT][region].snapshots.values():
            lock = fixes.lock_of(snapshot)
            if lock is not None:
                lock["expires"] = lock["created"]


@pytest.fixture
def immutable(world_factory: Callable[..., World]) -> World:
    # Deployed as immutable with copies (its roles' permissions); the test's real key replaces the placeholder.
    placeholder = {"region": DR, "kms_key_id": f"arn:aws:kms:{DR}:123456789012:key/placeholder"}
    world = world_factory(deployed={"immutable": {"mode": "compliance"}, "keep_backups": 1, "copies": [placeholder]})
    key = boto3.client("kms", region_name=DR).create_key(Description="DR copies")["KeyMetadata"]["Arn"]
    world.r.configure(immutable={"mode": "compliance"}, keep_backups=1, copies=[{"region": DR, "kms_key_id": key}])
    return world


def _run(world: World) -> tuple[str, dict[str, Any]]:
    result = world.r.run_backup()
    assert result.status == "SUCCEEDED", result.cause
    assert result.output is not None
    time.sleep(1.05)  # backup ids have a resolution of one second
    backup_id = backup_id_of(result)
    assert backup_id
    return backup_id, result.output


def test_complete_snapshots_are_locked_and_kept_until_the_lock_ends(immutable: World) -> None:
    first, output = _run(immutable)
    home = next(s for s in immutable.r.snapshots(first) if s["kind"] == "ebs-snapshot")
    # keep_backups 1 x a daily schedule: locked for one day, in compliance mode, here and in the DR region.
    assert _locks(REGION) == {home["id"]: "compliance"}
    assert list(_locks(DR).values()) == ["compliance"]
    assert output["lock_errors"] == [] and len(output["locked"]) == 2
    assert all("(compliance, 1 days)" in line for line in output["locked"])

    second, output = _run(immutable)
    # The first backup is beyond keep_backups but still locked: kept, and nothing failed.
    assert output["pruned"] == [] and output["prune_error"] is None
    assert {s["backup_id"] for s in immutable.r.snapshots()} == {first, second}

    _expire_all()
    third, output = _run(immutable)
    # Once their locks have expired, both older backups go (here and in the DR region); the newest stays.
    assert sorted(output["pruned"]) == sorted([first, second, f"{first} in {DR}", f"{second} in {DR}"])
    assert {s["backup_id"] for s in immutable.r.snapshots()} == {third}
