"""Restoring an archive (rsync home, pg_dump or mysqldump database): download it on a host through SSM, verify its
SHA-256 and its manifest, and extract it into an empty directory or restore the dump into a NEW database."""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from functions.clients import host
from functions.clients.aws import client
from functions.errors import HostCommandFailed, RestoreRefused
from functions.models import environment
from functions.models.config import InstanceConfig
from functions.models.part_config import DumpedDatabaseConfig, PostgresDatabaseConfig, RsyncHomeConfig
from functions.models.restore import HomeTarget, RestoreTarget, target_label
from functions.strategies import RESTORE_TARGET_TAG, Artifact, RestoreProgress, Restorer
from functions.strategies.host_copy import (
    KIND,
    DumpStrategy,
    HostCopyStrategy,
    MysqlStrategy,
    PostgresStrategy,
    RsyncStrategy,
)

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.restore_plans import (
        ArchiveCreated,
        ArchivePlan,
        DatabaseLoaded,
        DumpPlan,
        HomeExtracted,
        RsyncPlan,
    )
    from functions.models.results import HostSummary

# An archive's plan: where it is, and the host and work path it is restored on (either archive's).
HostPlan = TypeVar("HostPlan", "RsyncPlan", "DumpPlan")


# A restore's commands run at most this long (the archive's command timeout is capped by the restore's own).
_RESTORE_HISTORY_S = 2 * 86400


def run_key(execution: str) -> str:
    """What marks a restore's host commands as its own: the execution's name (unique per state machine)."""
    return execution.rsplit(":", 1)[-1]


def cancel_own(part: str, instance_id: str, execution: str) -> list[str]:
    """This restore's host command still running on its host (a stopped restore's), cancelled and waited for."""
    since = time.time() - _RESTORE_HISTORY_S
    return [f"{part}: {done}" for done in host.cancel_running([instance_id], run_key(execution), since=since)]


class ArchiveRestorer(Restorer[HostPlan, "ArchiveCreated"], Generic[HostPlan]):
    """What restoring either archive shares: the host it is restored on, and the download."""

    source: HostCopyStrategy

    def _restore_host(self, instance_id: str, purpose: str) -> None:
        """A host other than the backed-up one must carry the restore-target tag (IAM allows nothing else); the
        host script is installed there, which also proves that Run Command reaches it."""
        if instance_id != self.source.instance_id:
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

    def _archive_plan(self, artifacts: list[Artifact]) -> ArchivePlan:
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

    def _download(self, plan: HostPlan) -> host.Parameters:
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
        self, plan: HostPlan, execution: str, step: str, operation: str, parameters: host.Parameters
    ) -> ArchiveCreated:
        timeout = self.instance.archive.command_timeout_seconds
        run = run_key(execution)
        command = host.start(plan["instance_id"], operation, parameters, step=step, timeout=timeout, run=run)
        return {"command": command, "started": f"{step.split(': ', 1)[-1]} on {plan['instance_id']}"}

    def progress(self, plan: HostPlan, created: ArchiveCreated) -> RestoreProgress:
        summary = host.check(created["command"])
        if summary is None:
            return RestoreProgress(False, [f"{self.part} restore on {plan['instance_id']}"])
        return RestoreProgress(True, [], self._restored(plan, summary))

    @abstractmethod
    def _restored(self, plan: HostPlan, summary: HostSummary) -> HomeExtracted | DatabaseLoaded:
        """What the operator is told about the restored part, from the host command's summary."""

    def complete(self, plan: HostPlan, created: ArchiveCreated) -> None:
        """Nothing to hand over: a directory or a database carries no tool tag the tool could later act on."""


class RsyncRestorer(ArchiveRestorer["RsyncPlan"]):
    """The shared home's archive, or a Mesh node's (`part` mesh-<name>), extracted into a directory of its own."""

    def __init__(self, instance: InstanceConfig, part: str = "home") -> None:
        super().__init__(instance)
        self.part = part
        self.rsync = RsyncStrategy(instance, part)
        self.source = self.rsync

    @property
    def config(self) -> RsyncHomeConfig:
        return self.rsync.config

    target_fields = frozenset({"path", "instance_id", "owner"})

    def check(self, artifacts: list[Artifact], target: RestoreTarget) -> RsyncPlan:
        wanted = target.of(self.part)
        assert isinstance(wanted, HomeTarget)
        label = target_label(self.part)
        if not wanted.path:
            raise RestoreRefused(f"validate: {label}.path is required: an empty (or missing) directory for the home")
        instance_id = wanted.instance_id or self.source.instance_id
        self._restore_host(instance_id, f"{label}.instance_id")
        try:
            host.run(instance_id, "CheckTargetDirectory", {"path": wanted.path}, step="validate: target directory")
        except HostCommandFailed as error:
            if "(exit 6)" in str(error):
                raise RestoreRefused(
                    f"validate: {wanted.path} on {instance_id} exists and is not an empty directory: refusing to "
                    "restore over it"
                ) from None
            raise
        return {
            **self._archive_plan(artifacts),
            "instance_id": instance_id,
            "path": wanted.path,
            "owner": wanted.owner or self.config.owner,
            "work_path": self.instance.archive.work_path,
        }

    def start(self, plan: RsyncPlan, execution: str) -> ArchiveCreated:
        return self._start_restore(
            plan,
            execution,
            f"restore {self.part}: download and extract",
            "RestoreHome",
            self._download(plan) | {"target": plan["path"], "owner": plan["owner"]},
        )

    def _restored(self, plan: RsyncPlan, summary: HostSummary) -> HomeExtracted:
        extracted = summary.get("extract", {})
        return {
            "instance_id": plan["instance_id"],
            "path": plan["path"],
            "owner": plan["owner"],
            "files": extracted.get("files"),
            "bytes": extracted.get("content_bytes"),
            "archive": f"s3://{plan['bucket']}/{plan['key']}",
        }

    def cleanup(self, plan: RsyncPlan, execution: str, keep: bool, state: dict[str, Any]) -> list[str]:
        if not isinstance(state.get(self.part), dict):
            return []
        where = f"{plan['path']} on {plan['instance_id']}"
        # The extraction may still run (a stopped restore): it ends before its files are kept or removed.
        cancelled = cancel_own(self.part, plan["instance_id"], execution)
        if keep:
            return [*cancelled, f"{self.part}: whatever was extracted into {where} is kept for inspection"]
        # Only what extract puts there (the directory was empty, checked by validate), and only if its manifest is this
        # backup's: never a directory someone filled in the meantime.
        host.run(
            plan["instance_id"],
            "RemoveRestoredHome",
            {"path": plan["path"], "backupId": plan["backup_id"], "removeDirectory": "false"},
            step=f"restore cleanup: {self.part}",
        )
        return [*cancelled, f"{self.part}: removed what this restore extracted into {where}"]


class DumpRestorer(ArchiveRestorer["DumpPlan"]):
    """A dump (pg_dump, mysqldump) restored into a NEW database on a host through SSM; the engines differ by the
    host script's subcommand (the documents' `engine`) and pg_restore's jobs."""

    part = "database"
    engine: str  # the documents' `engine`
    engine_name: str  # what a person reads
    loader: str  # the host script's subcommand that restores (its summary's key)
    dump: DumpStrategy

    def __init__(self, instance: InstanceConfig) -> None:
        super().__init__(instance)
        self.source = self.dump

    @property
    def config(self) -> DumpedDatabaseConfig:
        return self.dump.config

    target_fields = frozenset({"dbname", "host_instance_id", "host", "port"})

    def _pg_flags(self, plan: DumpPlan) -> host.Parameters:
        cfg = self.config
        return {
            "host": plan["host"], "port": plan["port"], "user": cfg.user, "dbname": plan["dbname"],
            "passwordSecret": cfg.password_secret, "region": cfg.password_secret.split(":")[3],
            **({"engine": self.engine} if self.engine != "postgresql" else {}),
        }  # fmt: skip

    def check(self, artifacts: list[Artifact], target: RestoreTarget) -> DumpPlan:
        wanted = target.database
        assert wanted is not None
        if not wanted.dbname:
            raise RestoreRefused("validate: target.database.dbname is required: the NEW database to restore into")
        instance_id = wanted.host_instance_id or self.source.instance_id
        plan: DumpPlan = {
            **self._archive_plan(artifacts),
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

    def start(self, plan: DumpPlan, execution: str) -> ArchiveCreated:
        return self._start_restore(
            plan,
            execution,
            f"restore database: download and {self.loader}",
            "RestoreDatabase",
            self._download(plan) | self._pg_flags(plan) | {"jobs": self._jobs(), "comment": self._marker(execution)},
        )

    def _jobs(self) -> int:
        return 1

    def _restored(self, plan: DumpPlan, summary: HostSummary) -> DatabaseLoaded:
        return {
            "engine": self.engine_name,
            "dbname": plan["dbname"],
            "endpoint": f"{plan['host']}:{plan['port']}",
            "instance_id": plan["instance_id"],
            "archive": f"s3://{plan['bucket']}/{plan['key']}",
            "seconds": summary.get(self.loader, {}).get("seconds"),
        }

    def cleanup(self, plan: DumpPlan, execution: str, keep: bool, state: dict[str, Any]) -> list[str]:
        if not isinstance(state.get("database"), dict):
            return []
        where = f"{plan['dbname']} on {plan['host']}:{plan['port']}"
        cancelled = cancel_own("database", plan["instance_id"], execution)  # the load may still run
        if keep:
            return [*cancelled, f"database: {where} (if {self.loader} got that far) is kept for inspection"]
        # pg-drop / mysql-drop drop only a database that carries this execution's marker.
        host.run(
            plan["instance_id"],
            "DropRestoredDatabase",
            self._pg_flags(plan) | {"comment": self._marker(execution)},
            step="restore cleanup: database",
        )
        return [*cancelled, f"database: dropped {where} if this restore had created it"]


class PostgresRestorer(DumpRestorer):
    engine, engine_name, loader = "postgresql", "PostgreSQL", "pg-restore"

    def __init__(self, instance: InstanceConfig) -> None:
        self.dump = PostgresStrategy(instance)
        super().__init__(instance)

    def _jobs(self) -> int:
        config = self.dump.config
        assert isinstance(config, PostgresDatabaseConfig)
        return config.jobs


class MysqlRestorer(DumpRestorer):
    engine, engine_name, loader = "mysql", "MySQL", "mysql-restore"

    def __init__(self, instance: InstanceConfig) -> None:
        self.dump = MysqlStrategy(instance)
        super().__init__(instance)
