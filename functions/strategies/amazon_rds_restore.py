"""Restoring an RDS or Aurora database: a NEW DB instance (or cluster and writer) from the snapshot, named under
RESTORED_PREFIX; nothing existing is touched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, WaiterError

from functions.clients.aws import client, error_code
from functions.errors import AwsRateLimited, RestoreFailed, RestoreRefused
from functions.models.part_config import AuroraDatabaseConfig, RdsDatabaseConfig
from functions.models.restore import DatabaseTarget, RestoreTarget
from functions.observability import logger
from functions.strategies import (
    RESTORE_FAILED,
    RESTORED,
    RESTORED_PREFIX,
    STATUS_TAG,
    Artifact,
    RestoreProgress,
    Restorer,
    made_by,
    restore_tags,
)
from functions.strategies.amazon_rds import RATE_LIMITS, _tag_list

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.restore_plans import (
        AuroraCreated,
        AuroraPlan,
        AuroraRestored,
        DatabaseNetwork,
        RdsCreated,
        RdsPlan,
        RdsRestored,
    )

# Both restorers take the other's fields too: check() answers a mix-up of the two with a message that says which
# to give.
DATABASE_FIELDS = frozenset(
    {"instance_id", "cluster_id", "writer_instance_id", "instance_class", "subnet_group", "security_group_ids",
     "parameter_group"}
)  # fmt: skip


class RdsRestorer(Restorer["RdsPlan", "RdsCreated"]):
    part = "database"
    target_fields = DATABASE_FIELDS

    @property
    def source_id(self) -> str:
        assert isinstance(self.instance.database, RdsDatabaseConfig)
        return self.instance.database.instance_id

    def check(self, artifacts: list[Artifact], target: RestoreTarget) -> RdsPlan:
        wanted = target.database
        assert wanted is not None
        if wanted.cluster_id or wanted.writer_instance_id:
            raise RestoreRefused(
                "validate: target.database.cluster_id and writer_instance_id are for Aurora; this instance's "
                "database is an RDS instance: give target.database.instance_id"
            )
        if not wanted.instance_id:
            raise RestoreRefused("validate: target.database.instance_id (the NEW DB instance identifier) is required")
        _refuse_if_taken(wanted.instance_id, "instance")
        _refuse_unprefixed(("instance_id", wanted.instance_id))
        snapshot = _one(artifacts)
        original = _db_instance(self.source_id)
        groups = (original or {}).get("DBParameterGroups") or [{}]
        return {
            "snapshot": snapshot.id,
            "instance_id": wanted.instance_id,
            "original": self.source_id if original else None,
            # Without a class, RDS takes the snapshot's (the original's at the time of the backup).
            "instance_class": wanted.instance_class or (original or {}).get("DBInstanceClass"),
            "publicly_accessible": bool((original or {}).get("PubliclyAccessible", False)),
            **_network(wanted, original, self.source_id, (original or {}).get("DBSubnetGroup", {})),
            "parameter_group": wanted.parameter_group or groups[0].get("DBParameterGroupName"),
        }

    def start(self, plan: RdsPlan, execution: str) -> RdsCreated:
        new = plan["instance_id"]
        existing = _db_instance(new)
        if existing is not None:
            _must_be_mine(existing, self.instance.name, execution, "restore-database", f"DB instance {new}")
            return {"instance_id": new}  # a retried invocation: the restore already started
        tags = restore_tags(self.instance.name, plan["snapshot"], self.part, execution, f"{plan['snapshot']}-restored")
        request: dict[str, Any] = {
            "DBInstanceIdentifier": new,
            "DBSnapshotIdentifier": plan["snapshot"],
            "PubliclyAccessible": plan["publicly_accessible"],
            "DeletionProtection": False,
            "Tags": _tag_list(tags),
        }
        optional = {
            "DBInstanceClass": plan.get("instance_class"),
            "DBSubnetGroupName": plan.get("subnet_group"),
            "VpcSecurityGroupIds": plan.get("security_group_ids"),
            "DBParameterGroupName": plan.get("parameter_group"),
        }
        request |= {k: v for k, v in optional.items() if v}
        _call(
            "restore-database",
            f"RestoreDBInstanceFromDBSnapshot {plan['snapshot']} → {new}",
            client("rds").restore_db_instance_from_db_snapshot,
            request,
        )
        logger.info(f"restoring {plan['snapshot']} into DB instance {new}")
        return {"instance_id": new}

    def progress(self, plan: RdsPlan, created: RdsCreated) -> RestoreProgress:
        new = created["instance_id"]
        found = _db_instance(new)
        if found is None:
            raise RestoreFailed(f"wait-restore: DB instance {new} disappeared while it was being restored")
        status = str(found.get("DBInstanceStatus", ""))
        if status in _DB_BROKEN:
            raise RestoreFailed(f"wait-restore: DB instance {new} is '{status}'; the restore cannot complete")
        if status != "available":
            return RestoreProgress(ready=False, pending=[f"DB instance {new} ({status})"])
        endpoint = found.get("Endpoint") or {}
        restored: RdsRestored = {
            "kind": "rds-instance",
            "instance_id": new,
            "endpoint": f"{endpoint.get('Address', '?')}:{endpoint.get('Port', '?')}",
            "engine": found.get("Engine"),
            "instance_class": found.get("DBInstanceClass"),
            "restored_from": plan["snapshot"],
        }
        return RestoreProgress(ready=True, pending=[], result=restored)

    def complete(self, plan: RdsPlan, created: RdsCreated) -> None:
        found = _db_instance(created["instance_id"])
        if found is not None:
            _set_restore_status(found["DBInstanceArn"], RESTORED)

    def cleanup(self, plan: RdsPlan, execution: str, keep: bool, state: dict[str, Any]) -> list[str]:
        return _cleanup_db([("instance", plan["instance_id"])], self.instance.name, execution, keep)


class AuroraRestorer(Restorer["AuroraPlan", "AuroraCreated"]):
    part = "database"
    target_fields = DATABASE_FIELDS

    @property
    def source_id(self) -> str:
        assert isinstance(self.instance.database, AuroraDatabaseConfig)
        return self.instance.database.cluster_id

    def check(self, artifacts: list[Artifact], target: RestoreTarget) -> AuroraPlan:
        wanted = target.database
        assert wanted is not None
        if wanted.instance_id or not wanted.cluster_id or not wanted.writer_instance_id:
            raise RestoreRefused(
                "validate: this instance's database is an Aurora cluster: give target.database.cluster_id and "
                "writer_instance_id (the NEW cluster and its writer instance), not instance_id"
            )
        _refuse_if_taken(wanted.cluster_id, "cluster")
        _refuse_if_taken(wanted.writer_instance_id, "instance")
        _refuse_unprefixed(("cluster_id", wanted.cluster_id), ("writer_instance_id", wanted.writer_instance_id))
        snapshot = _one(artifacts)
        described = client("rds").describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=snapshot.id)
        engine = described["DBClusterSnapshots"][0]
        original = _db_cluster(self.source_id)
        writer = None
        for member in (original or {}).get("DBClusterMembers", []):
            if member.get("IsClusterWriter"):
                writer = _db_instance(member["DBInstanceIdentifier"])
        instance_class = wanted.instance_class or (writer or {}).get("DBInstanceClass")
        if not instance_class:
            raise RestoreRefused(
                f"validate: the original cluster {self.source_id} has no writer instance to copy the instance class "
                "from: give target.database.instance_class"
            )
        subnet_group = (original or {}).get("DBSubnetGroup")
        return {
            "snapshot": snapshot.id,
            "cluster_id": wanted.cluster_id,
            "writer_instance_id": wanted.writer_instance_id,
            "original": self.source_id if original else None,
            "engine": engine["Engine"],
            "engine_version": engine.get("EngineVersion"),
            "instance_class": instance_class,
            "parameter_group": wanted.parameter_group or (original or {}).get("DBClusterParameterGroup"),
            "writer_parameter_group": ((writer or {}).get("DBParameterGroups") or [{}])[0].get("DBParameterGroupName"),
            "publicly_accessible": bool((writer or {}).get("PubliclyAccessible", False)),
            **_network(wanted, original, self.source_id, {"DBSubnetGroupName": subnet_group} if subnet_group else {}),
        }

    def start(self, plan: AuroraPlan, execution: str) -> AuroraCreated:
        rds = client("rds")
        cluster_id, writer_id, snapshot = plan["cluster_id"], plan["writer_instance_id"], plan["snapshot"]
        tags = _tag_list(restore_tags(self.instance.name, snapshot, self.part, execution, f"{snapshot}-restored"))
        existing = _db_cluster(cluster_id)
        if existing is not None:
            _must_be_mine(existing, self.instance.name, execution, "restore-database", f"cluster {cluster_id}")
        else:
            request: dict[str, Any] = {
                "DBClusterIdentifier": cluster_id,
                "SnapshotIdentifier": snapshot,
                "Engine": plan["engine"],
                "DeletionProtection": False,
                "Tags": tags,
            }
            optional = {
                "EngineVersion": plan.get("engine_version"),
                "DBSubnetGroupName": plan.get("subnet_group"),
                "VpcSecurityGroupIds": plan.get("security_group_ids"),
                "DBClusterParameterGroupName": plan.get("parameter_group"),
            }
            request |= {k: v for k, v in optional.items() if v}
            _call(
                "restore-database",
                f"RestoreDBClusterFromSnapshot {snapshot} → {cluster_id}",
                rds.restore_db_cluster_from_snapshot,
                request,
            )
        existing_writer = _db_instance(writer_id)
        if existing_writer is not None:
            _must_be_mine(
                existing_writer, self.instance.name, execution, "restore-database", f"DB instance {writer_id}"
            )
        else:
            writer: dict[str, Any] = {
                "DBInstanceIdentifier": writer_id,
                "DBClusterIdentifier": cluster_id,
                "Engine": plan["engine"],
                "DBInstanceClass": plan["instance_class"],
                "PubliclyAccessible": plan["publicly_accessible"],
                "Tags": tags,
            }
            if plan.get("writer_parameter_group"):
                writer["DBParameterGroupName"] = plan["writer_parameter_group"]
            _call("restore-database", f"CreateDBInstance {writer_id} in {cluster_id}", rds.create_db_instance, writer)
        logger.info(f"restoring {snapshot} into cluster {cluster_id} with writer {writer_id}")
        return {"cluster_id": cluster_id, "writer_instance_id": writer_id}

    def progress(self, plan: AuroraPlan, created: AuroraCreated) -> RestoreProgress:
        cluster_id, writer_id = created["cluster_id"], created["writer_instance_id"]
        cluster, writer = _db_cluster(cluster_id), _db_instance(writer_id)
        if cluster is None or writer is None:
            gone = f"cluster {cluster_id}" if cluster is None else f"DB instance {writer_id}"
            raise RestoreFailed(f"wait-restore: {gone} disappeared while it was being restored")
        states = {
            f"cluster {cluster_id}": str(cluster.get("Status", "")),
            f"writer {writer_id}": str(writer.get("DBInstanceStatus", "")),
        }
        broken = [f"{name} is '{status}'" for name, status in states.items() if status in _DB_BROKEN]
        if broken:
            raise RestoreFailed(f"wait-restore: {'; '.join(broken)}; the restore cannot complete")
        pending = [f"{name} ({status})" for name, status in states.items() if status != "available"]
        if pending:
            return RestoreProgress(ready=False, pending=pending)
        restored: AuroraRestored = {
            "kind": "aurora-cluster",
            "cluster_id": cluster_id,
            "writer_instance_id": writer_id,
            "endpoint": f"{cluster.get('Endpoint', '?')}:{cluster.get('Port', '?')}",
            "reader_endpoint": cluster.get("ReaderEndpoint"),
            "engine": cluster.get("Engine"),
            "instance_class": writer.get("DBInstanceClass"),
            "restored_from": plan["snapshot"],
        }
        return RestoreProgress(ready=True, pending=[], result=restored)

    def complete(self, plan: AuroraPlan, created: AuroraCreated) -> None:
        cluster, writer = _db_cluster(created["cluster_id"]), _db_instance(created["writer_instance_id"])
        if cluster is not None:
            _set_restore_status(cluster["DBClusterArn"], RESTORED)
        if writer is not None:
            _set_restore_status(writer["DBInstanceArn"], RESTORED)

    def cleanup(self, plan: AuroraPlan, execution: str, keep: bool, state: dict[str, Any]) -> list[str]:
        # The writer first: a cluster with members cannot be deleted.
        return _cleanup_db(
            [("instance", plan["writer_instance_id"]), ("cluster", plan["cluster_id"])],
            self.instance.name,
            execution,
            keep,
        )


# --- restore helpers -----------------------------------------------------------------------------------------------

# Statuses from which a restoring instance or cluster never becomes available.
_DB_BROKEN = {
    "failed",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "inaccessible-encryption-credentials",
    "storage-full",
    "deleting",
}
# How long the failure path waits for a deleted writer before it deletes its cluster; with the waits for stopping
# an instance and detaching (amazon_ebs_restore) it stays within the failure Lambda's 15 minutes.
WRITER_DELETE_WAIT = {"Delay": 15, "MaxAttempts": 30}


def _one(artifacts: list[Artifact]) -> Artifact:
    if len(artifacts) != 1:
        raise RestoreRefused(f"validate: expected one database snapshot, found {len(artifacts)}")
    return artifacts[0]


def _db_instance(identifier: str) -> dict[str, Any] | None:
    try:
        found: list[dict[str, Any]] = client("rds").describe_db_instances(DBInstanceIdentifier=identifier)[
            "DBInstances"
        ]
    except ClientError as error:
        if error_code(error) in ("DBInstanceNotFound", "DBInstanceNotFoundFault"):
            return None
        raise
    return found[0] if found else None


def _db_cluster(identifier: str) -> dict[str, Any] | None:
    try:
        found: list[dict[str, Any]] = client("rds").describe_db_clusters(DBClusterIdentifier=identifier)["DBClusters"]
    except ClientError as error:
        if error_code(error) in ("DBClusterNotFoundFault", "DBClusterNotFound"):
            return None
        raise
    return found[0] if found else None


def _refuse_if_taken(identifier: str, kind: str) -> None:
    """A restore never writes over anything: the new identifier must be free (also of a cluster's instances)."""
    exists = _db_cluster(identifier) if kind == "cluster" else _db_instance(identifier)
    if exists is not None:
        what = "DB cluster" if kind == "cluster" else "DB instance"
        raise RestoreRefused(
            f"validate: the target {what} identifier '{identifier}' is already in use; a restore never overwrites "
            "an existing database: choose a new identifier"
        )


def _refuse_unprefixed(*identifiers: tuple[str, str]) -> None:
    """Restored DB instances and clusters are named RESTORED_PREFIX…: the restore may create and remove nothing else."""
    for field, identifier in identifiers:
        if not identifier.startswith(RESTORED_PREFIX):
            raise RestoreRefused(
                f"validate: target.database.{field} '{identifier}' must start with '{RESTORED_PREFIX}' (for example "
                f"'{RESTORED_PREFIX}{identifier}'): a restore creates databases only under that prefix, so that it can "
                "never touch an existing one"
            )


def _network(
    wanted: DatabaseTarget, original: dict[str, Any] | None, source: str, subnet_group: dict[str, Any]
) -> DatabaseNetwork:
    """Subnet group and security groups: as given, else the original's; without an original they must be given
    (RDS's defaults would put the restored database in the default VPC, where Bitbucket cannot reach it)."""
    groups = [
        g["VpcSecurityGroupId"] for g in (original or {}).get("VpcSecurityGroups", []) if "VpcSecurityGroupId" in g
    ]
    chosen: DatabaseNetwork = {
        "subnet_group": wanted.subnet_group or subnet_group.get("DBSubnetGroupName"),
        "security_group_ids": wanted.security_group_ids or groups or None,
    }
    if original is None and not (chosen["subnet_group"] and chosen["security_group_ids"]):
        raise RestoreRefused(
            f"validate: the original database {source} no longer exists, so its network settings cannot be copied: "
            "give target.database.subnet_group and security_group_ids"
        )
    return chosen


def _tags_of(described: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in described.get("TagList", [])}


def _must_be_mine(described: dict[str, Any], instance: str, execution: str, step: str, what: str) -> None:
    if not made_by(_tags_of(described), instance, execution):
        raise RestoreFailed(f"{step}: {what} appeared after the validation and is not this restore's; left alone")


def _call(step: str, what: str, method: Any, request: dict[str, Any]) -> None:
    try:
        method(**request)
    except ClientError as error:
        code = error_code(error)
        if code in RATE_LIMITS:
            raise AwsRateLimited(f"{step}: {what} refused for its rate limit ({code})") from None
        raise RestoreFailed(f"{step}: {what} failed: {code}") from None


def _set_restore_status(arn: str, status: str) -> None:
    client("rds").add_tags_to_resource(ResourceName=arn, Tags=[{"Key": STATUS_TAG, "Value": status}])


def _cleanup_db(resources: list[tuple[str, str]], instance: str, execution: str, keep: bool) -> list[str]:
    """Delete (or, with keep, tag restore-failed) what this execution created; anything else is left alone."""
    rds = client("rds")
    actions: list[str] = []
    for kind, identifier in resources:
        what = f"DB cluster {identifier}" if kind == "cluster" else f"DB instance {identifier}"
        described = _db_cluster(identifier) if kind == "cluster" else _db_instance(identifier)
        if described is None:
            continue
        if not made_by(_tags_of(described), instance, execution):
            actions.append(f"{what} exists but was not created by this restore: left alone")
            continue
        arn = described["DBClusterArn" if kind == "cluster" else "DBInstanceArn"]
        try:
            if keep:
                _set_restore_status(arn, RESTORE_FAILED)
                actions.append(
                    f"kept {what} for inspection (tagged {STATUS_TAG}={RESTORE_FAILED}); delete it when done"
                )
            elif kind == "cluster":
                rds.delete_db_cluster(DBClusterIdentifier=identifier, SkipFinalSnapshot=True)
                actions.append(f"deleted {what}")
            else:
                rds.delete_db_instance(
                    DBInstanceIdentifier=identifier, SkipFinalSnapshot=True, DeleteAutomatedBackups=True
                )
                rds.get_waiter("db_instance_deleted").wait(
                    DBInstanceIdentifier=identifier, WaiterConfig=WRITER_DELETE_WAIT
                )
                actions.append(f"deleted {what}")
        except (ClientError, WaiterError) as error:
            code = error_code(error) if isinstance(error, ClientError) else "still deleting"
            actions.append(f"{what} NOT deleted ({code}): delete it by hand")
    return actions
