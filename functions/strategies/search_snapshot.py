"""The search index (OpenSearch / Elasticsearch; Amazon OpenSearch Service): a snapshot in the cluster's snapshot
repository, started under the lock (the cluster copies each shard as it was at that moment) and waited for after the
unlock, like an EBS snapshot.

The cluster cannot tag a snapshot after it is made, so the catalog is a small S3 object per snapshot in the
deployment's archive bucket, `<instance>/<backup id>/<backup id>-search.json`, tagged as an archive is (status,
verified ...); the snapshot's own metadata repeats the catalog tags, and nothing deletes a snapshot whose metadata is
not this deployment's. The snapshot is named after the backup and the deployment, so two deployments backing up
instances of the same name into one repository never share a name.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from functions.clients.search import SearchCluster, SnapshotInfo
from functions.errors import (
    BackupError,
    ConfigInvalid,
    CopyFailed,
    PreflightFailed,
    SearchRequestFailed,
    SearchUnavailable,
    SnapshotFailed,
)
from functions.models import environment
from functions.models.config import CopyTarget, InstanceConfig
from functions.models.part_config import SEARCH_PART, AmazonOpenSearchConfig, SearchIndexConfig
from functions.strategies import (
    BACKUP_ID_TAG,
    COMPLETE,
    PART_TAG,
    STATUS_TAG,
    TOOL_VALUE,
    Artifact,
    SnapshotCopy,
    catalog_tags,
    deployment_archive_bucket,
    deployment_id,
    is_ours,
    verification,
)
from functions.strategies.host_copy import delete_versions, object_tags, retag_object

KIND = "search-snapshot"
# Where an Amazon OpenSearch domain's repository keeps its files in the archive bucket (the role it assumes may
# write there only).
REPOSITORY_PREFIX = "search-repository"
# The snapshot's metadata repeats the catalog tags, without this prefix.
TAG_PREFIX = "bitbucket-backup:"
_STATES = {"IN_PROGRESS": "pending", "SUCCESS": "completed"}  # FAILED, PARTIAL, INCOMPATIBLE: error


def snapshot_name(backup_id: str) -> str:
    """The snapshot's name: the backup's id and a short digest of the deployment's id (lower case, as required)."""
    return f"{backup_id}-{hashlib.sha256(deployment_id().encode()).hexdigest()[:8]}"


def cluster(instance: InstanceConfig) -> SearchCluster:
    from functions.clients.search import SearchCluster

    config = search_config(instance)
    timeout = instance.timing.http_timeout_seconds
    if isinstance(config, AmazonOpenSearchConfig):
        return SearchCluster(config, timeout=timeout)  # signed as the function's role
    from functions.clients.secrets import credentials
    from functions.steps import asset_path

    secret = config.credentials_secret

    def read(fresh: bool) -> Any:
        found = credentials(secret, fresh=fresh)
        if not found.username or not found.password:
            raise PreflightFailed(f"secret {secret} needs 'username' and 'password' for the search cluster")
        return found

    verify = asset_path(config.ca_bundle) if config.ca_bundle else True
    return SearchCluster(config, credentials=read, timeout=timeout, verify=verify)


def search_config(instance: InstanceConfig) -> SearchIndexConfig:
    config = instance.search_index
    if config is None:
        raise ConfigInvalid(f"instance '{instance.name}' backs up no search index")
    return config


class SearchSnapshotStrategy(SnapshotCopy):
    part = SEARCH_PART
    # Not copied to other regions: the snapshot lives in the cluster's repository (replicate its bucket instead).
    copied = False

    @property
    def config(self) -> SearchIndexConfig:
        return search_config(self.instance)

    def preflight(self) -> dict[str, object]:
        """Before the lock: the cluster answers, and its repository is there and ours to write (an Amazon OpenSearch
        domain's is registered here, with the stack's role, the first time)."""
        step = "validate"
        config = self.config
        search = cluster(self.instance)
        found = search.repository_settings(step)
        if isinstance(config, AmazonOpenSearchConfig):
            wanted = self._repository_settings()
            if found is None:
                search.register_repository(step, "s3", wanted)
                return {"search_repository": f"{config.repository} (registered)"}
            settings = found.get("settings")
            mine = {k: str(settings.get(k)) for k in ("bucket", "base_path")} if isinstance(settings, dict) else {}
            if found.get("type") != "s3" or mine != {k: wanted[k] for k in ("bucket", "base_path")}:
                raise PreflightFailed(
                    f"validate: the domain's snapshot repository {config.repository} is not this deployment's (another "
                    f"bucket or path); name another one in search.repository"
                )
            return {"search_repository": config.repository}
        if found is None:
            raise PreflightFailed(
                f"validate: the search cluster has no snapshot repository {config.repository}: register it (type s3 or "
                "fs) as the cluster's administrator, then run the backup again"
            )
        return {"search_repository": f"{config.repository} ({found.get('type')})"}

    def _repository_settings(self) -> dict[str, str]:
        role = environment.search_snapshot_role()
        bucket = deployment_archive_bucket()
        if not role or not bucket:
            raise ConfigInvalid(
                f"the search snapshot role ({environment.SEARCH_SNAPSHOT_ROLE}) or the archive bucket is not set by "
                "the stack: deploy this version of the stack"
            )
        return {
            "bucket": bucket,
            "base_path": f"{REPOSITORY_PREFIX}/{self.instance.name}",
            "region": environment.region(),
            "role_arn": role,
            "server_side_encryption": "true",
        }

    # --- the copy ----------------------------------------------------------------------------------------------

    def backup(self, backup_id: str) -> list[Artifact]:
        """Under the lock: the catalog entry first (so that a failure from here on finds and removes the snapshot),
        then the snapshot, which the cluster accepts at once and completes in the background."""
        config = self.config
        name = snapshot_name(backup_id)
        tags = catalog_tags(self.instance.name, backup_id, self.part)
        bucket, key = self._bucket(), self.key(backup_id)
        entry = {"repository": config.repository, "snapshot": name, "indices": config.indices}
        s3 = self.aws("s3")
        put = s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(entry).encode(),
            ContentType="application/json",
            Tagging=urlencode(tags),
        )
        metadata = {k.removeprefix(TAG_PREFIX): v for k, v in tags.items() if k.startswith(TAG_PREFIX)}
        search = cluster(self.instance)
        try:
            search.create_snapshot("copy-search", name, config.indices, metadata)
        except (SearchUnavailable, SearchRequestFailed) as error:
            # The start may have reached the cluster although its answer was lost (or an earlier attempt of this
            # step started it): a snapshot of that name with this run's metadata is this run's. SearchUnavailable
            # from the lookup itself is retried by the state machine.
            lost = isinstance(error, SearchUnavailable) or error.kind == "invalid_snapshot_name_exception"
            found = search.snapshot("copy-search", name) if lost else None
            if found is None or not _ours(found, self.instance.name, backup_id):
                raise SnapshotFailed(str(error)) from None
        version = put.get("VersionId")
        return [self._artifact(bucket, key, version, tags, entry, "pending")]

    # --- the catalog -------------------------------------------------------------------------------------------

    def key(self, backup_id: str) -> str:
        return f"{self.instance.name}/{backup_id}/{backup_id}-{self.part}.json"

    def _bucket(self) -> str:
        bucket = deployment_archive_bucket()
        if not bucket:
            raise BackupError("copy-search: this deployment has no archive bucket for the search snapshots' catalog")
        return bucket

    def artifacts(self, backup_id: str | None = None) -> list[Artifact]:
        bucket = None if self.target else (deployment_archive_bucket() or None)
        if not bucket:
            return []  # copies in other regions: none (see `copied`)
        s3 = self.aws("s3")
        prefix = f"{self.instance.name}/" + (f"{backup_id}/" if backup_id else "")
        found = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = str(item["Key"])
                if not key.endswith(f"-{self.part}.json"):
                    continue
                tags = object_tags(s3, bucket, key)
                if tags is None or not is_ours(tags, self.instance.name) or tags.get(PART_TAG) != self.part:
                    continue
                if backup_id and tags.get(BACKUP_ID_TAG) != backup_id:
                    continue
                entry = self._entry(bucket, key)
                if entry is None:
                    continue
                state = "completed" if tags.get(STATUS_TAG) == COMPLETE else self._state(entry, tags)
                found.append(self._artifact(bucket, key, None, tags, entry, state, item))
        return sorted(found, key=lambda a: (a.backup_id, a.id))

    def _entry(self, bucket: str, key: str) -> dict[str, Any] | None:
        """The catalog entry's fields, checked: the repository must be the configured one and the snapshot named
        after the backup (an entry is this deployment's, but a step trusts no file it reads)."""
        try:
            body = self.aws("s3").get_object(Bucket=bucket, Key=key)["Body"].read(4096)
            entry = json.loads(body)
        except (ClientError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("repository") != self.config.repository:
            return None
        backup_id = key.rsplit("/", 1)[-1].removesuffix(f"-{self.part}.json")
        if entry.get("snapshot") != snapshot_name(backup_id):
            return None
        return entry

    def _state(self, entry: dict[str, Any], tags: dict[str, str]) -> str:
        """The snapshot's state in the cluster: pending, completed or error (gone, failed, or not ours)."""
        try:
            info = cluster(self.instance).snapshot("wait-snapshots", str(entry["snapshot"]))
        except BackupError:
            return "pending"  # the cluster did not answer now: asked again at the next check
        if info is None or not _ours(info, self.instance.name, tags.get(BACKUP_ID_TAG, "")):
            return "error"
        return _STATES.get(info.state, "error")

    def _artifact(
        self,
        bucket: str,
        key: str,
        version: str | None,
        tags: dict[str, str],
        entry: dict[str, Any],
        state: str,
        item: dict[str, Any] | None = None,
    ) -> Artifact:
        return Artifact(
            kind=KIND,
            id=f"{entry['repository']}/{entry['snapshot']}",
            part=self.part,
            backup_id=tags.get(BACKUP_ID_TAG, ""),
            state=state,
            status=tags.get(STATUS_TAG, ""),
            verified=verification(tags),
            created=str(item.get("LastModified", "")) if item else datetime.now(UTC).isoformat(),
            details={
                "bucket": bucket,
                "key": key,
                "repository": str(entry["repository"]),
                "snapshot": str(entry["snapshot"]),
                "endpoint": self.config.endpoint,
                **({"version_id": version} if version else {}),
            },
        )

    def tag(self, artifact: Artifact, tags: dict[str, str]) -> None:
        retag_object(self.aws("s3"), self.instance.name, artifact, tags, f"{artifact.id}: its catalog entry")

    def held(self, artifact: Artifact) -> str | None:
        return None  # a cluster's snapshot cannot be locked (see the README: immutable backups)

    def delete(self, artifact: Artifact) -> None:
        """The snapshot (only if its metadata says it is this deployment's), then every version of its entry."""
        snapshot = artifact.details["snapshot"]
        search = cluster(self.instance)
        info = search.snapshot("delete-search", snapshot)
        if info is not None:
            if not _ours(info, self.instance.name, artifact.backup_id):
                raise BackupError(
                    f"search snapshot {artifact.id} does not carry this deployment's metadata: it was not deleted"
                )
            search.delete_snapshot("delete-search", snapshot)
        delete_versions(self.aws("s3"), artifact.details["bucket"], artifact.details["key"])

    def start_copy(self, original: Artifact, target: CopyTarget, tags: dict[str, str], source_region: str) -> str:
        raise CopyFailed("copy-regions: a search snapshot is not copied to other regions")


def _ours(info: SnapshotInfo, instance: str, backup_id: str) -> bool:
    """The snapshot's metadata (the catalog tags, without their prefix) names this tool, this deployment, the
    instance and the backup."""
    meta = info.metadata
    return (
        meta.get("tool") == TOOL_VALUE
        and meta.get("deployment") == deployment_id()
        and meta.get("instance") == instance
        and meta.get("backup-id") == backup_id
    )
