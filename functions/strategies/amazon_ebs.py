"""Home on EBS volumes of one EC2 instance: flush (and optionally freeze) on the host, then one multi-volume
CreateSnapshots call, so that the home and data volumes are crash-consistent with each other."""

from __future__ import annotations

import shlex
from typing import Any

from botocore.exceptions import ClientError

from functions.clients import host
from functions.clients.aws import client, error_code
from functions.errors import AwsRateLimited, PreflightFailed, SnapshotFailed
from functions.models.config import EbsHomeConfig
from functions.observability import logger
from functions.strategies import (
    BACKUP_ID_TAG,
    INSTANCE_TAG,
    PART_TAG,
    STATUS_TAG,
    TOOL_TAG,
    TOOL_VALUE,
    Artifact,
    Strategy,
    catalog_tags,
    is_ours,
)

RATE_LIMITS = {
    "SnapshotCreationPerVolumeRateExceeded",
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
}
_STATES = {"pending": "pending", "completed": "completed", "error": "error", "recoverable": "error"}


def flush_script(mounts: list[str], freeze: bool, max_freeze_seconds: int) -> str:
    quoted = " ".join(shlex.quote(m) for m in mounts)
    lines = ["set -euo pipefail", f'for m in {quoted}; do sync -f "$m"; done']
    if freeze:
        # The watchdog unfreezes on its own if the orchestrator never sends the unfreeze.
        lines.append(
            f'nohup setsid bash -c \'sleep {max_freeze_seconds}; for m in {quoted}; do fsfreeze -u "$m" '
            "2>/dev/null || true; done' >/dev/null 2>&1 &"
        )
        lines.append(f'for m in {quoted}; do fsfreeze -f "$m"; done')
    return "\n".join(lines)


def unfreeze_script(mounts: list[str]) -> str:
    quoted = " ".join(shlex.quote(m) for m in mounts)
    # Unfreezing a file system that is not frozen fails with EINVAL: that is the state we want anyway.
    return f'for m in {quoted}; do fsfreeze -u "$m" 2>/dev/null || true; done'


class EbsStrategy(Strategy):
    part = "home"

    @property
    def config(self) -> EbsHomeConfig:
        assert isinstance(self.instance.home, EbsHomeConfig)
        return self.instance.home

    def _instance(self) -> tuple[dict[str, str], str | None]:
        """The instance's attached EBS volumes by device name, and its root device name."""
        try:
            reservations = client("ec2").describe_instances(InstanceIds=[self.config.instance_id])["Reservations"]
        except ClientError as error:
            raise PreflightFailed(
                f"home: EC2 instance {self.config.instance_id} cannot be described ({error_code(error)})"
            ) from None
        if not reservations or not reservations[0]["Instances"]:
            raise PreflightFailed(f"home: EC2 instance {self.config.instance_id} does not exist")
        described = reservations[0]["Instances"][0]
        mappings = described.get("BlockDeviceMappings", [])
        return {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in mappings if "Ebs" in m}, described.get("RootDeviceName")

    def _volumes(self, by_device: dict[str, str]) -> dict[str, str]:
        """Configured entries (device or volume id) → volume id, checking they are attached to the instance."""
        attached = set(by_device.values())
        found: dict[str, str] = {}
        for entry in self.config.volumes:
            volume = by_device.get(entry) if entry.startswith("/dev/") else entry
            if volume is None or volume not in attached:
                raise PreflightFailed(
                    f"home: volume {entry} is not attached to {self.config.instance_id} "
                    f"(attached: {', '.join(sorted(by_device)) or 'none'})"
                )
            found[entry] = volume
        return found

    def preflight(self) -> dict[str, object]:
        volumes = self._volumes(self._instance()[0])
        return {"home_volumes": sorted(volumes.values())}

    def backup(self, backup_id: str) -> list[Artifact]:
        cfg = self.config
        devices, root = self._instance()
        wanted = set(self._volumes(devices).values())
        device_of = {v: d for d, v in devices.items()}
        if cfg.mount_points:
            host.run(
                cfg.instance_id,
                flush_script(cfg.mount_points, cfg.freeze, cfg.max_freeze_seconds),
                step="home: flush" + (" and freeze" if cfg.freeze else ""),
                timeout=cfg.flush_timeout_seconds,
            )
        try:
            snapshots = self._create(backup_id, wanted, devices, root)
        finally:
            if cfg.freeze:
                host.run(cfg.instance_id, unfreeze_script(cfg.mount_points), step="home: unfreeze", timeout=60)
        ec2 = client("ec2")
        for snapshot in snapshots:
            device = device_of.get(snapshot["VolumeId"], "")
            ec2.create_tags(
                Resources=[snapshot["SnapshotId"]],
                Tags=[
                    {"Key": "Device", "Value": device},
                    {"Key": "Name", "Value": f"{backup_id}-home{device}"},
                ],
            )
        logger.info(f"EBS snapshots started: {', '.join(s['SnapshotId'] for s in snapshots)}")
        return self.artifacts(backup_id)

    def _create(
        self, backup_id: str, wanted: set[str], devices: dict[str, str], root: str | None
    ) -> list[dict[str, Any]]:
        ec2 = client("ec2")
        root_volume = devices.get(root or "")
        tags = [{"Key": k, "Value": v} for k, v in catalog_tags(self.instance.name, backup_id, self.part).items()]
        try:
            response = ec2.create_snapshots(
                Description=f"Bitbucket {self.instance.name} backup {backup_id}",
                InstanceSpecification={
                    "InstanceId": self.config.instance_id,
                    "ExcludeBootVolume": root_volume not in wanted,
                    "ExcludeDataVolumeIds": sorted(v for v in devices.values() if v not in wanted and v != root_volume),
                },
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags}],
            )
        except ClientError as error:
            code = error_code(error)
            if code in RATE_LIMITS:
                raise AwsRateLimited(f"home: CreateSnapshots refused for its rate limit ({code})") from None
            raise SnapshotFailed(f"home: CreateSnapshots failed: {code}") from None
        snapshots: list[dict[str, Any]] = response.get("Snapshots", [])
        if {s["VolumeId"] for s in snapshots} != wanted:
            raise SnapshotFailed(
                f"home: CreateSnapshots covered {sorted(s['VolumeId'] for s in snapshots)}, expected {sorted(wanted)}"
            )
        return snapshots

    def artifacts(self, backup_id: str | None = None) -> list[Artifact]:
        filters = [
            {"Name": f"tag:{TOOL_TAG}", "Values": [TOOL_VALUE]},
            {"Name": f"tag:{INSTANCE_TAG}", "Values": [self.instance.name]},
            {"Name": f"tag:{PART_TAG}", "Values": [self.part]},
        ]
        if backup_id:
            filters.append({"Name": f"tag:{BACKUP_ID_TAG}", "Values": [backup_id]})
        found = []
        paginator = client("ec2").get_paginator("describe_snapshots")
        for page in paginator.paginate(OwnerIds=["self"], Filters=filters):
            for snap in page["Snapshots"]:
                tags = {t["Key"]: t["Value"] for t in snap.get("Tags", [])}
                if not is_ours(tags, self.instance.name):
                    continue
                found.append(
                    Artifact(
                        kind="ebs-snapshot",
                        id=snap["SnapshotId"],
                        part=self.part,
                        backup_id=tags.get(BACKUP_ID_TAG, ""),
                        state=_STATES.get(snap.get("State", ""), "pending"),
                        status=tags.get(STATUS_TAG, ""),
                        size_gb=snap.get("VolumeSize"),
                        created=str(snap.get("StartTime", "")),
                        details={"volume_id": snap.get("VolumeId", ""), "device": tags.get("Device", "")},
                    )
                )
        return sorted(found, key=lambda a: (a.backup_id, a.details.get("device", ""), a.id))

    def set_status(self, artifact: Artifact, status: str) -> None:
        client("ec2").create_tags(Resources=[artifact.id], Tags=[{"Key": STATUS_TAG, "Value": status}])

    def delete(self, artifact: Artifact) -> None:
        client("ec2").delete_snapshot(SnapshotId=artifact.id)
