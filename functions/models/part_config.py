"""What each part of an instance is copied with: the home's and the database's strategy settings, and the network
the functions that reach Bitbucket run in (`home` / `database` / `network` of an instance's configuration)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from functions.models.base import Strict

VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8,17}$")
DEVICE_NAME = re.compile(r"^/dev/[a-z0-9]+$")
EC2_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


class NetworkConfig(Strict):
    """Where the Bitbucket-facing Lambdas run; Bitbucket is usually only reachable inside its VPC."""

    subnet_ids: list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]+$")]] = Field(min_length=1)
    security_group_ids: list[Annotated[str, Field(pattern=r"^sg-[0-9a-f]+$")]] = Field(min_length=1)

    def key(self) -> str:
        return ",".join(sorted(self.subnet_ids)) + "|" + ",".join(sorted(self.security_group_ids))


class EbsHomeConfig(Strict):
    """Home directory on EBS volumes of one EC2 instance (DIY scripts: disk-amazon-ebs.sh)."""

    strategy: Literal["amazon-ebs"]
    instance_id: str = Field(pattern=EC2_INSTANCE_ID.pattern)
    # Device names (/dev/xvdf) or volume ids (vol-…) of the home and data volumes to snapshot together.
    volumes: list[str] = Field(min_length=1)
    # Mount points flushed (and optionally frozen) on the host before the snapshot.
    mount_points: list[str] = Field(default_factory=list)
    freeze: bool = False
    # A host-side watchdog unfreezes after this long even if the orchestrator never comes back.
    max_freeze_seconds: int = Field(default=60, ge=5, le=900)
    flush_timeout_seconds: int = Field(default=120, ge=5, le=3600)

    @field_validator("volumes")
    @classmethod
    def _volume_names(cls, volumes: list[str]) -> list[str]:
        for volume in volumes:
            if not (VOLUME_ID.match(volume) or DEVICE_NAME.match(volume)):
                raise ValueError(f"'{volume}' is neither a device name (/dev/xvdf) nor a volume id (vol-…)")
        if len(set(volumes)) != len(volumes):
            raise ValueError("lists the same volume twice")
        return volumes

    @field_validator("mount_points")
    @classmethod
    def _absolute(cls, mounts: list[str]) -> list[str]:
        for mount in mounts:
            if not re.match(r"^/[A-Za-z0-9._/-]*$", mount):
                raise ValueError(f"mount point '{mount}' must be an absolute path of plain characters")
        return mounts

    @model_validator(mode="after")
    def _freeze_needs_mounts(self) -> EbsHomeConfig:
        if self.freeze and not self.mount_points:
            raise ValueError("freeze is true but no mount_points are given")
        return self


ABS_PATH = r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$"


class RsyncHomeConfig(Strict):
    """Home directory on an EC2 host (or NFS it mounts), mirrored by rsync into a staging directory on that host:
    a first pass while Bitbucket is live, a second one under the lock; then archived and uploaded to S3."""

    strategy: Literal["rsync"]
    instance_id: str = Field(pattern=EC2_INSTANCE_ID.pattern)
    home_path: str = Field(pattern=ABS_PATH)
    staging_path: str = Field(pattern=ABS_PATH)
    # rsync patterns on top of the seed's defaults (/caches/, /data/db.*, /export/, /log/, /plugins/.*/, /tmp, /.lock).
    excludes: list[Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\n\r]+$")]] = Field(
        default_factory=list
    )
    # Repositories left out of the backup: ids (shared/data/repositories/ID) or "PROJECT/slug" (personal: "~USER/slug"),
    # which the validate step turns into ids through Bitbucket's REST API.
    exclude_repos: list[
        Annotated[int, Field(ge=1)] | Annotated[str, Field(pattern=r"^~?[A-Za-z0-9_-]{1,128}/[A-Za-z0-9._-]{1,128}$")]
    ] = Field(default_factory=list)
    # The user Bitbucket runs as: a restored home is chowned to it (Atlassian's installer creates atlbitbucket).
    owner: str = Field(default="atlbitbucket", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    command_timeout_seconds: int = Field(default=4 * 3600, ge=30, le=48 * 3600)
    # The locked pass: rsyncs over shards of the repositories, beside one for the rest of the home (1: one rsync).
    # The live pass stays one rsync, so as not to load a host Bitbucket is serving from.
    locked_pass_parallel: int = Field(default=1, ge=1, le=32)
    # The locked pass's scan. full: rsync compares every file of the home. changed: only what changed since the live
    # pass began is listed (find, by change time) and copied; the same tree in a fraction of the time, on a home on
    # a local file system (on NFS and other network file systems the host script scans every file, and says so; such a
    # full scan is sharded by locked_pass_parallel).
    locked_pass_scan: Literal["full", "changed"] = "full"
    # A file-system snapshot instead of the locked pass: under the lock only a read-only snapshot of the home is taken
    # (milliseconds, whatever the number of files), in snapshot_path on the same file system; after the unlock it is
    # rsync'ed into the staging directory and removed. btrfs only: the home must be a btrfs subvolume.
    snapshot: Literal["btrfs"] | None = None
    snapshot_path: str | None = Field(default=None, pattern=ABS_PATH)

    @model_validator(mode="after")
    def _separate(self) -> RsyncHomeConfig:
        home, staging = self.home_path.rstrip("/"), self.staging_path.rstrip("/")
        if home == staging or staging.startswith(home + "/") or home.startswith(staging + "/"):
            raise ValueError("staging_path and home_path must not contain each other")
        if (self.snapshot is None) != (self.snapshot_path is None):
            raise ValueError("snapshot and snapshot_path go together: the kind of snapshot and where it is made")
        if self.snapshot_path is not None:
            snapshots = self.snapshot_path.rstrip("/")
            if any(p == snapshots or p.startswith(snapshots + "/") or snapshots.startswith(p + "/")
                   for p in (home, staging)):  # fmt: skip
                raise ValueError("snapshot_path must be outside home_path and staging_path")
            if self.locked_pass_parallel != 1 or self.locked_pass_scan != "full":
                raise ValueError(
                    "locked_pass_parallel and locked_pass_scan apply to the locked rsync pass, which a snapshot "
                    "replaces"
                )
        return self


class NoHomeConfig(Strict):
    strategy: Literal["none"]


class RdsDatabaseConfig(Strict):
    strategy: Literal["amazon-rds"]
    instance_id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,62}$")


class AuroraDatabaseConfig(Strict):
    strategy: Literal["amazon-aurora"]
    cluster_id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,62}$")


class DumpedDatabaseConfig(Strict):
    """A self-managed database dumped on an EC2 host through SSM Run Command (postgresql, mysql). The password is
    read on the host from Secrets Manager; it is never on a command line."""

    instance_id: str = Field(pattern=EC2_INSTANCE_ID.pattern)
    host: str = Field(default="127.0.0.1", pattern=r"^[A-Za-z0-9._:-]+$")
    port: int = Field(ge=1, le=65535)  # each engine's default port
    user: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")
    dbname: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")
    password_secret: str = Field(pattern=r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$")
    # Where the dumps are written on the host (one directory per backup id inside it).
    dump_path: str = Field(pattern=ABS_PATH)
    command_timeout_seconds: int = Field(default=4 * 3600, ge=30, le=48 * 3600)


class PostgresDatabaseConfig(DumpedDatabaseConfig):
    """Self-managed PostgreSQL, dumped with pg_dump -Fd -j N."""

    strategy: Literal["postgresql"]
    port: int = Field(default=5432, ge=1, le=65535)
    jobs: int = Field(default=2, ge=1, le=16)


class MysqlDatabaseConfig(DumpedDatabaseConfig):
    """Self-managed MySQL or MariaDB, dumped with mysqldump --single-transaction (one consistent InnoDB snapshot)."""

    strategy: Literal["mysql"]
    port: int = Field(default=3306, ge=1, le=65535)


class FsLevelDatabaseConfig(Strict):
    """PostgreSQL whose data directory lies on the home's snapshotted file system (Atlassian's `postgresql-fslevel`):
    no copy of its own. The home's snapshot, taken under the lock, holds the data directory at the same moment as the
    repositories; PostgreSQL started on a restored copy recovers from its write-ahead log as after a power cut."""

    strategy: Literal["postgresql-fslevel"]
    data_directory: str = Field(pattern=ABS_PATH)


class NoDatabaseConfig(Strict):
    strategy: Literal["none"]


HomeConfig = Annotated[EbsHomeConfig | RsyncHomeConfig | NoHomeConfig, Field(discriminator="strategy")]
CopiedHomeConfig = EbsHomeConfig | RsyncHomeConfig
# A Mesh node's home is part `mesh-<name>` of a backup: its snapshots and archives carry that part tag. The name:
# lower-case letters, digits and single hyphens (at most 24); every event and target that names a node checks it so.
MESH_PART_PREFIX = "mesh-"
MESH_NODE_NAME = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
MESH_PART = MESH_PART_PREFIX + MESH_NODE_NAME
MESH_PART_MAX = len(MESH_PART_PREFIX) + 24


class MeshNodeConfig(Strict):
    """A Bitbucket Mesh node (Data Center 8+): a host with its own home that holds repositories. It is copied under
    the same lock and drain as the shared home and the database, in parallel with them and with the other nodes, as
    the part `mesh-<name>`: EBS snapshots of its volumes, or rsync on the node."""

    name: str = Field(min_length=1, max_length=24, pattern=rf"^{MESH_NODE_NAME}$")
    home: Annotated[CopiedHomeConfig, Field(discriminator="strategy")]

    @model_validator(mode="after")
    def _no_repository_ids(self) -> MeshNodeConfig:
        # exclude_repos names the shared home's layout (shared/data/repositories/ID); a node's differs.
        if isinstance(self.home, RsyncHomeConfig) and self.home.exclude_repos:
            raise ValueError("home.exclude_repos applies to the shared home only: use excludes on a Mesh node")
        return self

    @property
    def part(self) -> str:
        return MESH_PART_PREFIX + self.name


DatabaseConfig = Annotated[
    RdsDatabaseConfig
    | AuroraDatabaseConfig
    | PostgresDatabaseConfig
    | MysqlDatabaseConfig
    | FsLevelDatabaseConfig
    | NoDatabaseConfig,
    Field(discriminator="strategy"),
]
# Strategies that copy on a host through SSM Run Command and then archive the copy to the stack's S3 bucket.
COPY_STRATEGIES = ("rsync", "postgresql", "mysql")
# Parts with no copy of their own: inside another part's snapshot (the database in the home's).
IN_HOME_STRATEGIES = ("postgresql-fslevel",)
# What a zero-downtime backup (no lock, no drain) may use: copies taken at one moment without Bitbucket's help.
# A multi-volume CreateSnapshots is crash-consistent across the instance's volumes; RDS/Aurora snapshots are
# atomic. rsync copies files while git writes them, and a dump's snapshot is not the home snapshot's moment.
ZERO_DOWNTIME_STRATEGIES = {"home": ("amazon-ebs", "none"), "database": ("amazon-rds", "amazon-aurora", "none")}


# --- the search index (OpenSearch / Elasticsearch): a snapshot in the cluster's own snapshot repository ------------
# An endpoint: http(s), a host (no user info: credentials come from Secrets Manager or SigV4), an optional path.
SEARCH_ENDPOINT = r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/-]*)?$"
# The server's rules for repository and snapshot names: lower case, none of \ / * ? " < > | , # or whitespace.
SNAPSHOT_REPOSITORY = r"^[a-z0-9][a-z0-9._-]{0,99}$"
# The indices a snapshot takes: names or patterns (Bitbucket's own are `bitbucket-*`), never `_all` or `*` alone.
INDEX_PATTERN = r"^[a-z0-9][a-z0-9._*+-]{0,199}$"
DOMAIN_ARN = r"^arn:aws[a-z-]*:es:([a-z0-9-]+):(\d{12}):domain/([a-z][a-z0-9-]{2,27})$"


class NoSearchConfig(Strict):
    strategy: Literal["none"]


class _SearchIndexConfig(Strict):
    endpoint: str = Field(pattern=SEARCH_ENDPOINT)
    indices: list[Annotated[str, Field(pattern=INDEX_PATTERN)]] = Field(
        default_factory=lambda: ["bitbucket-*"], min_length=1, max_length=20
    )

    @field_validator("endpoint")
    @classmethod
    def _no_slash(cls, endpoint: str) -> str:
        return endpoint.rstrip("/")


class AmazonOpenSearchConfig(_SearchIndexConfig):
    """An Amazon OpenSearch Service domain: requests signed with SigV4 by the functions' roles; the snapshot
    repository (an S3 repository in the stack's archive bucket) registered by the backup with the role the stack
    deploys for it."""

    strategy: Literal["amazon-opensearch"]
    domain_arn: str = Field(pattern=DOMAIN_ARN)
    repository: str = Field(default="bitbucket-backup", pattern=SNAPSHOT_REPOSITORY)

    @property
    def region(self) -> str:
        found = re.match(DOMAIN_ARN, self.domain_arn)
        assert found is not None  # the field's pattern
        return found.group(1)


class SelfManagedSearchConfig(_SearchIndexConfig):
    """Self-managed OpenSearch or Elasticsearch: basic authentication with the secret's username and password; the
    snapshot repository (`s3` or `fs`) registered by its administrator, as only they can give it its storage."""

    strategy: Literal["opensearch"]
    repository: str = Field(pattern=SNAPSHOT_REPOSITORY)
    # Secrets Manager secret (name or ARN) holding {"username": …, "password": …}.
    credentials_secret: str = Field(min_length=1)
    # Path of a CA bundle inside the Lambda asset, for a cluster behind a private CA.
    ca_bundle: str | None = None


SearchConfig = Annotated[
    AmazonOpenSearchConfig | SelfManagedSearchConfig | NoSearchConfig, Field(discriminator="strategy")
]
SearchIndexConfig = AmazonOpenSearchConfig | SelfManagedSearchConfig
SEARCH_PART = "search"
