"""Database on Amazon RDS (CreateDBSnapshot) or Aurora (CreateDBClusterSnapshot).

The snapshot identifier is the backup id (as in the DIY scripts), which pairs it with the EBS snapshots of the
same run even for someone looking only at the RDS console. The snapshot is taken under the lock and waited
for after the unlock.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from functions.clients.aws import client, error_code
from functions.errors import AwsRateLimited, PreflightFailed, SnapshotFailed
from functions.models.config import CopyTarget
from functions.models.part_config import AuroraDatabaseConfig, RdsDatabaseConfig
from functions.observability import logger
from functions.strategies import (
    BACKUP_ID_TAG,
    STATUS_TAG,
    Artifact,
    SnapshotCopy,
    catalog_tags,
    copy_details,
    copy_refused,
    is_ours,
    percent_of,
    verification,
)
from functions.strategies.rds_snapshots import ClusterSnapshots, InstanceSnapshots, SnapshotApi

RATE_LIMITS = {"Throttling", "ThrottlingException", "RequestLimitExceeded"}
_STATES = {
    "available": "completed",
    "creating": "pending",
    "copying": "pending",
    "failed": "error",
    "error": "error",
    "incompatible-restore": "error",
    "deleting": "error",
}


class RdsStrategy(SnapshotCopy):
    part = "database"
    # The API calls, which differ only by "Cluster" between RDS and Aurora (functions/strategies/rds_snapshots.py).
    api: SnapshotApi = InstanceSnapshots()
    kind = api.kind

    @property
    def source_id(self) -> str:
        assert isinstance(self.instance.database, RdsDatabaseConfig)
        return self.instance.database.instance_id

    def preflight(self) -> dict[str, object]:
        rds = client("rds")
        try:
            found = self.api.describe_source(rds, self.source_id)
        except ClientError as error:
            raise PreflightFailed(f"database: {self.source_id} cannot be described ({error_code(error)})") from None
        status = self.api.source_status(found[0]) if found else None
        if status != "available":
            raise PreflightFailed(f"database: {self.source_id} is '{status}', not 'available'")
        return {"database": self.source_id}

    def backup(self, backup_id: str) -> list[Artifact]:
        tags = [{"Key": k, "Value": v} for k, v in catalog_tags(self.instance.name, backup_id, self.part).items()]
        try:
            self.api.create(client("rds"), backup_id, self.source_id, tags)
        except ClientError as error:
            code = error_code(error)
            if code in RATE_LIMITS:
                raise AwsRateLimited(f"database: snapshot refused for its rate limit ({code})") from None
            raise SnapshotFailed(f"database: snapshot of {self.source_id} failed: {code}") from None
        return self.artifacts(backup_id)

    def _snapshots(self) -> list[dict[str, Any]]:
        # A copy keeps its source's instance (cluster) identifier, but the API documents that filter as naming an
        # existing instance, which a copy target has not: there the catalog tags alone select (see artifacts()).
        source = self.source_id if self.target is None else None
        return [snapshot for page in self.api.pages(self.aws("rds"), source) for snapshot in page]

    def artifacts(self, backup_id: str | None = None) -> list[Artifact]:
        found = []
        for snap in self._snapshots():
            tags = {t["Key"]: t["Value"] for t in snap.get("TagList", [])}
            if not is_ours(tags, self.instance.name) or (backup_id and tags.get(BACKUP_ID_TAG) != backup_id):
                continue
            found.append(
                Artifact(
                    kind=self.kind,
                    id=self.api.identifier(snap),
                    part=self.part,
                    backup_id=tags.get(BACKUP_ID_TAG, ""),
                    state=_STATES.get(str(snap.get("Status", "")).lower(), "pending"),
                    status=tags.get(STATUS_TAG, ""),
                    verified=verification(tags),
                    percent=percent_of(snap.get("PercentProgress")),
                    size_gb=snap.get("AllocatedStorage"),
                    created=str(snap.get("SnapshotCreateTime", "")),
                    details={
                        "arn": self.api.arn(snap),
                        "source": self.source_id,
                        **copy_details(tags),
                    },
                )
            )
        return sorted(found, key=lambda a: a.backup_id)

    def tag(self, artifact: Artifact, tags: dict[str, str]) -> None:
        self.aws("rds").add_tags_to_resource(ResourceName=artifact.details["arn"], Tags=_tag_list(tags))

    def delete(self, artifact: Artifact) -> None:
        self.api.delete(self.aws("rds"), artifact.id)

    # --- disaster-recovery copies: the same identifier (the backup id) in the destination region ---------------

    def start_copy(self, original: Artifact, target: CopyTarget, tags: dict[str, str], source_region: str) -> str:
        request: dict[str, Any] = {"SourceRegion": source_region, "Tags": _tag_list(tags)}
        # A cross-region copy of an encrypted snapshot needs a key of the destination; an unencrypted one takes none.
        try:
            source = self.api.describe(client("rds"), original.id)
            if source and (source[0].get("Encrypted") or source[0].get("StorageEncrypted")):
                request["KmsKeyId"] = target.kms_key_id
            if target.account_id:
                # The target's role copies from the source account (by the original's ARN): share it first.
                self.api.share(client("rds"), original.id, {"ValuesToAdd": [target.account_id]})
            self.api.copy(self.aws("rds"), original.details["arn"], original.id, request)
        except ClientError as error:
            raise copy_refused(error, self.api.copy_operation, original, target) from None
        logger.info(f"copying {original.id} to {target.label}")
        return original.id

    def unshare(self, original: Artifact, target: CopyTarget) -> bool:
        if not target.account_id:
            return False
        try:
            self.api.share(client("rds"), original.id, {"ValuesToRemove": [target.account_id]})
        except ClientError as error:
            # Deleted meanwhile: nothing is shared any more.
            if error_code(error) not in ("DBSnapshotNotFound", "DBClusterSnapshotNotFoundFault"):
                raise
        return True


class AuroraStrategy(RdsStrategy):
    api: SnapshotApi = ClusterSnapshots()
    kind = api.kind

    @property
    def source_id(self) -> str:
        assert isinstance(self.instance.database, AuroraDatabaseConfig)
        return self.instance.database.cluster_id


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]
