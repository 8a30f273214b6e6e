"""Copies made on an EC2 host through SSM Run Command, archived to the stack's S3 bucket after the unlock.

- `rsync` (home): a first rsync pass while Bitbucket is live, a second one under the lock (only what changed).
- `postgresql` (database): pg_dump -Fd -j N under the lock; the password is read on the host from Secrets Manager.
After the unlock each part's copy is archived on its host (tar, compressed, with a manifest of SHA-256 sums) and
uploaded to S3 with the catalog tags. The archive object is the part's artifact (kind `s3-archive`): listed,
re-tagged, pruned and deleted by those tags like the snapshots of the other strategies.
The long commands are started here and checked by the state machine (functions.clients.host.start / check).
"""

from __future__ import annotations

import os
import shlex
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from functions.clients import host
from functions.clients.aws import error_code
from functions.errors import BackupError, PreflightFailed
from functions.models.config import CopyTarget, PostgresDatabaseConfig, RsyncHomeConfig
from functions.strategies import (
    BACKUP_ID_TAG,
    PART_TAG,
    STATUS_TAG,
    Artifact,
    Strategy,
    catalog_tags,
    copy_details,
    copy_refused,
    is_ours,
)

KIND = "s3-archive"


def archive_bucket() -> str:
    bucket = os.environ.get("ARCHIVE_BUCKET", "")
    if not bucket:
        raise BackupError("archive: this deployment has no archive bucket (ARCHIVE_BUCKET is not set)")
    return bucket


class HostCopyStrategy(Strategy):
    """What rsync and postgresql share: the host, the archive and its S3 catalog."""

    archives = True
    instance_id: str

    def preflight(self) -> dict[str, object]:
        if not os.environ.get("ARCHIVE_BUCKET"):
            raise PreflightFailed(f"{self.part}: this deployment has no archive bucket (ARCHIVE_BUCKET is not set)")
        return {f"{self.part}_host": self.instance_id}

    # --- the copy -------------------------------------------------------------------------------------------------

    def install(self) -> None:
        """Writes the host script to its versioned path on the host (a no-op when the same copy is there)."""
        host.run(self.instance_id, host.install_script(), step=f"{self.part}: install host script", timeout=120)

    def prepare(self, backup_id: str) -> list[dict[str, Any]]:
        """While Bitbucket is live; returns the commands started (checked by the state machine)."""
        return []

    def copy(self, backup_id: str) -> list[dict[str, Any]]:
        """Under the lock; returns the commands started."""
        raise NotImplementedError

    def backup(self, backup_id: str) -> list[Artifact]:
        raise NotImplementedError("copy strategies are started with copy() and checked by the state machine")

    def _archive_sources(self, backup_id: str) -> tuple[list[str], str, str]:
        """The archive subcommand's source flags, a command run before it, and one run after the upload."""
        raise NotImplementedError

    def key(self, backup_id: str) -> str:
        ext = ".tar.zst" if self.instance.archive.compressor == "zstd" else ".tar.gz"
        return f"{self.instance.name}/{backup_id}/{backup_id}-{self.part}{ext}"

    def archive(self, backup_id: str) -> list[dict[str, Any]]:
        """After the unlock: archive this part's copy on its host and upload it to S3 with the catalog tags."""
        cfg = self.instance.archive
        key = self.key(backup_id)
        out = f"{cfg.work_path.rstrip('/')}/{key.rsplit('/', 1)[1]}"
        sources, before, after = self._archive_sources(backup_id)
        _, path = host.host_script()
        q = shlex.quote
        tags = urlencode(catalog_tags(self.instance.name, backup_id, self.part))
        region = os.environ.get("AWS_REGION", "")
        archive = " ".join(
            q(w)
            for w in [
                "bash", path, "archive", *sources, "--out", out, "--backup-id", backup_id,
                "--instance", self.instance.name, "--compressor", cfg.compressor, "--overwrite",
            ]
        )  # fmt: skip
        upload = " ".join(
            q(w)
            for w in [
                "bash", path, "upload", "--file", out, "--bucket", archive_bucket(), "--key", key, "--tags", tags,
                *(["--region", region] if region else []),
            ]
        )  # fmt: skip
        script = "\n".join(
            [
                "set -euo pipefail",
                f"[ -f {q(path)} ] || {{ echo 'host script {path} is not installed' >&2; exit 11; }}",
                f"mkdir -p {q(cfg.work_path)}",
                f"trap 'rm -f {q(out)}' EXIT",
                before,
                archive,
                f'{upload} --sha256 "$(sha256sum {q(out)} | cut -d" " -f1)"',
                after,
            ]
        )
        return [host.start(self.instance_id, script, step=f"archive {self.part}", timeout=cfg.command_timeout_seconds)]

    # --- the catalog: archive objects in S3, found by their tags -------------------------------------------------

    @property
    def bucket(self) -> str | None:
        """The stack's archive bucket, or the copy target's."""
        return self.target.archive_bucket if self.target else os.environ.get("ARCHIVE_BUCKET")

    def artifacts(self, backup_id: str | None = None) -> list[Artifact]:
        bucket = self.bucket
        if not bucket:
            return []
        s3 = self.aws("s3")
        prefix = f"{self.instance.name}/" + (f"{backup_id}/" if backup_id else "")
        found = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                try:
                    tagset = s3.get_object_tagging(Bucket=bucket, Key=obj["Key"])["TagSet"]
                except ClientError as error:
                    if error_code(error) in ("NoSuchKey", "404"):
                        continue
                    raise
                tags = {t["Key"]: t["Value"] for t in tagset}
                if not is_ours(tags, self.instance.name) or tags.get(PART_TAG) != self.part:
                    continue
                if backup_id and tags.get(BACKUP_ID_TAG) != backup_id:
                    continue
                head = s3.head_object(Bucket=bucket, Key=obj["Key"])
                found.append(
                    Artifact(
                        kind=KIND,
                        id=f"s3://{bucket}/{obj['Key']}",
                        part=self.part,
                        backup_id=tags.get(BACKUP_ID_TAG, ""),
                        state="completed",  # an object exists only once its upload completed
                        status=tags.get(STATUS_TAG, ""),
                        size_gb=None,
                        created=str(obj.get("LastModified", "")),
                        details={
                            "bucket": bucket,
                            "key": obj["Key"],
                            "size": str(obj.get("Size", 0)),
                            "sha256": head.get("Metadata", {}).get("sha256", ""),
                            **copy_details(tags),
                        },
                    )
                )
        return sorted(found, key=lambda a: (a.backup_id, a.id))

    def set_status(self, artifact: Artifact, status: str) -> None:
        s3 = self.aws("s3")
        bucket, key = artifact.details["bucket"], artifact.details["key"]
        tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}
        if not is_ours(tags, self.instance.name):
            raise BackupError(f"{artifact.id} does not carry this tool's tags: not re-tagged")
        tags[STATUS_TAG] = status
        s3.put_object_tagging(
            Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}
        )

    def delete(self, artifact: Artifact) -> None:
        """Every version of the object (the bucket is versioned: a plain delete would only hide it)."""
        s3 = self.aws("s3")
        bucket, key = artifact.details["bucket"], artifact.details["key"]
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
            for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if version["Key"] == key:
                    s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])

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
                {"Bucket": original.details["bucket"], "Key": key},
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

    @property
    def config(self) -> RsyncHomeConfig:
        assert isinstance(self.instance.home, RsyncHomeConfig)
        return self.instance.home

    @property
    def instance_id(self) -> str:  # type: ignore[override]
        return self.config.instance_id

    def _rsync(self, step: str) -> list[dict[str, Any]]:
        cfg = self.config
        args: list[str | int] = ["--home", cfg.home_path, "--staging", cfg.staging_path]
        for pattern in cfg.excludes:
            args += ["--exclude", pattern]
        for repo in cfg.exclude_repos:
            args += ["--exclude-repo", repo]
        command = host.script_command("rsync-home", *args)
        return [host.start(cfg.instance_id, command, step=step, timeout=cfg.command_timeout_seconds)]

    def prepare(self, backup_id: str) -> list[dict[str, Any]]:
        self.install()
        return self._rsync("prepare home: rsync (live)")

    def copy(self, backup_id: str) -> list[dict[str, Any]]:
        return self._rsync("copy home: rsync (locked)")

    def _archive_sources(self, backup_id: str) -> tuple[list[str], str, str]:
        return ["--staging", self.config.staging_path], ":", ":"


class PostgresStrategy(HostCopyStrategy):
    part = "database"

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
        command = host.script_command(
            "pg-dump",
            "--host", cfg.host, "--port", cfg.port, "--user", cfg.user, "--dbname", cfg.dbname,
            "--jobs", cfg.jobs, "--out", self.dump_dir(backup_id), "--password-secret", cfg.password_secret,
        )  # fmt: skip
        mkdir = f"mkdir -p {shlex.quote(cfg.dump_path)}"
        return [
            host.start(
                cfg.instance_id,
                mkdir + "\n" + command,
                step="copy database: pg_dump",
                timeout=cfg.command_timeout_seconds,
            )
        ]

    def _archive_sources(self, backup_id: str) -> tuple[list[str], str, str]:
        # The archive format always has a home/ part; a database-only archive gets an empty one. The dump is removed
        # once it is safely in S3 (the next run dumps into a new directory anyway).
        empty = f"{self.config.dump_path.rstrip('/')}/.empty-home"
        dump = self.dump_dir(backup_id)
        return ["--staging", empty, "--dump", dump], f"mkdir -p {shlex.quote(empty)}", f"rm -rf -- {shlex.quote(dump)}"
