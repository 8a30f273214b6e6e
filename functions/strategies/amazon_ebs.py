"""Home on EBS volumes of one EC2 instance: flush (and optionally freeze) on the host, then one multi-volume
CreateSnapshots call, so that the home and data volumes are crash-consistent with each other."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from functions.clients import host
from functions.clients.aws import client, error_code
from functions.errors import (
    AwsRateLimited,
    PreflightFailed,
    SnapshotFailed,
)
from functions.models.config import CopyTarget, InstanceConfig
from functions.models.part_config import EbsHomeConfig
from functions.observability import logger
from functions.strategies import (
    BACKUP_ID_TAG,
    DEPLOYMENT_TAG,
    INSTANCE_TAG,
    PART_TAG,
    STATUS_TAG,
    TOOL_TAG,
    TOOL_VALUE,
    Artifact,
    SnapshotCopy,
    catalog_tags,
    copy_details,
    copy_refused,
    deployment_id,
    is_ours,
    percent_of,
    verification,
)

RATE_LIMITS = {
    "SnapshotCreationPerVolumeRateExceeded",
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
}
_STATES = {"pending": "pending", "completed": "completed", "error": "error", "recoverable": "error"}
# EBS Snapshot Lock states in which the snapshot cannot be deleted ("expired" can).
LOCKED_STATES = {"governance", "compliance", "compliance-cooloff"}


def _sorted(artifacts: list[Artifact]) -> list[Artifact]:
    return sorted(artifacts, key=lambda a: (a.backup_id, a.details.get("device", ""), a.id))


class EbsStrategy(SnapshotCopy):
    """The shared home, or a Mesh node's (`part` mesh-<name>): the same copy of another instance's volumes."""

    def __init__(self, instance: InstanceConfig, part: str = "home") -> None:
        super().__init__(instance)
        self.part = part

    @property
    def config(self) -> EbsHomeConfig:
        home = self.instance.home_of(self.part)
        assert isinstance(home, EbsHomeConfig)
        return home

    def _instance(self) -> tuple[dict[str, str], str | None]:
        """The instance's attached EBS volumes by device name, and its root device name."""
        try:
            reservations = client("ec2").describe_instances(InstanceIds=[self.config.instance_id])["Reservations"]
        except ClientError as error:
            raise PreflightFailed(
                f"{self.part}: EC2 instance {self.config.instance_id} cannot be described ({error_code(error)})"
            ) from None
        if not reservations or not reservations[0]["Instances"]:
            raise PreflightFailed(f"{self.part}: EC2 instance {self.config.instance_id} does not exist")
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
                    f"{self.part}: volume {entry} is not attached to {self.config.instance_id} "
                    f"(attached: {', '.join(sorted(by_device)) or 'none'})"
                )
            found[entry] = volume
        return found

    def preflight(self) -> dict[str, object]:
        volumes = self._volumes(self._instance()[0])
        return {f"{self.part}_volumes": sorted(volumes.values())}

    def backup(self, backup_id: str) -> list[Artifact]:
        cfg = self.config
        devices, root = self._instance()
        wanted = set(self._volumes(devices).values())
        device_of = {v: d for d, v in devices.items()}
        if cfg.mount_points:
            host.run(
                cfg.instance_id,
                "FlushHome",
                {
                    "mountPoints": " ".join(cfg.mount_points),
                    "freeze": str(cfg.freeze).lower(),
                    "maxFreezeSeconds": cfg.max_freeze_seconds,
                },
                step=f"{self.part}: flush" + (" and freeze" if cfg.freeze else ""),
                timeout=cfg.flush_timeout_seconds,
            )
        try:
            snapshots = self._create(backup_id, wanted, devices, root)
        finally:
            if cfg.freeze:
                host.run(
                    cfg.instance_id,
                    "UnfreezeHome",
                    {"mountPoints": " ".join(cfg.mount_points)},
                    step=f"{self.part}: unfreeze",
                    timeout=60,
                )
        ec2 = client("ec2")
        # Per snapshot, the tags written now: what CreateSnapshots answered plus these (and the catalog's it was
        # made with) is the answer; no DescribeSnapshots under the lock.
        made = catalog_tags(self.instance.name, backup_id, self.part)
        artifacts = []
        for snapshot in snapshots:
            device = device_of.get(snapshot["VolumeId"], "")
            named = {"Device": device, "Name": f"{backup_id}-{self.part}{device}"}
            ec2.create_tags(Resources=[snapshot["SnapshotId"]], Tags=[{"Key": k, "Value": v} for k, v in named.items()])
            artifacts.append(self._artifact(snapshot, {**made, **named}))
        logger.info(f"EBS snapshots started: {', '.join(s['SnapshotId'] for s in snapshots)}")
        return _sorted(artifacts)

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
                raise AwsRateLimited(f"{self.part}: CreateSnapshots refused for its rate limit ({code})") from None
            raise SnapshotFailed(f"{self.part}: CreateSnapshots failed: {code}") from None
        snapshots: list[dict[str, Any]] = response.get("Snapshots", [])
        if {s["VolumeId"] for s in snapshots} != wanted:
            raise SnapshotFailed(
                f"{self.part}: CreateSnapshots covered {sorted(s['VolumeId'] for s in snapshots)}, "
                f"expected {sorted(wanted)}"
            )
        return snapshots

    def artifacts(self, backup_id: str | None = None) -> list[Artifact]:
        filters = [
            {"Name": f"tag:{TOOL_TAG}", "Values": [TOOL_VALUE]},
            {"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [deployment_id()]},
            {"Name": f"tag:{INSTANCE_TAG}", "Values": [self.instance.name]},
            {"Name": f"tag:{PART_TAG}", "Values": [self.part]},
        ]
        if backup_id:
            filters.append({"Name": f"tag:{BACKUP_ID_TAG}", "Values": [backup_id]})
        found = []
        paginator = self.aws("ec2").get_paginator("describe_snapshots")
        for page in paginator.paginate(OwnerIds=["self"], Filters=filters):
            for snap in page["Snapshots"]:
                tags = {t["Key"]: t["Value"] for t in snap.get("Tags", [])}
                if is_ours(tags, self.instance.name):
                    found.append(self._artifact(snap, tags))
        return _sorted(found)

    def _artifact(self, snap: dict[str, Any], tags: dict[str, str]) -> Artifact:
        return Artifact(
            kind="ebs-snapshot",
            id=snap["SnapshotId"],
            part=self.part,
            backup_id=tags.get(BACKUP_ID_TAG, ""),
            state=_STATES.get(snap.get("State", ""), "pending"),
            status=tags.get(STATUS_TAG, ""),
            verified=verification(tags),
            percent=percent_of(snap.get("Progress")),
            size_gb=snap.get("VolumeSize"),
            created=str(snap.get("StartTime", "")),
            details={"volume_id": snap.get("VolumeId", ""), "device": tags.get("Device", ""), **copy_details(tags)},
        )

    def tag(self, artifact: Artifact, tags: dict[str, str]) -> None:
        self.aws("ec2").create_tags(Resources=[artifact.id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    def delete(self, artifact: Artifact) -> None:
        # Deleting a copy still in progress cancels it.
        self.aws("ec2").delete_snapshot(SnapshotId=artifact.id)

    # --- immutable backups: EBS Snapshot Lock ---------------------------------------------------------------------

    def lock(self, artifact: Artifact, mode: str, days: int) -> str | None:
        # No cooling-off period: a compliance lock is final at once (a compromised account cannot lift it).
        self.aws("ec2").lock_snapshot(SnapshotId=artifact.id, LockMode=mode, LockDuration=days)
        return f"locked {artifact.id} ({mode}, {days} days){' in ' + self.where if self.target else ''}"

    def held(self, artifact: Artifact) -> str | None:
        if self.instance.immutable is None:
            return None  # this tool locks only immutable instances' snapshots
        found = self.aws("ec2").describe_locked_snapshots(SnapshotIds=[artifact.id]).get("Snapshots", [])
        for lock in found:
            state = lock.get("LockState")
            if state in LOCKED_STATES:
                until = lock.get("LockExpiresOn")
                return f"{artifact.id} is locked ({state}){f' until {until:%Y-%m-%d %H:%M} UTC' if until else ''}"
        return None

    # --- disaster-recovery copies: CopySnapshot in the destination, always encrypted ----------------------------

    def start_copy(self, original: Artifact, target: CopyTarget, tags: dict[str, str], source_region: str) -> str:
        device = original.details.get("device", "")
        tags = tags | {"Device": device, "Name": f"{original.backup_id}-{self.part}{device}"}
        request: dict[str, Any] = {
            "SourceRegion": source_region,
            "SourceSnapshotId": original.id,
            "Description": f"Bitbucket {self.instance.name} backup {original.backup_id} (copy of {original.id})",
            "Encrypted": True,
            "TagSpecifications": [
                {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        }
        if target.kms_key_id:
            request["KmsKeyId"] = target.kms_key_id
        try:
            if target.account_id:
                # The target's role copies from the source account: it must be allowed to read the original.
                self._share(original, target.account_id, "add")
            copied = self.aws("ec2").copy_snapshot(**request)
        except ClientError as error:
            raise copy_refused(error, "CopySnapshot", original, target) from None
        logger.info(f"copying {original.id} to {target.label} as {copied['SnapshotId']}")
        return str(copied["SnapshotId"])

    def unshare(self, original: Artifact, target: CopyTarget) -> bool:
        if not target.account_id:
            return False
        try:
            self._share(original, target.account_id, "remove")
        except ClientError as error:
            if error_code(error) != "InvalidSnapshot.NotFound":  # deleted meanwhile: nothing is shared any more
                raise
        return True

    @staticmethod
    def _share(original: Artifact, account_id: str, operation: str) -> None:
        """Adds or removes one account's permission to create volumes from (and so copy) the original."""
        client("ec2").modify_snapshot_attribute(
            SnapshotId=original.id,
            Attribute="createVolumePermission",
            OperationType=operation,
            UserIds=[account_id],
        )
