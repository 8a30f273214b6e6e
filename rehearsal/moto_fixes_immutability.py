"""What moto (5.2) lacks for immutable backups, in one place: EBS Snapshot Lock.

- `LockSnapshot` and `DescribeLockedSnapshots` answer as EC2 does (lock modes, durations, states);
- `DeleteSnapshot` refuses a snapshot whose lock has not expired, as EC2 does.

Each patch has a test in tests/unit/test_moto_fixes_immutability.py that fails once moto implements the call itself:
then drop the patch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

# Where the patch keeps a snapshot's lock, on moto's Snapshot object.
LOCK_ATTRIBUTE = "_rehearsal_lock"
LOCKED_CODE = "SnapshotLocked"


def lock_state(lock: dict[str, Any], now: datetime | None = None) -> str:
    """governance | compliance-cooloff | compliance | expired, as EC2 names them."""
    now = now or datetime.now(UTC)
    if now >= lock["expires"]:
        return "expired"
    if lock["mode"] == "governance":
        return "governance"
    if lock["cool_off_expires"] is not None and now < lock["cool_off_expires"]:
        return "compliance-cooloff"
    return "compliance"


def lock_of(snapshot: Any) -> dict[str, Any] | None:
    """A snapshot's lock (tests move its expiry to see what happens after it)."""
    found: dict[str, Any] | None = getattr(snapshot, LOCK_ATTRIBUTE, None)
    return found


def _described(snapshot: Any, lock: dict[str, Any]) -> dict[str, Any]:
    return {
        "OwnerId": snapshot.owner_id,
        "SnapshotId": snapshot.id,
        "LockState": lock_state(lock),
        "LockDuration": lock["duration"],
        "CoolOffPeriod": lock["cool_off"],
        "CoolOffPeriodExpiresOn": lock["cool_off_expires"],
        "LockCreatedOn": lock["created"],
        "LockDurationStartTime": lock["created"],
        "LockExpiresOn": lock["expires"],
    }


@contextlib.contextmanager
def patched() -> Iterator[None]:
    from unittest import mock

    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.elastic_block_store import EBSBackend
    from moto.ec2.responses import EC2Response

    def lock_snapshot(self: Any) -> Any:
        snapshot = self.ec2_backend.get_snapshot(self._get_param("SnapshotId"))
        mode = str(self._get_param("LockMode"))
        if mode not in ("governance", "compliance"):
            raise EC2ClientError("InvalidParameterValue", f"Invalid lock mode: {mode}")
        now = datetime.now(UTC)
        duration = self._get_int_param("LockDuration")
        expiration = self._get_param("ExpirationDate")
        if duration is None and expiration is None:
            raise EC2ClientError("MissingParameter", "Either LockDuration or ExpirationDate is required")
        expires = now + timedelta(days=int(duration)) if duration is not None else expiration
        current = lock_of(snapshot)
        # EC2: after the cooling-off period a compliance lock can only be extended.
        final = current is not None and lock_state(current, now) == "compliance"
        if final and current is not None and (mode != "compliance" or expires < current["expires"]):
            raise EC2ClientError(
                LOCKED_CODE, f"The snapshot '{snapshot.id}' is locked in compliance mode: it can only be extended"
            )
        cool_off = self._get_int_param("CoolOffPeriod") if mode == "compliance" else None
        lock = {
            "mode": mode,
            "duration": duration,
            "created": now,
            "expires": expires,
            "cool_off": cool_off,
            "cool_off_expires": now + timedelta(hours=cool_off) if cool_off else None,
        }
        setattr(snapshot, LOCK_ATTRIBUTE, lock)
        described = _described(snapshot, lock)
        described.pop("OwnerId")
        return ActionResult(described)

    def describe_locked_snapshots(self: Any) -> Any:
        wanted = set(self._get_param("SnapshotIds", []) or [])
        found = []
        for snapshot in self.ec2_backend.snapshots.values():
            lock = lock_of(snapshot)
            if lock is not None and (not wanted or snapshot.id in wanted):
                found.append(_described(snapshot, lock))
        return ActionResult({"Snapshots": found})

    original_delete = EBSBackend.delete_snapshot

    def delete_snapshot(self: Any, snapshot_id: str) -> Any:
        snapshot = self.snapshots.get(snapshot_id)
        lock = lock_of(snapshot) if snapshot is not None else None
        if lock is not None and lock_state(lock) != "expired":
            raise EC2ClientError(
                LOCKED_CODE, f"The snapshot '{snapshot_id}' is locked ({lock_state(lock)}) and cannot be deleted"
            )
        return original_delete(self, snapshot_id)

    with (
        mock.patch.object(EC2Response, "lock_snapshot", lock_snapshot, create=True),
        mock.patch.object(EC2Response, "describe_locked_snapshots", describe_locked_snapshots, create=True),
        mock.patch.object(EBSBackend, "delete_snapshot", delete_snapshot),
    ):
        yield
