"""Copies made on an EC2 host through SSM Run Command, archived to the stack's S3 bucket after the unlock.

- `rsync` (home): a first rsync pass while Bitbucket is live, a second one under the lock (only what changed).
- `postgresql` (database): pg_dump -Fd -j N under the lock; the password is read on the host from Secrets Manager.
After the unlock each part's copy is archived on its host (tar, compressed, with a manifest of SHA-256 sums) and
uploaded to S3 with the catalog tags. The archive object is the part's artifact (kind `s3-archive`): listed,
re-tagged, pruned and deleted by those tags like the snapshots of the other strategies.
The long commands are started here and checked by the state machine (functions.clients.host.start / check); each is
one of the stack's own SSM documents (functions.models.host_operations), sent with its parameters.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from functions.clients import host
from functions.clients.aws import client, error_code
from functions.errors import BackupError, HostCommandFailed, PreflightFailed, RestoreRefused
from functions.models import environment
from functions.models.config import CopyTarget, PostgresDatabaseConfig, RsyncHomeConfig
from functions.models.restore import RestoreTarget
from functions.strategies import (
    BACKUP_ID_TAG,
    COMPLETE,
    PART_TAG,
    RESTORE_TARGET_TAG,
    STATUS_TAG,
    Artifact,
    RestoreProgress,
    Strategy,
    catalog_tags,
    copy_details,
    copy_refused,
    deployment_archive_bucket,
    is_ours,
    verification,
)

KIND = "s3-archive"


def archive_bucket() -> str:
    bucket = deployment_archive_bucket()
    if not bucket:
        raise BackupError("archive: this deployment has no archive bucket (ARCHIVE_BUCKET is not set)")
    return bucket


class HostCopyStrategy(Strategy):
    """What rsync and postgresql share: the host, the archive and its S3 catalog."""

    archives = True
    instance_id: str

    def preflight(self) -> dict[str, object]:
        if not deployment_archive_bucket():
            raise PreflightFailed(f"{self.part}: this deployment has no archive bucket (ARCHIVE_BUCKET is not set)")
        return {f"{self.part}_host": self.instance_id}

    # --- the copy -------------------------------------------------------------------------------------------------

    def install(self) -> None:
        """Installs the host script into its root-only directory on the host (a no-op when the same copy is there)."""
        host.run(self.instance_id, "InstallScript", {}, step=f"{self.part}: install host script", timeout=120)

    def prepare(self, backup_id: str) -> list[dict[str, Any]]:
        """While Bitbucket is live; returns the commands started (checked by the state machine)."""
        return []

    def copy(self, backup_id: str) -> list[dict[str, Any]]:
        """Under the lock; returns the commands started."""
        raise NotImplementedError

    def backup(self, backup_id: str) -> list[Artifact]:
        raise NotImplementedError("copy strategies are started with copy() and checked by the state machine")

    def _archive_sources(self, backup_id: str) -> dict[str, str]:
        """What the archive holds (`staging` and/or `dump`) and whether the dump is removed once uploaded."""
        raise NotImplementedError

    def key(self, backup_id: str) -> str:
        ext = ".tar.zst" if self.instance.archive.compressor == "zstd" else ".tar.gz"
        return f"{self.instance.name}/{backup_id}/{backup_id}-{self.part}{ext}"

    def archive(self, backup_id: str, bitbucket_version: str | None = None) -> list[dict[str, Any]]:
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
        }
        step = f"archive {self.part}"
        return [
            host.start(self.instance_id, "ArchiveUpload", parameters, step=step, timeout=cfg.command_timeout_seconds)
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
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for version in page.get("Versions", []):
                versions.setdefault(version["Key"], []).append(version)
        found = []
        for key, candidates in versions.items():
            chosen: tuple[dict[str, Any], dict[str, str]] | None = None
            for version in sorted(candidates, key=lambda v: v["LastModified"], reverse=True):
                tags = self._tags_of(bucket, key, version.get("VersionId"))
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

    def _tags_of(self, bucket: str, key: str, version_id: str | None) -> dict[str, str] | None:
        try:
            tagset = self.aws("s3").get_object_tagging(Bucket=bucket, Key=key, **_version(version_id))["TagSet"]
        except ClientError as error:
            if error_code(error) in ("NoSuchKey", "NoSuchVersion", "404"):
                return None
            raise
        return {t["Key"]: t["Value"] for t in tagset}

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
        s3 = self.aws("s3")
        bucket, key = artifact.details["bucket"], artifact.details["key"]
        version = _version(artifact.details.get("version_id"))
        current = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key, **version)["TagSet"]}
        if not is_ours(current, self.instance.name):
            raise BackupError(f"{artifact.id} does not carry this tool's tags: not re-tagged")
        tags = current | tags
        s3.put_object_tagging(
            Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}, **version
        )

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
        s3 = self.aws("s3")
        bucket, key = artifact.details["bucket"], artifact.details["key"]
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
            for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if version["Key"] == key:
                    s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])

    # --- restore: download, verify and extract on a host through SSM -----------------------------------------------

    def _restore_host(self, instance_id: str, purpose: str) -> None:
        """A host other than the backed-up one must carry the restore-target tag (IAM allows nothing else); the
        host script is installed there, which also proves that Run Command reaches it."""
        if instance_id != self.instance_id:
            reservations = client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
            tags = {t["Key"]: t["Value"] for r in reservations for i in r["Instances"] for t in i.get("Tags", [])}
            if tags.get(RESTORE_TARGET_TAG) != self.instance.name:
                raise RestoreRefused(
                    f"validate: {purpose} host {instance_id} is not tagged {RESTORE_TARGET_TAG}={self.instance.name}"
                )
        try:
            host.run(instance_id, "InstallScript", {}, step=f"validate: install host script on {instance_id}")
        except HostCommandFailed as error:
            raise RestoreRefused(f"validate: {purpose} host {instance_id} cannot run commands: {error}") from None

    def _archive_plan(self, artifacts: list[Artifact]) -> dict[str, Any]:
        if len(artifacts) != 1 or artifacts[0].kind != KIND:
            raise RestoreRefused(f"validate: the {self.part} of this backup is not one archive in S3")
        details = artifacts[0].details
        return {
            "backup_id": artifacts[0].backup_id,
            "bucket": details["bucket"],
            "key": details["key"],
            # The version the backup made (see artifacts()), not whatever is newest at that key now.
            "version_id": details.get("version_id", ""),
            "sha256": details["sha256"],
        }

    def _download(self, plan: dict[str, Any]) -> host.Parameters:
        """Where the archive is and where it is downloaded: a private directory (mktemp -d) in the work path, removed
        whatever happens."""
        return {
            "bucket": plan["bucket"],
            "key": plan["key"],
            "versionId": plan.get("version_id") or "",
            "workPath": plan["work_path"],
            "region": environment.region(),
        }

    def _start_restore(
        self, plan: dict[str, Any], step: str, operation: str, parameters: host.Parameters
    ) -> dict[str, Any]:
        timeout = self.instance.archive.command_timeout_seconds
        command = host.start(plan["instance_id"], operation, parameters, step=step, timeout=timeout)
        return {"command": command, "started": f"{step.split(': ', 1)[-1]} on {plan['instance_id']}"}

    def restore_status(self, plan: dict[str, Any], created: dict[str, Any]) -> RestoreProgress:
        summary = host.check(created["command"])
        if summary is None:
            return RestoreProgress(False, [f"{self.part} restore on {plan['instance_id']}"])
        return RestoreProgress(True, [], self._restored(plan, summary))

    def _restored(self, plan: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def restore_complete(self, plan: dict[str, Any], created: dict[str, Any]) -> None:
        """Nothing to hand over: a directory or a database carries no tool tag the tool could later act on."""

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
    part = "home"

    restore_target_fields = frozenset({"path", "instance_id", "owner"})

    def restore_check(self, artifacts: list[Artifact], target: RestoreTarget) -> dict[str, Any]:
        wanted = target.home
        assert wanted is not None
        if not wanted.path:
            raise RestoreRefused("validate: target.home.path is required: an empty (or missing) directory for the home")
        instance_id = wanted.instance_id or self.instance_id
        self._restore_host(instance_id, "target.home.instance_id")
        try:
            host.run(instance_id, "CheckTargetDirectory", {"path": wanted.path}, step="validate: target directory")
        except HostCommandFailed as error:
            if "(exit 6)" in str(error):
                raise RestoreRefused(
                    f"validate: {wanted.path} on {instance_id} exists and is not an empty directory: refusing to "
                    "restore over it"
                ) from None
            raise
        return self._archive_plan(artifacts) | {
            "instance_id": instance_id,
            "path": wanted.path,
            "owner": wanted.owner or self.config.owner,
            "work_path": self.instance.archive.work_path,
        }

    def restore_start(self, plan: dict[str, Any], execution: str) -> dict[str, Any]:
        return self._start_restore(
            plan,
            "restore home: download and extract",
            "RestoreHome",
            self._download(plan) | {"target": plan["path"], "owner": plan["owner"]},
        )

    def _restored(self, plan: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
        extracted = summary.get("extract", {})
        return {
            "instance_id": plan["instance_id"],
            "path": plan["path"],
            "owner": plan["owner"],
            "files": extracted.get("files"),
            "bytes": extracted.get("content_bytes"),
            "archive": f"s3://{plan['bucket']}/{plan['key']}",
        }

    def restore_cleanup(self, plan: dict[str, Any], execution: str, keep: bool, state: dict[str, Any]) -> list[str]:
        if not isinstance(state.get("home"), dict):
            return []
        where = f"{plan['path']} on {plan['instance_id']}"
        if keep:
            return [f"home: whatever was extracted into {where} is kept for inspection"]
        # Only what extract puts there (the directory was empty, checked by validate), and only if its manifest is this
        # backup's: never a directory someone filled in the meantime.
        host.run(
            plan["instance_id"],
            "RemoveRestoredHome",
            {"path": plan["path"], "backupId": plan["backup_id"], "removeDirectory": "false"},
            step="restore cleanup: home",
        )
        return [f"home: removed what this restore extracted into {where}"]

    @property
    def config(self) -> RsyncHomeConfig:
        assert isinstance(self.instance.home, RsyncHomeConfig)
        return self.instance.home

    @property
    def instance_id(self) -> str:  # type: ignore[override]
        return self.config.instance_id

    def _rsync(self, step: str) -> list[dict[str, Any]]:
        cfg = self.config
        parameters: host.Parameters = {
            "home": cfg.home_path,
            "staging": cfg.staging_path,
            "excludes": "|".join(cfg.excludes),
            # Ids by now: the validate step resolved PROJECT/slug names.
            "excludeRepos": ",".join(str(r) for r in cfg.exclude_repos),
        }
        return [host.start(cfg.instance_id, "RsyncHome", parameters, step=step, timeout=cfg.command_timeout_seconds)]

    def prepare(self, backup_id: str) -> list[dict[str, Any]]:
        self.install()
        return self._rsync("prepare home: rsync (live)")

    def copy(self, backup_id: str) -> list[dict[str, Any]]:
        return self._rsync("copy home: rsync (locked)")

    def _archive_sources(self, backup_id: str) -> dict[str, str]:
        return {"staging": self.config.staging_path, "removeDump": "false"}


class PostgresStrategy(HostCopyStrategy):
    part = "database"

    restore_target_fields = frozenset({"dbname", "host_instance_id", "host", "port"})

    def _pg_flags(self, plan: dict[str, Any]) -> host.Parameters:
        cfg = self.config
        return {
            "host": plan["host"], "port": plan["port"], "user": cfg.user, "dbname": plan["dbname"],
            "passwordSecret": cfg.password_secret, "region": cfg.password_secret.split(":")[3],
        }  # fmt: skip

    def restore_check(self, artifacts: list[Artifact], target: RestoreTarget) -> dict[str, Any]:
        wanted = target.database
        assert wanted is not None
        if not wanted.dbname:
            raise RestoreRefused("validate: target.database.dbname is required: the NEW database to restore into")
        instance_id = wanted.host_instance_id or self.instance_id
        plan = self._archive_plan(artifacts) | {
            "instance_id": instance_id,
            "dbname": wanted.dbname,
            "host": wanted.host or self.config.host,
            "port": wanted.port or self.config.port,
            "work_path": self.instance.archive.work_path,
        }
        source = (self.config.dbname, self.config.host, self.config.port)
        if (plan["dbname"], plan["host"], plan["port"]) == source:
            raise RestoreRefused(f"validate: {wanted.dbname} is the backed-up database itself: give a NEW dbname")
        self._restore_host(instance_id, "target.database.host_instance_id")
        try:
            host.run(instance_id, "CheckTargetDatabase", self._pg_flags(plan), step="validate: target database")
        except HostCommandFailed as error:
            if "(exit 6)" in str(error):
                raise RestoreRefused(
                    f"validate: database {wanted.dbname} already exists on {plan['host']}:{plan['port']}: refusing to "
                    "restore over it"
                ) from None
            raise RestoreRefused(f"validate: cannot check the target database: {error}") from None
        return plan

    @staticmethod
    def _marker(execution: str) -> str:
        return f"bitbucket-backup restore {execution}"

    def restore_start(self, plan: dict[str, Any], execution: str) -> dict[str, Any]:
        return self._start_restore(
            plan,
            "restore database: download and pg_restore",
            "RestoreDatabase",
            self._download(plan)
            | self._pg_flags(plan)
            | {"jobs": self.config.jobs, "comment": self._marker(execution)},
        )

    def _restored(self, plan: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
        return {
            "dbname": plan["dbname"],
            "endpoint": f"{plan['host']}:{plan['port']}",
            "instance_id": plan["instance_id"],
            "archive": f"s3://{plan['bucket']}/{plan['key']}",
            "seconds": summary.get("pg-restore", {}).get("seconds"),
        }

    def restore_cleanup(self, plan: dict[str, Any], execution: str, keep: bool, state: dict[str, Any]) -> list[str]:
        if not isinstance(state.get("database"), dict):
            return []
        where = f"{plan['dbname']} on {plan['host']}:{plan['port']}"
        if keep:
            return [f"database: {where} (if pg_restore got that far) is kept for inspection"]
        # pg-drop drops only a database whose comment is this execution's marker.
        host.run(
            plan["instance_id"],
            "DropRestoredDatabase",
            self._pg_flags(plan) | {"comment": self._marker(execution)},
            step="restore cleanup: database",
        )
        return [f"database: dropped {where} if this restore had created it"]

    @property
    def config(self) -> PostgresDatabaseConfig:
        assert isinstance(self.instance.database, PostgresDatabaseConfig)
        return self.instance.database

    @property
    def instance_id(self) -> str:  # type: ignore[override]
        return self.config.instance_id

    def dump_dir(self, backup_id: str) -> str:
        return f"{self.config.dump_path.rstrip('/')}/{backup_id}"

    def prepare(self, backup_id: str) -> list[dict[str, Any]]:
        self.install()
        return []

    def copy(self, backup_id: str) -> list[dict[str, Any]]:
        cfg = self.config
        parameters: host.Parameters = {
            "host": cfg.host, "port": cfg.port, "user": cfg.user, "dbname": cfg.dbname, "jobs": cfg.jobs,
            "dumpPath": cfg.dump_path, "backupId": backup_id, "passwordSecret": cfg.password_secret,
            # The secret's own region: the host's AWS CLI has no default region of its own on EC2.
            "region": cfg.password_secret.split(":")[3],
        }  # fmt: skip
        step = "copy database: pg_dump"
        return [host.start(cfg.instance_id, "PgDump", parameters, step=step, timeout=cfg.command_timeout_seconds)]

    def _archive_sources(self, backup_id: str) -> dict[str, str]:
        # A database-only archive gets an empty home/ part (made by the document). The dump is removed once it is
        # safely in S3 (the next run dumps into a new directory anyway).
        return {"dump": self.dump_dir(backup_id), "removeDump": "true"}


def _version(version_id: str | None) -> dict[str, str]:
    """The VersionId argument of an S3 call on one version, when the object has one (not in an unversioned bucket)."""
    return {"VersionId": version_id} if version_id and version_id != "null" else {}
