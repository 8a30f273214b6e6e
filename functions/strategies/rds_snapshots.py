"""The RDS API calls of a database snapshot strategy, one small adapter per flavour: a DB instance's snapshots (RDS)
and a DB cluster's (Aurora) differ only by "Cluster" in 15 method and field names, spelled out here instead of
looked up by name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class SnapshotApi(Protocol):
    kind: str  # the catalog's artifact kind
    copy_operation: str  # named in a failed copy's message

    def describe_source(self, rds: Any, source_id: str) -> list[dict[str, Any]]: ...
    def source_status(self, source: dict[str, Any]) -> str | None: ...
    def create(self, rds: Any, snapshot_id: str, source_id: str, tags: list[dict[str, str]]) -> None: ...
    def pages(self, rds: Any, source_id: str | None) -> Iterator[list[dict[str, Any]]]: ...
    def describe(self, rds: Any, snapshot_id: str) -> list[dict[str, Any]]: ...
    def identifier(self, snapshot: dict[str, Any]) -> str: ...
    def arn(self, snapshot: dict[str, Any]) -> str: ...
    def delete(self, rds: Any, snapshot_id: str) -> None: ...
    def copy(self, rds: Any, source_arn: str, target_id: str, request: dict[str, Any]) -> None: ...
    def share(self, rds: Any, snapshot_id: str, change: dict[str, list[str]]) -> None: ...


class InstanceSnapshots:
    """RDS: a DB instance's manual snapshots."""

    kind = "rds-snapshot"
    copy_operation = "copy_db_snapshot"

    def describe_source(self, rds: Any, source_id: str) -> list[dict[str, Any]]:
        return list(rds.describe_db_instances(DBInstanceIdentifier=source_id)["DBInstances"])

    def source_status(self, source: dict[str, Any]) -> str | None:
        return source.get("DBInstanceStatus")

    def create(self, rds: Any, snapshot_id: str, source_id: str, tags: list[dict[str, str]]) -> None:
        rds.create_db_snapshot(DBSnapshotIdentifier=snapshot_id, DBInstanceIdentifier=source_id, Tags=tags)

    def pages(self, rds: Any, source_id: str | None) -> Iterator[list[dict[str, Any]]]:
        request = {"SnapshotType": "manual"} | ({"DBInstanceIdentifier": source_id} if source_id else {})
        for page in rds.get_paginator("describe_db_snapshots").paginate(**request):
            yield list(page["DBSnapshots"])

    def describe(self, rds: Any, snapshot_id: str) -> list[dict[str, Any]]:
        return list(rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)["DBSnapshots"])

    def identifier(self, snapshot: dict[str, Any]) -> str:
        return str(snapshot["DBSnapshotIdentifier"])

    def arn(self, snapshot: dict[str, Any]) -> str:
        return str(snapshot.get("DBSnapshotArn", ""))

    def delete(self, rds: Any, snapshot_id: str) -> None:
        rds.delete_db_snapshot(DBSnapshotIdentifier=snapshot_id)

    def copy(self, rds: Any, source_arn: str, target_id: str, request: dict[str, Any]) -> None:
        rds.copy_db_snapshot(SourceDBSnapshotIdentifier=source_arn, TargetDBSnapshotIdentifier=target_id, **request)

    def share(self, rds: Any, snapshot_id: str, change: dict[str, list[str]]) -> None:
        rds.modify_db_snapshot_attribute(DBSnapshotIdentifier=snapshot_id, AttributeName="restore", **change)


class ClusterSnapshots:
    """Aurora: a DB cluster's manual snapshots."""

    kind = "rds-cluster-snapshot"
    copy_operation = "copy_db_cluster_snapshot"

    def describe_source(self, rds: Any, source_id: str) -> list[dict[str, Any]]:
        return list(rds.describe_db_clusters(DBClusterIdentifier=source_id)["DBClusters"])

    def source_status(self, source: dict[str, Any]) -> str | None:
        return source.get("Status")

    def create(self, rds: Any, snapshot_id: str, source_id: str, tags: list[dict[str, str]]) -> None:
        rds.create_db_cluster_snapshot(
            DBClusterSnapshotIdentifier=snapshot_id, DBClusterIdentifier=source_id, Tags=tags
        )

    def pages(self, rds: Any, source_id: str | None) -> Iterator[list[dict[str, Any]]]:
        request = {"SnapshotType": "manual"} | ({"DBClusterIdentifier": source_id} if source_id else {})
        for page in rds.get_paginator("describe_db_cluster_snapshots").paginate(**request):
            yield list(page["DBClusterSnapshots"])

    def describe(self, rds: Any, snapshot_id: str) -> list[dict[str, Any]]:
        return list(rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=snapshot_id)["DBClusterSnapshots"])

    def identifier(self, snapshot: dict[str, Any]) -> str:
        return str(snapshot["DBClusterSnapshotIdentifier"])

    def arn(self, snapshot: dict[str, Any]) -> str:
        return str(snapshot.get("DBClusterSnapshotArn", ""))

    def delete(self, rds: Any, snapshot_id: str) -> None:
        rds.delete_db_cluster_snapshot(DBClusterSnapshotIdentifier=snapshot_id)

    def copy(self, rds: Any, source_arn: str, target_id: str, request: dict[str, Any]) -> None:
        rds.copy_db_cluster_snapshot(
            SourceDBClusterSnapshotIdentifier=source_arn, TargetDBClusterSnapshotIdentifier=target_id, **request
        )

    def share(self, rds: Any, snapshot_id: str, change: dict[str, list[str]]) -> None:
        rds.modify_db_cluster_snapshot_attribute(
            DBClusterSnapshotIdentifier=snapshot_id, AttributeName="restore", **change
        )
