"""The stack's own SSM Command documents: one per host operation (functions.models.host_operations), each with
its parameters restricted by allowedPattern. The functions may send only these, never AWS-RunShellScript."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from functions.models.config import InstanceConfig
from functions.models.host_operations import OPERATIONS, content
from functions.models.part_config import (
    DumpedDatabaseConfig,
    EbsHomeConfig,
    MysqlDatabaseConfig,
    PostgresDatabaseConfig,
    RsyncHomeConfig,
)

# Which operations a kind of instance needs: a stack deploys only those (a fleet of snapshot-only instances carries
# no copy of the host script, which keeps the template within CloudFormation's size limit).
_HOST_COPY = ("InstallScript", "ArchiveUpload")
# Each archived part's own: backing up and restoring a home, or a dumped database (a role may send only these).
_ARCHIVED_HOME = ("RsyncHome", "CheckTargetDirectory", "RestoreHome", "RemoveRestoredHome")
_DUMPED_DATABASE = ("CheckTargetDatabase", "RestoreDatabase", "DropRestoredDatabase")
_EBS_HOME = ("FlushHome", "UnfreezeHome", "MountHome")
_HOME_SNAPSHOT = ("SnapshotHome", "ArchiveHomeSnapshot", "RemoveHomeSnapshot")
_DRILL_HOST = ("InstallScript", "DrillCheck", "RemoveRestoredHome", "DropRestoredDatabase")


def needed_operations(instances: list[InstanceConfig]) -> set[str]:
    needed: set[str] = set()
    for instance in instances:
        homes = instance.homes.values()  # the shared home's and each Mesh node's
        rsync = [h for h in homes if isinstance(h, RsyncHomeConfig)]
        if rsync or isinstance(instance.database, DumpedDatabaseConfig):
            needed.update(_HOST_COPY)
        if rsync:
            needed.update(_ARCHIVED_HOME)
        if isinstance(instance.database, DumpedDatabaseConfig):
            needed.update(_DUMPED_DATABASE)
        if any(h.snapshot for h in rsync):
            needed.update(_HOME_SNAPSHOT)
        if isinstance(instance.database, PostgresDatabaseConfig):
            needed.add("PgDump")  # each engine's dump only where an instance uses it
        if isinstance(instance.database, MysqlDatabaseConfig):
            needed.add("MysqlDump")
        if any(isinstance(h, EbsHomeConfig) for h in homes):
            needed.update(_EBS_HOME)
        if instance.drill and instance.drill.host_instance_id:
            needed.update(_DRILL_HOST)
    return needed


def document_prefix(stack: Stack) -> str:
    """Names are fixed (the functions find a document by the prefix in their environment): `<stack>-host-<Op>`."""
    return f"{stack.stack_name}-host-"


class HostDocuments(Construct):
    def __init__(self, scope: Construct, id: str, *, instances: list[InstanceConfig]) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.prefix = document_prefix(stack)
        self.documents: dict[str, ssm.CfnDocument] = {}
        needed = needed_operations(instances)
        for name, operation in OPERATIONS.items():
            if name not in needed:
                continue
            self.documents[name] = ssm.CfnDocument(
                self,
                name,
                name=f"{self.prefix}{name}",
                document_type="Command",
                document_format="JSON",
                target_type="/AWS::EC2::Instance",
                # A changed document becomes a new default version under the same name (the functions' names hold).
                update_method="NewVersion",
                content=content(operation),
            )

    def arns(self, *names: str) -> list[str]:
        """The ARNs of these operations' documents (what ssm:SendCommand may name); only those the stack deploys."""
        stack = Stack.of(self)
        return [
            stack.format_arn(service="ssm", resource="document", resource_name=f"{self.prefix}{n}")
            for n in names
            if n in self.documents
        ]
