"""Restoring an EBS home: NEW volumes from the snapshots, optionally attached to a stopped, tagged instance and
mounted there; existing volumes are never detached or deleted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, WaiterError

from functions.clients import host
from functions.clients.aws import client, error_code
from functions.errors import AwsRateLimited, HostCommandFailed, RestoreFailed, RestoreRefused, TargetNotReady
from functions.models.config import InstanceConfig
from functions.models.part_config import EbsHomeConfig
from functions.models.restore import HomeTarget, RestoreTarget, target_label
from functions.observability import logger
from functions.strategies import (
    BACKUP_ID_TAG,
    PART_TAG,
    RESTORE_FAILED,
    RESTORE_TAG,
    RESTORE_TARGET_TAG,
    RESTORED,
    STATUS_TAG,
    Artifact,
    RestoreProgress,
    VolumeRestorer,
    made_by,
    restore_tags,
)
from functions.strategies.amazon_ebs import RATE_LIMITS

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.restore_plans import (
        Attached,
        AttachedVolume,
        EbsCreated,
        EbsPlan,
        EbsRestored,
        Mounted,
        RestoredVolume,
        VolumePlan,
    )


class EbsRestorer(VolumeRestorer["EbsPlan", "EbsCreated"]):
    """The shared home's volumes, or a Mesh node's (`part` mesh-<name>: new volumes only; the restore attaches and
    mounts the shared home's)."""

    def __init__(self, instance: InstanceConfig, part: str = "home") -> None:
        super().__init__(instance)
        self.part = part
        self.target_fields = frozenset({"availability_zone", "volume_type", "iops", "kms_key_id"}) | (
            {"attach_to_instance_id", "mount"} if part == "home" else set()
        )

    @property
    def config(self) -> EbsHomeConfig:
        home = self.instance.home_of(self.part)
        assert isinstance(home, EbsHomeConfig)
        return home

    def check(self, artifacts: list[Artifact], target: RestoreTarget) -> EbsPlan:
        wanted = target.of(self.part)
        assert isinstance(wanted, HomeTarget)
        ec2 = client("ec2")
        snapshots = {
            s["SnapshotId"]: s for s in ec2.describe_snapshots(SnapshotIds=[a.id for a in artifacts])["Snapshots"]
        }
        zone = wanted.availability_zone
        instance: dict[str, Any] | None = None
        if wanted.attach_to_instance_id:
            instance = _target_instance(wanted.attach_to_instance_id, self.instance.name)
            instance_zone = instance["Placement"]["AvailabilityZone"]
            if zone and zone != instance_zone:
                raise RestoreRefused(
                    f"validate: target.home.availability_zone is {zone} but instance {instance['InstanceId']} is in "
                    f"{instance_zone}; volumes can only be attached in the instance's zone"
                )
            zone = instance_zone
        if wanted.mount and not self.config.mount_points:
            raise RestoreRefused(
                "validate: target.home.mount is true but home.mount_points is not configured for this instance, so "
                "the restore does not know where to mount the volumes"
            )
        volumes = []
        taken = {
            m["DeviceName"]: m.get("Ebs", {}).get("VolumeId", "?")
            for m in (instance or {}).get("BlockDeviceMappings", [])
        }
        for artifact in artifacts:
            snapshot = snapshots[artifact.id]
            device = artifact.details.get("device", "")
            if instance is not None:
                if not device:
                    raise RestoreRefused(
                        f"validate: snapshot {artifact.id} has no Device tag, so its original device name is unknown; "
                        "restore without attach_to_instance_id and attach it yourself"
                    )
                if device in taken:
                    raise RestoreRefused(
                        f"validate: device {device} of instance {instance['InstanceId']} is taken by {taken[device]}; "
                        "a restore never detaches existing volumes: free the device yourself or choose another instance"
                    )
            volumes.append(_volume_plan(artifact.id, device, snapshot, wanted, target_label(self.part)))
        return {
            "availability_zone": zone,
            "attach_to": wanted.attach_to_instance_id,
            "mount_points": list(self.config.mount_points) if wanted.mount else [],
            "volumes": volumes,
        }

    def start(self, plan: EbsPlan, execution: str) -> EbsCreated:
        ec2 = client("ec2")
        # A retried invocation must not create a second volume from the same snapshot.
        made = {v["SnapshotId"]: v["VolumeId"] for v in _volumes_of(execution)}
        for volume in plan["volumes"]:
            if volume["snapshot_id"] in made:
                continue
            name = f"{_backup_id(volume)}-{self.part}-restored{volume['device']}"
            tags = restore_tags(self.instance.name, _backup_id(volume), self.part, execution, name)
            tags["Device"] = volume["device"]
            request: dict[str, Any] = {
                "AvailabilityZone": plan["availability_zone"],
                "SnapshotId": volume["snapshot_id"],
                "VolumeType": volume["volume_type"],
                "TagSpecifications": [
                    {"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
                ],
            }
            optional = {
                "Iops": volume.get("iops"),
                "Throughput": volume.get("throughput"),
                "KmsKeyId": volume.get("kms_key_id"),
            }
            request |= {k: v for k, v in optional.items() if v}
            if volume.get("encrypted"):
                request["Encrypted"] = True
            try:
                made[volume["snapshot_id"]] = ec2.create_volume(**request)["VolumeId"]
            except ClientError as error:
                code = error_code(error)
                if code in RATE_LIMITS:
                    raise AwsRateLimited(
                        f"restore-{self.part}: CreateVolume refused for its rate limit ({code})"
                    ) from None
                raise RestoreFailed(
                    f"restore-{self.part}: CreateVolume from {volume['snapshot_id']} in {plan['availability_zone']} "
                    f"failed: {code}"
                ) from None
            logger.info(f"creating volume {made[volume['snapshot_id']]} from {volume['snapshot_id']}")
        return {
            "volumes": [
                {"volume_id": made[v["snapshot_id"]], "snapshot_id": v["snapshot_id"], "device": v["device"]}
                for v in plan["volumes"]
            ]
        }

    def progress(self, plan: EbsPlan, created: EbsCreated) -> RestoreProgress:
        ids = [v["volume_id"] for v in created["volumes"]]
        found = {v["VolumeId"]: v for v in client("ec2").describe_volumes(VolumeIds=ids)["Volumes"]}
        broken = [i for i in ids if found.get(i, {}).get("State", "error") == "error"]
        if broken:
            raise RestoreFailed(f"wait-restore: volume {', '.join(broken)} ended in state 'error' (or disappeared)")
        pending = [f"volume {i} ({found[i]['State']})" for i in ids if found[i]["State"] not in ("available", "in-use")]
        if pending:
            return RestoreProgress(ready=False, pending=pending)
        volumes: list[RestoredVolume] = [
            {
                "volume_id": v["volume_id"],
                "snapshot_id": v["snapshot_id"],
                "device": v["device"],
                "size_gb": found[v["volume_id"]].get("Size"),
                "volume_type": found[v["volume_id"]].get("VolumeType"),
            }
            for v in created["volumes"]
        ]
        restored: EbsRestored = {
            "kind": "ebs-volumes",
            "availability_zone": plan["availability_zone"],
            "volumes": volumes,
        }
        return RestoreProgress(ready=True, pending=[], result=restored)

    def attach(self, plan: EbsPlan, created: EbsCreated, execution: str) -> Attached:
        ec2 = client("ec2")
        instance_id = plan["attach_to"]
        assert instance_id is not None, "the state machine attaches only a plan with attach_to (RestorePlan.attach)"
        instance = _target_instance(instance_id, self.instance.name, step="attach-home")
        attached_here = {
            m["DeviceName"]: m.get("Ebs", {}).get("VolumeId") for m in instance.get("BlockDeviceMappings", [])
        }
        attached: list[AttachedVolume] = []
        for volume in created["volumes"]:
            device, volume_id = volume["device"], volume["volume_id"]
            if attached_here.get(device) == volume_id:  # a retried invocation
                attached.append({"volume_id": volume_id, "device": device})
                continue
            if device in attached_here:
                raise RestoreFailed(
                    f"attach-home: device {device} of {instance_id} was taken by {attached_here[device]} meanwhile"
                )
            try:
                ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device)
            except ClientError as error:
                raise RestoreFailed(
                    f"attach-home: attaching {volume_id} to {instance_id} at {device} failed: {error_code(error)}"
                ) from None
            attached.append({"volume_id": volume_id, "device": device})
        ids = [a["volume_id"] for a in attached]
        try:
            ec2.get_waiter("volume_in_use").wait(VolumeIds=ids, WaiterConfig=ATTACH_WAIT)
        except WaiterError:
            raise RestoreFailed(
                f"attach-home: {', '.join(ids)} not attached after {_wait_seconds(ATTACH_WAIT)} s"
            ) from None
        started = False
        if plan["mount_points"]:
            # Run Command needs a running instance: the restore starts it to mount the file systems.
            try:
                ec2.start_instances(InstanceIds=[instance_id])
            except ClientError as error:
                raise RestoreFailed(
                    f"attach-home: starting {instance_id} to mount the home failed: {error_code(error)}"
                ) from None
            started = True
        logger.info(f"attached {', '.join(ids)} to {instance_id}" + (" and started it" if started else ""))
        return {"instance_id": instance_id, "attached": attached, "started": started}

    def mount(self, plan: EbsPlan, attach: Attached) -> Mounted:
        instance_id = attach["instance_id"]
        reservations = client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
        state = reservations[0]["Instances"][0]["State"]["Name"]
        if state == "pending":
            raise TargetNotReady(f"mount-home: {instance_id} is still starting")
        if state != "running":
            raise RestoreFailed(f"mount-home: {instance_id} is '{state}', not 'running'; the home was not mounted")
        try:
            output = host.run(
                instance_id,
                "MountHome",
                {"mountPoints": " ".join(plan["mount_points"])},
                step="mount-home",
                timeout=120,
            )
        except HostCommandFailed as error:
            if "InvalidInstanceId" in str(error):  # the SSM agent has not registered since the boot yet
                raise TargetNotReady(f"mount-home: the SSM agent of {instance_id} is not online yet") from None
            raise
        return {"instance_id": instance_id, "mounted": plan["mount_points"], "df": output.strip().splitlines()[-10:]}

    def complete(self, plan: EbsPlan, created: EbsCreated) -> None:
        ids = [v["volume_id"] for v in created["volumes"]]
        client("ec2").create_tags(Resources=ids, Tags=[{"Key": STATUS_TAG, "Value": RESTORED}])

    def cleanup(self, plan: EbsPlan, execution: str, keep: bool, state: dict[str, Any]) -> list[str]:
        """Only volumes this execution created and still `restoring`. An attached one was attached by this restore
        (nobody else knew it); it is detached only from a stopped instance, which this restore stops again only if
        it started it."""
        ec2 = client("ec2")
        actions: list[str] = []
        mine = [
            v
            for v in _volumes_of(execution)
            if made_by(_tags(v), self.instance.name, execution) and _tags(v).get(PART_TAG) == self.part
        ]
        if not mine:
            return actions
        if keep:
            ec2.create_tags(
                Resources=[v["VolumeId"] for v in mine], Tags=[{"Key": STATUS_TAG, "Value": RESTORE_FAILED}]
            )
            return [
                f"kept volume {v['VolumeId']} (from {v.get('SnapshotId')}) for inspection (tagged {STATUS_TAG}="
                f"{RESTORE_FAILED}){_attached_text(v)}; delete it when done"
                for v in mine
            ]
        attach: dict[str, Any] = state["attach"] if isinstance(state.get("attach"), dict) else {}
        hosts = sorted({a["InstanceId"] for v in mine for a in v.get("Attachments", [])})
        stopped = {
            h: _stop_if_started(h, bool(attach.get("started")) and attach.get("instance_id") == h, actions)
            for h in hosts
        }
        for volume in mine:
            volume_id = volume["VolumeId"]
            try:
                for attachment in volume.get("Attachments", []):
                    if not stopped[attachment["InstanceId"]]:
                        actions.append(
                            f"volume {volume_id} left attached to the running {attachment['InstanceId']}: stop it, "
                            "then detach and delete the volume by hand"
                        )
                        raise _Skip
                    ec2.detach_volume(VolumeId=volume_id, InstanceId=attachment["InstanceId"])
                    ec2.get_waiter("volume_available").wait(VolumeIds=[volume_id], WaiterConfig=ATTACH_WAIT)
                    actions.append(f"detached volume {volume_id} from {attachment['InstanceId']}")
                ec2.delete_volume(VolumeId=volume_id)
                actions.append(f"deleted volume {volume_id}")
            except _Skip:
                continue
            except (ClientError, WaiterError) as error:
                code = error_code(error) if isinstance(error, ClientError) else "not detached in time"
                actions.append(f"volume {volume_id} NOT deleted ({code}): delete it by hand")
        return actions


# --- restore helpers -----------------------------------------------------------------------------------------------

ATTACH_WAIT = {"Delay": 5, "MaxAttempts": 36}
STOP_WAIT = {"Delay": 10, "MaxAttempts": 18}
_IOPS_TYPES = {"io1", "io2", "gp3"}


class _Skip(Exception):
    pass


def _wait_seconds(config: dict[str, int]) -> int:
    return config["Delay"] * config["MaxAttempts"]


def _tags(described: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in described.get("Tags", [])}


def _backup_id(volume: VolumePlan) -> str:
    return str(volume["backup_id"])


def _volumes_of(execution: str) -> list[dict[str, Any]]:
    """Every volume the given restore execution created, found by its tag (also those of a half-finished step)."""
    paginator = client("ec2").get_paginator("describe_volumes")
    found: list[dict[str, Any]] = []
    for page in paginator.paginate(Filters=[{"Name": f"tag:{RESTORE_TAG}", "Values": [execution]}]):
        found.extend(page["Volumes"])
    return found


def _original_volume(volume_id: str) -> dict[str, Any] | None:
    if not volume_id:
        return None
    try:
        found: list[dict[str, Any]] = client("ec2").describe_volumes(VolumeIds=[volume_id])["Volumes"]
    except ClientError as error:
        if error_code(error) in ("InvalidVolume.NotFound", "InvalidVolumeID.Malformed"):
            return None
        raise
    return found[0] if found else None


def _volume_plan(
    snapshot_id: str, device: str, snapshot: dict[str, Any], wanted: HomeTarget, label: str = "target.home"
) -> VolumePlan:
    """Type, IOPS, throughput and KMS key: as given, else the original volume's (if it still exists), else gp3
    with its baseline; a volume from an encrypted snapshot is always encrypted."""
    original = _original_volume(str(snapshot.get("VolumeId", "")))
    original_type = (original or {}).get("VolumeType")
    volume_type = wanted.volume_type or original_type or "gp3"
    same_type = original is not None and original_type == volume_type
    iops = wanted.iops or ((original or {}).get("Iops") if same_type and volume_type in _IOPS_TYPES else None)
    if wanted.iops and volume_type not in _IOPS_TYPES:
        raise RestoreRefused(f"validate: {label}.iops applies only to io1, io2 and gp3 volumes, not {volume_type}")
    if volume_type in ("io1", "io2") and not iops:
        raise RestoreRefused(f"validate: {volume_type} volumes need {label}.iops (the original volume is gone)")
    throughput = (original or {}).get("Throughput") if same_type and volume_type == "gp3" else None
    kms_key = wanted.kms_key_id or ((original or {}).get("KmsKeyId") if (original or {}).get("Encrypted") else None)
    tags = _tags(snapshot)
    return {
        "snapshot_id": snapshot_id,
        "backup_id": tags.get(BACKUP_ID_TAG, ""),
        "device": device,
        "size_gb": snapshot.get("VolumeSize"),
        "volume_type": volume_type,
        "iops": iops,
        "throughput": throughput,
        "kms_key_id": kms_key,
        "encrypted": bool(kms_key or snapshot.get("Encrypted") or (original or {}).get("Encrypted")),
        "original_volume_id": snapshot.get("VolumeId"),
        "settings_from": "target" if wanted.volume_type else "original volume" if original else "defaults",
    }


def _target_instance(instance_id: str, name: str, step: str = "validate") -> dict[str, Any]:
    """The instance to attach to: it must exist, be stopped, and carry the tag that allows this tool to use it
    (IAM lets the restore attach to, start and run commands on only such instances)."""
    error: type[Exception] = RestoreRefused if step == "validate" else RestoreFailed
    try:
        reservations = client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as failure:
        if error_code(failure).startswith("InvalidInstanceID"):
            raise error(f"{step}: target instance {instance_id} does not exist") from None
        raise error(f"{step}: target instance {instance_id} cannot be described ({error_code(failure)})") from None
    if not reservations or not reservations[0]["Instances"]:
        raise error(f"{step}: target instance {instance_id} does not exist")
    instance: dict[str, Any] = reservations[0]["Instances"][0]
    state = instance.get("State", {}).get("Name")
    if state != "stopped":
        raise error(
            f"{step}: target instance {instance_id} is '{state}', not 'stopped'; a restore attaches volumes only to a "
            "stopped instance: stop it first"
        )
    if _tags(instance).get(RESTORE_TARGET_TAG) != name:
        raise error(
            f"{step}: target instance {instance_id} does not carry the tag {RESTORE_TARGET_TAG}={name}; tag it to "
            "allow this tool to attach the restored volumes to it (and to start it, with mount)"
        )
    return instance


def _stop_if_started(instance_id: str, started_by_us: bool, actions: list[str]) -> bool:
    """Whether volumes may be detached from the instance: it is stopped, or this restore started it and stopped
    it again. An instance someone else started is not stopped."""
    ec2 = client("ec2")
    state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
    if state == "stopped":
        return True
    if not started_by_us:
        return False
    try:
        ec2.stop_instances(InstanceIds=[instance_id])
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig=STOP_WAIT)
    except (ClientError, WaiterError) as error:
        code = error_code(error) if isinstance(error, ClientError) else "not stopped in time"
        actions.append(f"could not stop {instance_id}, which this restore started ({code})")
        return False
    actions.append(f"stopped {instance_id} again (this restore had started it)")
    return True


def _attached_text(volume: dict[str, Any]) -> str:
    attachments = volume.get("Attachments", [])
    return "".join(f", attached to {a['InstanceId']} at {a['Device']}" for a in attachments)
