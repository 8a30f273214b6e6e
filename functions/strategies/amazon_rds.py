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
from functions.models.config import AuroraDatabaseConfig, RdsDatabaseConfig
from functions.strategies import BACKUP_ID_TAG, STATUS_TAG, Artifact, Strategy, catalog_tags, is_ours

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


class RdsStrategy(Strategy):
    part = "database"
    kind = "rds-snapshot"
    # Names of the API calls and fields, which differ only by "Cluster" between RDS and Aurora.
    _describe_source, _source_list, _source_arg = (
        "describe_db_instances",
        "DBInstances",
        "DBInstanceIdentifier",
    )
    _status_field = "DBInstanceStatus"
    _create, _snapshot_arg, _snapshot_key = "create_db_snapshot", "DBSnapshotIdentifier", "DBSnapshot"
    _describe, _snapshot_list, _arn_field = "describe_db_snapshots", "DBSnapshots", "DBSnapshotArn"
    _delete = "delete_db_snapshot"

    @property
    def source_id(self) -> str:
        assert isinstance(self.instance.database, RdsDatabaseConfig)
        return self.instance.database.instance_id

    def preflight(self) -> dict[str, object]:
        rds = client("rds")
        try:
            found = getattr(rds, self._describe_source)(**{self._source_arg: self.source_id})[self._source_list]
        except ClientError as error:
            raise PreflightFailed(f"database: {self.source_id} cannot be described ({error_code(error)})") from None
        status = found[0].get(self._status_field) if found else None
        if status != "available":
            raise PreflightFailed(f"database: {self.source_id} is '{status}', not 'available'")
        return {"database": self.source_id}

    def backup(self, backup_id: str) -> list[Artifact]:
        tags = [{"Key": k, "Value": v} for k, v in catalog_tags(self.instance.name, backup_id, self.part).items()]
        try:
            getattr(client("rds"), self._create)(
                **{self._snapshot_arg: backup_id, self._source_arg: self.source_id, "Tags": tags}
            )
        except ClientError as error:
            code = error_code(error)
            if code in RATE_LIMITS:
                raise AwsRateLimited(f"database: snapshot refused for its rate limit ({code})") from None
            raise SnapshotFailed(f"database: snapshot of {self.source_id} failed: {code}") from None
        return self.artifacts(backup_id)

    def _snapshots(self) -> list[dict[str, Any]]:
        paginator = client("rds").get_paginator(self._describe)
        found: list[dict[str, Any]] = []
        for page in paginator.paginate(**{self._source_arg: self.source_id, "SnapshotType": "manual"}):
            found.extend(page[self._snapshot_list])
        return found

    def artifacts(self, backup_id: str | None = None) -> list[Artifact]:
        found = []
        for snap in self._snapshots():
            tags = {t["Key"]: t["Value"] for t in snap.get("TagList", [])}
            if not is_ours(tags, self.instance.name) or (backup_id and tags.get(BACKUP_ID_TAG) != backup_id):
                continue
            found.append(
                Artifact(
                    kind=self.kind,
                    id=snap[self._snapshot_arg],
                    part=self.part,
                    backup_id=tags.get(BACKUP_ID_TAG, ""),
                    state=_STATES.get(str(snap.get("Status", "")).lower(), "pending"),
                    status=tags.get(STATUS_TAG, ""),
                    size_gb=snap.get("AllocatedStorage"),
                    created=str(snap.get("SnapshotCreateTime", "")),
                    details={"arn": snap.get(self._arn_field, ""), "source": self.source_id},
                )
            )
        return sorted(found, key=lambda a: a.backup_id)

    def set_status(self, artifact: Artifact, status: str) -> None:
        client("rds").add_tags_to_resource(
            ResourceName=artifact.details["arn"], Tags=[{"Key": STATUS_TAG, "Value": status}]
        )

    def delete(self, artifact: Artifact) -> None:
        getattr(client("rds"), self._delete)(**{self._snapshot_arg: artifact.id})


class AuroraStrategy(RdsStrategy):
    kind = "rds-cluster-snapshot"
    _describe_source, _source_list, _source_arg = "describe_db_clusters", "DBClusters", "DBClusterIdentifier"
    _status_field = "Status"
    _create, _snapshot_arg, _snapshot_key = (
        "create_db_cluster_snapshot",
        "DBClusterSnapshotIdentifier",
        "DBClusterSnapshot",
    )
    _describe, _snapshot_list, _arn_field = (
        "describe_db_cluster_snapshots",
        "DBClusterSnapshots",
        "DBClusterSnapshotArn",
    )
    _delete = "delete_db_cluster_snapshot"

    @property
    def source_id(self) -> str:
        assert isinstance(self.instance.database, AuroraDatabaseConfig)
        return self.instance.database.cluster_id
