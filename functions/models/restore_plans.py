"""What each strategy's restorer (functions/strategies/*_restore.py) resolves, creates and reports, one TypedDict per
shape: the part's plan (its check(), carried in RestorePlan.parts), what its start() created (the restore step's
result, handed to the later steps), and what it tells the operator about the restored part (progress().result).

TypedDicts, as the step results (functions/models/results.py), imported for type checking only: the state machine
carries them as JSON unchanged.
"""

from __future__ import annotations

from typing import Any, TypedDict

from functions.models.results import HostCommand

# --- EBS volumes (amazon_ebs_restore) ---------------------------------------------------------------------------------


class VolumePlan(TypedDict):
    """One volume to create from one snapshot, with the settings chosen at validation (`settings_from` says whence)."""

    snapshot_id: str
    backup_id: str
    device: str
    size_gb: int | None
    volume_type: str
    iops: int | None
    throughput: int | None
    kms_key_id: str | None
    encrypted: bool
    original_volume_id: str | None
    settings_from: str


class EbsPlan(TypedDict):
    availability_zone: str | None
    attach_to: str | None
    mount_points: list[str]
    volumes: list[VolumePlan]


class CreatedVolume(TypedDict):
    volume_id: str
    snapshot_id: str
    device: str


class EbsCreated(TypedDict):
    volumes: list[CreatedVolume]


class RestoredVolume(CreatedVolume):
    size_gb: int | None
    volume_type: str | None


class EbsRestored(TypedDict):
    kind: str
    availability_zone: str | None
    volumes: list[RestoredVolume]


class AttachedVolume(TypedDict):
    volume_id: str
    device: str


class Attached(TypedDict):
    """The attach step's result: the mount step and the failure path read it (`started`: this restore started the
    instance, so its cleanup may stop it again)."""

    instance_id: str
    attached: list[AttachedVolume]
    started: bool


class Mounted(TypedDict):
    instance_id: str
    mounted: list[str]
    df: list[str]


# --- RDS and Aurora (amazon_rds_restore) ------------------------------------------------------------------------------


class DatabaseNetwork(TypedDict):
    subnet_group: str | None
    security_group_ids: list[str] | None


class RdsPlan(TypedDict):
    snapshot: str
    instance_id: str
    original: str | None
    instance_class: str | None
    publicly_accessible: bool
    subnet_group: str | None
    security_group_ids: list[str] | None
    parameter_group: str | None


class AuroraPlan(TypedDict):
    snapshot: str
    cluster_id: str
    writer_instance_id: str
    original: str | None
    engine: str
    engine_version: str | None
    instance_class: str
    parameter_group: str | None
    writer_parameter_group: str | None
    publicly_accessible: bool
    subnet_group: str | None
    security_group_ids: list[str] | None


class RdsCreated(TypedDict):
    instance_id: str


class AuroraCreated(TypedDict):
    cluster_id: str
    writer_instance_id: str


class RdsRestored(TypedDict):
    kind: str
    instance_id: str
    endpoint: str
    engine: str | None
    instance_class: str | None
    restored_from: str


class AuroraRestored(TypedDict):
    kind: str
    cluster_id: str
    writer_instance_id: str
    endpoint: str
    reader_endpoint: str | None
    engine: str | None
    instance_class: str | None
    restored_from: str


# --- archives restored on a host (host_copy_restore) ------------------------------------------------------------------


class ArchivePlan(TypedDict):
    """The archive in S3: the version the backup made, and its checksum."""

    backup_id: str
    bucket: str
    key: str
    version_id: str
    sha256: str


class RsyncPlan(ArchivePlan):
    instance_id: str
    path: str
    owner: str
    work_path: str


class DumpPlan(ArchivePlan):
    instance_id: str
    dbname: str
    host: str
    port: int
    work_path: str


class ArchiveCreated(TypedDict):
    command: HostCommand
    started: str  # for the run log: what runs where


class HomeExtracted(TypedDict):
    instance_id: str
    path: str
    owner: str
    files: Any  # the host's count, as it printed it
    bytes: Any
    archive: str


class DatabaseLoaded(TypedDict):
    engine: str  # PostgreSQL or MySQL, for the reader
    dbname: str
    endpoint: str
    instance_id: str
    archive: str
    seconds: Any


class SearchPlan(TypedDict):
    repository: str
    snapshot: str
    indices: list[str]  # the snapshot's indices (those the configuration's patterns match)
    prefix: str
    restored: list[str]  # the new indices' names: prefix + index


class SearchCreated(TypedDict):
    restored: list[str]
    started: str


class SearchRestored(TypedDict):
    indices: list[str]
    prefix: str
    endpoint: str
    snapshot: str


# What a restore step (restore-home, restore-database ...) returns: its part's restorer's start().
PartCreated = EbsCreated | RdsCreated | AuroraCreated | ArchiveCreated | SearchCreated
