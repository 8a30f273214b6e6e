"""Copies made on an EC2 host through SSM Run Command, archived to the stack's S3 bucket after the unlock.

- `rsync` (home): a first rsync pass while Bitbucket is live, a second one under the lock (only what changed).
- `postgresql` (database): pg_dump -Fd -j N under the lock; the password is read on the host from Secrets Manager.
- `mysql` (database): mysqldump --single-transaction under the lock (MySQL or MariaDB), the password likewise.
After the unlock each part's copy is archived on its host (tar, compressed, with a manifest of SHA-256 sums) and
uploaded to S3 with the catalog tags. The archive object is the part's artifact (kind `s3-archive`): listed,
re-tagged, pruned and deleted by those tags like the snapshots of the other strategies.
The long commands are started here and checked by the state machine (functions.clients.host.start / check); each is
one of the stack's own SSM documents (functions.models.host_operations), sent with its parameters.
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from functions.clients import host
from functions.clients.aws import error_code
from functions.errors import BackupError, PreflightFailed
from functions.models import environment
from functions.models.config import CopyTarget, InstanceConfig
from functions.models.part_config import DumpedDatabaseConfig, PostgresDatabaseConfig, RsyncHomeConfig
from functions.strategies import (
    BACKUP_ID_TAG,
    COMPLETE,
    PART_TAG,
    STATUS_TAG,
    Artifact,
    HostCopy,
    catalog_tags,
    copy_details,
    copy_refused,
    deployment_archive_bucket,
    is_ours,
    verification,
)

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.results import HostCommand

KIND = "s3-archive"


def archive_bucket() -> str:
    bucket = deployment_archive_bucket()
    if not bucket:
        raise BackupError("archive: this deployment has no archive bucket (ARCHIVE_BUCKET is not set)")
    return bucket


class HostCopyStrategy(HostCopy):
    """What rsync and postgresql share: the host, the archive and its S3 catalog."""

    def preflight(self) -> dict[str, object]:
        if not deployment_archive_bucket():
            raise PreflightFailed(f"{self.part}: this deployment has no archive bucket (ARCHIVE_BUCKET is not set)")
        return {f"{self.part}_host": self.instance_id}

    # --- the copy -------------------------------------------------------------------------------------------------

    def install(self) -> None:
        """Installs the host script into its root-only directory on the host (a no-op when the same copy is there)."""
        host.run(self.instance_id, "InstallScript", {}, step=f"{self.part}: install host script", timeout=120)

    @abstractmethod
    def _archive_sources(self, backup_id: str) -> dict[str, str]:
        """What the archive holds (`staging` and/or `dump`) and whether the dump is removed once uploaded."""

    def _archive_document(self) -> str:
        return "ArchiveUpload"

    def progress(self, backup_id: str) -> dict[str, str]:
        """Where the host reports a long copy's progress: the stack's group, one stream per run and part (read by
        `bitbucket-backup backup --wait`); nothing when the stack made no group."""
        group = environment.host_progress_log_group()
        if not group:
            return {}
        stream = f"{self.instance.name}/{backup_id}/{self.part}"
        return {"progressGroup": group, "progressStream": stream, "progressRegion": environment.region()}

    def key(self, backup_id: str) -> str:
        ext = ".tar.zst" if self.instance.archive.compressor == "zstd" else ".tar.gz"
        return f"{self.instance.name}/{backup_id}/{backup_id}-{self.part}{ext}"

    def archive(self, backup_id: str, bitbucket_version: str | None = None) -> list[HostCommand]:
        """After the unlock: archive this part's copy on its host and upload it to S3 with the catalog tags."""
        cfg = self.instance.archive
        key = self.key(backup_id)
        parameters: host.Parameters = {
            **self._archive_sources(backup_id),
            "workPath": cfg.work_path,
            "fileName": key.rsplit("/", 1)[1],
            "backupId": backup_id,
            "instance": self.instance.name,
            "compressor": cfg.compressor,
            "bitbucketVersion": bitbucket_version or "",
            "bucket": archive_bucket(),
            "key": key,
            "tags": urlencode(catalog_tags(self.instance.name, backup_id, self.part)),
            "region": environment.region(),
            **self.progress(backup_id),
        }
        step = f"archive {self.part}"
        return [
            host.start(
                self.instance_id,
                self._archive_document(),
                parameters,
                step=step,
                timeout=cfg.command_timeout_seconds,
                run=backup_id,
            )
        ]

    # --- the catalog: archive objects in S3, found by their tags -------------------------------------------------

    @property
    def bucket(self) -> str | None:
        """The stack's archive bucket, or the copy target's."""
        return self.target.archive_bucket if self.target else (deployment_archive_bucket() or None)

    def artifacts(self, backup_id: str | None = None) -> list[Artifact]:
        """One artifact per archive key: the newest version this deployment tagged complete (finalize tags the version
        the run uploaded; a newer version written later by someone else is not the backup), else the newest of its
        versions that carries this tool's tags. Its VersionId is what a restore downloads."""
        bucket = self.bucket
        if not bucket:
            return []
        s3 = self.aws("s3")
        prefix = f"{self.instance.name}/" + (f"{backup_id}/" if backup_id else "")
        versions: dict[str, list[dict[str, Any]]] = {}
        # Only this part's keys (`<backup id>-<part>.tar.*`) have their tags read: with Mesh nodes an instance's
        # prefix holds an archive per part and backup. The tags stay the authority on what is ours.
        ours = tuple(f"-{self.part}{ext}" for ext in (".tar.gz", ".tar.zst"))
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for version in page.get("Versions", []):
                if str(version["Key"]).endswith(ours):
                    versions.setdefault(version["Key"], []).append(version)
        found = []
        for key, candidates in versions.items():
            chosen: tuple[dict[str, Any], dict[str, str]] | None = None
            for version in sorted(candidates, key=lambda v: v["LastModified"], reverse=True):
                tags = object_tags(s3, bucket, key, version.get("VersionId"))
                if tags is None or not is_ours(tags, self.instance.name) or tags.get(PART_TAG) != self.part:
                    continue
                if backup_id and tags.get(BACKUP_ID_TAG) != backup_id:
                    continue
                if tags.get(STATUS_TAG) == COMPLETE:
                    chosen = (version, tags)
                    break
                chosen = chosen or (version, tags)
            if chosen is not None:
                found.append(self._artifact(bucket, key, *chosen))
        return sorted(found, key=lambda a: (a.backup_id, a.id))

    def _artifact(self, bucket: str, key: str, version: dict[str, Any], tags: dict[str, str]) -> Artifact:
        version_id = version.get("VersionId")
        head = self.aws("s3").head_object(Bucket=bucket, Key=key, **_version(version_id))
        return Artifact(
            kind=KIND,
            id=f"s3://{bucket}/{key}",
            part=self.part,
            backup_id=tags.get(BACKUP_ID_TAG, ""),
            state="completed",  # an object exists only once its upload completed
            status=tags.get(STATUS_TAG, ""),
            verified=verification(tags),
            size_gb=round(int(version.get("Size", 0)) / 2**30, 3),
            created=str(version.get("LastModified", "")),
            details={
                "bucket": bucket,
                "key": key,
                "version_id": version_id if version_id and version_id != "null" else "",
                "size": str(version.get("Size", 0)),
                "sha256": head.get("Metadata", {}).get("sha256", ""),
                **copy_details(tags),
            },
        )

    def tag(self, artifact: Artifact, tags: dict[str, str]) -> None:
        retag_object(self.aws("s3"), self.instance.name, artifact, tags, artifact.id)

    def held(self, artifact: Artifact) -> str | None:
        """An object-locked archive cannot be deleted before its retain-until date: pruning waits for it. (HEAD
        answers the lock with s3:GetObjectRetention; without Object Lock it has no such fields.)"""
        head = self.aws("s3").head_object(
            Bucket=artifact.details["bucket"],
            Key=artifact.details["key"],
            **_version(artifact.details.get("version_id")),
        )
        until = head.get("ObjectLockRetainUntilDate")
        if until is not None and until > datetime.now(UTC):
            return f"{artifact.id} is object-locked ({head.get('ObjectLockMode')}) until {until:%Y-%m-%d %H:%M} UTC"
        return None

    def lock(self, artifact: Artifact, mode: str, days: int) -> str | None:
        """S3 Object Lock retention on the backup's version (the bucket must have Object Lock enabled)."""
        until = datetime.now(UTC) + timedelta(days=days)
        self.aws("s3").put_object_retention(
            Bucket=artifact.details["bucket"],
            Key=artifact.details["key"],
            Retention={"Mode": mode.upper(), "RetainUntilDate": until},
            **_version(artifact.details.get("version_id")),
        )
        return f"retained {artifact.id} ({mode}, {days} days){' in ' + self.where if self.target else ''}"

    def delete(self, artifact: Artifact) -> None:
        """Every version of the object (the bucket is versioned: a plain delete would only hide it)."""
        delete_versions(self.aws("s3"), artifact.details["bucket"], artifact.details["key"])

    # --- disaster-recovery copies: a server-side (multipart) copy into the target's bucket ------------------------

    def start_copy(self, original: Artifact, target: CopyTarget, tags: dict[str, str], source_region: str) -> str:
        """Synchronous: the object exists in the destination only once the copy is complete. The copy is made by
        the target's role when it names one (the stack's bucket policy and key let that role read archives)."""
        assert target.archive_bucket, "validated with the config: archives need a target bucket"
        key = original.details["key"]
        extra: dict[str, Any] = {
            "TaggingDirective": "REPLACE",
            "Tagging": urlencode(tags),
            "MetadataDirective": "COPY",
        }
        if target.kms_key_id:
            extra |= {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": target.kms_key_id}
        try:
            self.aws("s3").copy(
                {"Bucket": original.details["bucket"], "Key": key, **_version(original.details.get("version_id"))},
                target.archive_bucket,
                key,
                ExtraArgs=extra,
                SourceClient=self.aws("s3"),
            )
        except ClientError as error:
            raise copy_refused(error, "CopyObject", original, target) from None
        return f"s3://{target.archive_bucket}/{key}"


class RsyncStrategy(HostCopyStrategy):
    """The shared home, or a Mesh node's (`part` mesh-<name>), copied on its own host."""

    def __init__(self, instance: InstanceConfig, part: str = "home") -> None:
        super().__init__(instance)
        self.part = part

    @property
    def config(self) -> RsyncHomeConfig:
        home = self.instance.home_of(self.part)
        assert isinstance(home, RsyncHomeConfig)
        return home

    @property
    def instance_id(self) -> str:
        return self.config.instance_id

    def _excludes(self) -> dict[str, str]:
        cfg = self.config
        # Ids by now: the validate step resolved PROJECT/slug names.
        return {"excludes": "|".join(cfg.excludes), "excludeRepos": ",".join(str(r) for r in cfg.exclude_repos)}

    def _rsync(self, step: str, backup_id: str, parallel: int = 1, scan: str = "full") -> list[HostCommand]:
        cfg = self.config
        parameters: host.Parameters = {
            "parallel": str(parallel),
            "scan": scan,
            "home": cfg.home_path,
            "staging": cfg.staging_path,
            **self._excludes(),
            **self.progress(backup_id),
        }
        timeout = cfg.command_timeout_seconds
        return [host.start(cfg.instance_id, "RsyncHome", parameters, step=step, timeout=timeout, run=backup_id)]

    def _snapshot(self, step: str, backup_id: str, check_only: bool) -> list[HostCommand]:
        cfg = self.config
        assert cfg.snapshot_path is not None
        parameters: host.Parameters = {
            "home": cfg.home_path, "snapshotPath": cfg.snapshot_path, "backupId": backup_id,
            "checkOnly": "true" if check_only else "false",
        }  # fmt: skip
        timeout = min(cfg.command_timeout_seconds, 600)  # a snapshot takes milliseconds
        return [host.start(cfg.instance_id, "SnapshotHome", parameters, step=step, timeout=timeout, run=backup_id)]

    def prepare(self, backup_id: str) -> list[HostCommand]:
        self.install()
        live = self._rsync(f"prepare {self.part}: rsync (live)", backup_id)
        if self.config.snapshot:  # a home that cannot be snapshotted fails here, before the lock
            return [
                *live,
                *self._snapshot(f"prepare {self.part}: check the btrfs snapshot", backup_id, check_only=True),
            ]
        return live

    def copy(self, backup_id: str) -> list[HostCommand]:
        if self.config.snapshot:
            return self._snapshot(f"copy {self.part}: btrfs snapshot", backup_id, check_only=False)
        cfg = self.config
        return self._rsync(
            f"copy {self.part}: rsync (locked)", backup_id, cfg.locked_pass_parallel, cfg.locked_pass_scan
        )

    def _archive_document(self) -> str:
        return "ArchiveHomeSnapshot" if self.config.snapshot else "ArchiveUpload"

    def _archive_sources(self, backup_id: str) -> dict[str, str]:
        if self.config.snapshot:
            assert self.config.snapshot_path is not None
            return {"staging": self.config.staging_path, "snapshotPath": self.config.snapshot_path, **self._excludes()}
        return {"staging": self.config.staging_path, "removeDump": "false"}

    def discard_on_host(self, backup_id: str) -> list[str]:
        cfg = self.config
        if not cfg.snapshot_path:
            return []
        parameters: host.Parameters = {"snapshotPath": cfg.snapshot_path, "backupId": backup_id}
        out = host.run(
            cfg.instance_id, "RemoveHomeSnapshot", parameters, step=f"cleanup: {self.part} snapshot", timeout=120
        )
        if '"removed": true' not in out:  # none was taken (the run failed before), or the archive removed it
            return []
        return [f"removed the {self.part}'s snapshot {cfg.snapshot_path}/{backup_id} on {cfg.instance_id}"]


class DumpStrategy(HostCopyStrategy):
    """A self-managed database dumped on its host under the lock (postgresql, mysql): the engines differ only by
    their document, the tool the step names, and pg_dump's parallel jobs."""

    part = "database"
    document: str  # the stack's SSM document that dumps
    tool: str  # what the step says runs (and the host's progress phase)

    @property
    def config(self) -> DumpedDatabaseConfig:
        assert isinstance(self.instance.database, DumpedDatabaseConfig)
        return self.instance.database

    @property
    def instance_id(self) -> str:
        return self.config.instance_id

    def dump_dir(self, backup_id: str) -> str:
        return f"{self.config.dump_path.rstrip('/')}/{backup_id}"

    def prepare(self, backup_id: str) -> list[HostCommand]:
        self.install()
        return []

    def _engine_parameters(self) -> host.Parameters:
        return {}

    def copy(self, backup_id: str) -> list[HostCommand]:
        cfg = self.config
        parameters: host.Parameters = {
            "host": cfg.host, "port": cfg.port, "user": cfg.user, "dbname": cfg.dbname,
            "dumpPath": cfg.dump_path, "backupId": backup_id, "passwordSecret": cfg.password_secret,
            # The secret's own region: the host's AWS CLI has no default region of its own on EC2.
            "region": cfg.password_secret.split(":")[3],
            **self._engine_parameters(),
            **self.progress(backup_id),
        }  # fmt: skip
        step = f"copy database: {self.tool}"
        timeout = cfg.command_timeout_seconds
        return [host.start(cfg.instance_id, self.document, parameters, step=step, timeout=timeout, run=backup_id)]

    def _archive_sources(self, backup_id: str) -> dict[str, str]:
        # A database-only archive gets an empty home/ part (made by the document). The dump is removed once it is
        # safely in S3 (the next run dumps into a new directory anyway).
        return {"dump": self.dump_dir(backup_id), "removeDump": "true"}


class PostgresStrategy(DumpStrategy):
    document, tool = "PgDump", "pg_dump"

    def _engine_parameters(self) -> host.Parameters:
        assert isinstance(self.config, PostgresDatabaseConfig)
        return {"jobs": self.config.jobs}


class MysqlStrategy(DumpStrategy):
    document, tool = "MysqlDump", "mysqldump"


def object_tags(s3: Any, bucket: str, key: str, version_id: str | None = None) -> dict[str, str] | None:
    """A catalog object's tags (of one version), None when it is gone."""
    try:
        tagset = s3.get_object_tagging(Bucket=bucket, Key=key, **_version(version_id))["TagSet"]
    except ClientError as error:
        if error_code(error) in ("NoSuchKey", "NoSuchVersion", "404"):
            return None
        raise
    return {t["Key"]: t["Value"] for t in tagset}


def retag_object(s3: Any, instance: str, artifact: Artifact, tags: dict[str, str], what: str) -> None:
    """Adds (or overwrites) tags on the object (version) of a catalog artifact, only if it carries this tool's tags:
    PutObjectTagging replaces the whole set, so the current one is merged in."""
    bucket, key = artifact.details["bucket"], artifact.details["key"]
    version = _version(artifact.details.get("version_id"))
    current = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key, **version)["TagSet"]}
    if not is_ours(current, instance):
        raise BackupError(f"{what} does not carry this tool's tags: not re-tagged")
    merged = current | tags
    s3.put_object_tagging(
        Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in merged.items()]}, **version
    )


def delete_versions(s3: Any, bucket: str, key: str) -> None:
    """Every version and delete marker of one object (in a versioned bucket a plain delete would only hide it)."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if version["Key"] == key:
                s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])


def _version(version_id: str | None) -> dict[str, str]:
    """The VersionId argument of an S3 call on one version, when the object has one (not in an unversioned bucket)."""
    return {"VersionId": version_id} if version_id and version_id != "null" else {}
