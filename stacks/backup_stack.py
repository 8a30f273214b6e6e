"""The stack: shared pieces (key, topic, run table, config parameters), one backup workflow per network
(Lambdas can sit in only one VPC), schedules; and the permissions between them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.models import environment as env_names
from functions.models.config import ArchiveObjectLock, ConfigError, InstanceConfig, ProjectConfig
from functions.models.steps import BACKUP, OPERATIONS, OPERATOR_UNLOCK_FOR, RESTORE
from functions.models.timeouts import execution_timeout_seconds
from functions.strategies import RESTORE_FAILED
from stacks import copy_permissions, nag, permissions, restore_permissions, search_permissions
from stacks.bundling import lambda_code
from stacks.constructs.backup_workflow import BackupGrants, BackupWorkflow, WorkflowTiming
from stacks.constructs.drill_workflow import DrillGrants, DrillWorkflow
from stacks.constructs.functions import FunctionFactory, FunctionSettings
from stacks.constructs.grants import FunctionGrants
from stacks.constructs.grants import apply as grants_apply
from stacks.constructs.host_documents import HostDocuments
from stacks.constructs.instance_config import InstanceConfigParameters
from stacks.constructs.monitoring import MonitoredMachine, Monitoring, encrypt_logs
from stacks.constructs.notifications import Notifications
from stacks.constructs.restore_workflow import RestoreGrants, RestoreWorkflow
from stacks.constructs.run_table import RunTable
from stacks.constructs.safety_net import SafetyNet
from stacks.constructs.schedules import Schedules, plan


@dataclass(frozen=True)
class StackSettings:
    config: ProjectConfig
    timing: WorkflowTiming = field(default_factory=WorkflowTiming)


def network_groups(instances: list[InstanceConfig]) -> list[list[InstanceConfig]]:
    groups: dict[str, list[InstanceConfig]] = {}
    for instance in instances:
        groups.setdefault(instance.network.key() if instance.network else "", []).append(instance)
    return list(groups.values())


class BackupStack(Stack):
    def __init__(self, scope: Construct, id: str, *, settings: StackSettings, **kwargs: object) -> None:
        super().__init__(scope, id, **kwargs)  # type: ignore[arg-type]
        config = settings.config
        self._check_copy_regions(config)
        self._check_search_regions(config)
        key = kms.Key(self, "Key", enable_key_rotation=True, description="Bitbucket DIY backup: topic and archives")
        notifications = Notifications(self, "Notifications", config=config, key=key)
        runs = RunTable(self, "Runs")  # with its own key
        prefix = f"/bitbucket-diy-backup/{id}/instances"
        parameters = InstanceConfigParameters(self, "InstanceConfig", prefix=prefix, instances=config.instances)
        code = lambda_code(with_dependencies=config.bundling == "local")
        # What the functions may run on hosts: these documents, by name, never a script of their own.
        self.host_documents = HostDocuments(self, "HostDocuments", instances=config.instances)
        environment = {
            env_names.HOST_DOCUMENT_PREFIX: self.host_documents.prefix,
            env_names.RUNS_TABLE: runs.table.table_name,
            env_names.TOPIC_ARN: notifications.topic.topic_arn,
            env_names.CONFIG_PARAMETER_PREFIX: prefix,
            # Tagged on every artifact and required by every listing, pruning and cleanup (and by IAM).
            env_names.DEPLOYMENT_ID: permissions.deployment(self),
            "POWERTOOLS_SERVICE_NAME": "bitbucket-diy-backup",
            "POWERTOOLS_METRICS_NAMESPACE": "BitbucketDiyBackup",
            "POWERTOOLS_LOG_LEVEL": config.log_level,
        }
        # The archives of the copy-type strategies (rsync, postgresql): created only when an instance uses one.
        self.archive_bucket: s3.Bucket | None = None
        archiving = [i for i in config.instances if i.uses_archive]
        if archiving:
            self.archive_bucket = s3.Bucket(
                self,
                "Archives",
                encryption=s3.BucketEncryption.KMS,
                encryption_key=key,
                bucket_key_enabled=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                versioned=True,
                enforce_ssl=True,
                **_object_lock(config.archive_object_lock, immutable=any(i.immutable for i in archiving)),
                removal_policy=RemovalPolicy.RETAIN,
            )
            nag.skip_checkov(self.archive_bucket, nag.ARCHIVE_ACCESS_LOGS)
            environment[env_names.ARCHIVE_BUCKET] = self.archive_bucket.bucket_name
            CfnOutput(self, "ArchiveBucket", value=self.archive_bucket.bucket_name)
            # Cross-account copy targets copy the archives as their own role: it may read them (and their key).
            for role_arn in copy_permissions.cross_account_readers(config.instances):
                reader = iam.ArnPrincipal(role_arn)
                self.archive_bucket.add_to_resource_policy(
                    iam.PolicyStatement(
                        principals=[reader],
                        actions=["s3:GetObject", "s3:GetObjectTagging", "s3:GetObjectVersion"],
                        resources=[self.archive_bucket.arn_for_objects("*")],
                    )
                )
                key.add_to_resource_policy(self._decrypt_through_s3(reader, config.instances))
            CfnOutput(
                self,
                "ArchiveKey",
                value=key.key_arn,
                description="The hosts' instance roles need kms:GenerateDataKey on this key to upload archives",
            )
            # The hosts' long copies report their progress here (numbers only), for `bitbucket-backup backup --wait`.
            progress = logs.LogGroup(
                self, "HostProgress", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.RETAIN
            )
            environment[env_names.HOST_PROGRESS_LOG_GROUP] = progress.log_group_name
            CfnOutput(
                self,
                "HostProgressLogGroup",
                value=progress.log_group_name,
                description="Optional: the hosts' instance roles need logs:CreateLogStream and logs:PutLogEvents on "
                "this group for the progress of rsync, pg_dump and the archive upload",
            )
        self.search_role = self._search_snapshot_role(config.instances, key, environment)
        groups = network_groups(config.instances)
        slots = plan(config.instances)  # over the whole fleet: instances of different networks share rate limits
        machines: list[MonitoredMachine] = []
        nets: list[SafetyNet] = []
        for index, instances in enumerate(groups):
            suffix = "" if len(groups) == 1 else str(index + 1)
            # Each group's functions need their own scope, or the second group's ids collide with the first's.
            scope = self if len(groups) == 1 else Construct(self, f"Functions{suffix}")
            # The execution may run as long as its slowest instance's waits, plus margin; the run records outlive it.
            timeout_s = execution_timeout_seconds(instances)
            group_environment = {**environment, env_names.EXECUTION_TIMEOUT: str(timeout_s)}
            factory = FunctionFactory(
                scope, FunctionSettings(code=code, environment=group_environment, network=instances[0].network)
            )
            timing = replace(settings.timing, timeout_hours=timeout_s // 3600)
            mesh = any(i.mesh_nodes for i in instances)
            search = any(i.search_index for i in instances)
            workflow = BackupWorkflow(self, f"Backup{suffix}", factory=factory, timing=timing, mesh=mesh, search=search)
            net = SafetyNet(
                self, f"SafetyNet{suffix}", factory=factory, state_machines=[workflow.state_machine], key=key
            )
            nets.append(net)
            fns = {**workflow.functions, OPERATIONS.safety_net.name: net.function}
            self._grant(fns, instances, runs, notifications, key, workflow.state_machine)
            # `bitbucket-backup unlock` invokes the safety net, which reaches Bitbucket where the backup's functions do.
            CfnOutput(
                self,
                f"OperatorUnlockFunction{suffix}",
                value=net.function.function_name,
                description=OPERATOR_UNLOCK_FOR + ", ".join(i.name for i in instances),
            )
            CfnOutput(
                self,
                f"BackupStateMachine{suffix}",
                value=workflow.state_machine.state_machine_arn,
                description=f"Backup state machine for: {', '.join(i.name for i in instances)}",
            )
            # The restore's executions may wait as long as the slowest instance's restore timeout, plus margin.
            restore_timeout = max(i.timing.restore_timeout_seconds for i in instances) + 3600
            drilled = [i for i in instances if i.drill]
            restore = RestoreWorkflow(
                self,
                f"Restore{suffix}",
                factory=factory,
                timeout=Duration.seconds(restore_timeout),
                timing=settings.timing,
                for_drills=bool(drilled),
                mesh=mesh,
                search=search,
            )
            restore_net = SafetyNet(
                self,
                f"RestoreSafetyNet{suffix}",
                factory=factory,
                state_machines=restore.state_machines,
                key=key,
                step=OPERATIONS.restore_safety_net,
                statuses=("ABORTED", "TIMED_OUT"),
                description="Restore executions stopped or timed out (no Catch ran): remove what they created",
            )
            restore_net.function.add_environment(env_names.DRILL_MACHINE, restore.drill_state_machine_name)
            # It reads the stopped execution's history for the plan, then cleans up as the restore's failure path.
            for machine in restore.state_machines:
                machine.grant_read(restore_net.function)
            nets.append(restore_net)
            self._grant_restore(
                {**restore.functions, OPERATIONS.restore_safety_net.name: restore_net.function},
                instances,
                notifications,
                key,
            )
            # Every step loads its configuration from its instance's parameter, never from its event.
            self._read_configuration(
                f"ReadsConfiguration{suffix}",
                [*fns.values(), *restore.functions.values(), restore_net.function],
                instances,
                parameters,
            )
            names = [i.name for i in instances]
            machines += [
                MonitoredMachine("Backup", workflow.state_machine, names),
                MonitoredMachine("Restore", restore.state_machine, names),
            ]
            drill = None
            if drilled:
                checks = max(i.drill.command_timeout_seconds for i in drilled if i.drill)
                drill = DrillWorkflow(
                    self,
                    f"Drill{suffix}",
                    factory=factory,
                    restore=restore,
                    timeout=Duration.seconds(restore_timeout + checks + 3600),
                    timing=settings.timing,
                )
                self._grant_drill(drill.functions, drilled, notifications, key)
                self._read_configuration(
                    f"DrillReadsConfiguration{suffix}", drill.functions.values(), drilled, parameters
                )
                machines.append(MonitoredMachine("Drill", drill.state_machine, [i.name for i in drilled]))
                CfnOutput(
                    self,
                    f"DrillStateMachine{suffix}",
                    value=drill.state_machine.state_machine_arn,
                    description=f"Restore drill state machine for: {', '.join(i.name for i in drilled)}",
                )
            Schedules(
                self,
                f"Schedules{suffix}",
                instances=instances,
                state_machine=workflow.state_machine,
                slots=slots,
                drill_state_machine=drill.state_machine if drill else None,
            )
            CfnOutput(
                self,
                f"RestoreStateMachine{suffix}",
                value=restore.state_machine.state_machine_arn,
                description=f"Restore state machine for: {', '.join(i.name for i in instances)}",
            )
        # The staleness check only calls AWS APIs, so it runs outside any VPC: one for the whole fleet.
        monitoring = Monitoring(
            self,
            "Monitoring",
            factory=FunctionFactory(self, FunctionSettings(code=code, environment=environment)),
            instances=config.instances,
            machines=machines,
            safety_nets=nets,
            topic=notifications.topic,
            key=key,
        )
        self._grant_staleness_check(monitoring.check, config.instances, prefix)
        encrypt_logs(self)
        CfnOutput(self, "Dashboard", value=monitoring.dashboard.dashboard_name)
        CfnOutput(self, "NotificationTopic", value=notifications.topic.topic_arn)
        CfnOutput(self, "RunTable", value=runs.table.table_name)
        CfnOutput(
            self,
            "DeploymentId",
            value=permissions.deployment(self),
            description="Tagged on every artifact (bitbucket-backup:deployment): this deployment touches no other's",
        )

    def _search_snapshot_role(
        self, instances: list[InstanceConfig], key: kms.IKey, environment: dict[str, str]
    ) -> iam.Role | None:
        """The role an Amazon OpenSearch Service domain assumes to write its snapshot repository (the archive bucket's
        `search-repository/<instance>/`), only where an instance backs up such a domain's index."""
        domains = search_permissions.domains(instances)
        if not domains or self.archive_bucket is None:
            return None
        role = iam.Role(
            self,
            "SearchSnapshotRole",
            assumed_by=iam.ServicePrincipal(
                "es.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": self.account},
                    "ArnLike": {"aws:SourceArn": sorted({d.domain_arn for d in domains})},
                },
            ),
            description="Amazon OpenSearch Service writes the search index's snapshots to the archive bucket",
        )
        for statement in search_permissions.repository_access(self.archive_bucket.bucket_arn, instances):
            role.add_to_policy(statement)
        key.grant_encrypt_decrypt(role)
        environment[env_names.SEARCH_SNAPSHOT_ROLE] = role.role_arn
        CfnOutput(
            self,
            "SearchSnapshotRoleArn",
            value=role.role_arn,
            description="The search domain's snapshot repository role: map it in the domain's security plugin if "
            "fine-grained access control is on (see README, The search index)",
        )
        return role

    def _decrypt_through_s3(self, reader: iam.ArnPrincipal, instances: list[InstanceConfig]) -> iam.PolicyStatement:
        """A cross-account copy role may decrypt archives only as S3 reads them for it (in this region or where its
        copies run), never call the key itself."""
        regions = {self.region, *(t.region for i in instances for t in i.copies if t.role_arn == reader.arn)}
        return iam.PolicyStatement(
            principals=[reader],
            actions=["kms:Decrypt"],
            resources=["*"],
            conditions={"StringEquals": {"kms:ViaService": sorted(f"s3.{r}.amazonaws.com" for r in regions)}},
        )

    def _check_search_regions(self, config: ProjectConfig) -> None:
        """An Amazon OpenSearch domain's snapshot repository is the stack's archive bucket, which must be in the
        domain's region."""
        if Token.is_unresolved(self.region):
            return
        for domain in search_permissions.domains(config.instances):
            if domain.region != self.region:
                raise ConfigError(
                    f"search.domain_arn {domain.domain_arn} is in {domain.region}, but its snapshot repository is this "
                    f"stack's archive bucket in {self.region}: deploy the stack to the domain's region"
                )

    def _check_copy_regions(self, config: ProjectConfig) -> None:
        """A disaster-recovery copy in the stack's own region (and account) protects against nothing."""
        if Token.is_unresolved(self.region):
            return
        for instance in config.instances:
            for target in instance.copies:
                if target.region == self.region and target.account_id in (None, self.account):
                    raise ConfigError(
                        f"instance '{instance.name}': copies: {target.region} is this stack's own region; "
                        "disaster-recovery copies must go to another region"
                    )

    def _grant(
        self,
        fns: dict[str, lambda_.Function],
        instances: list[InstanceConfig],
        runs: RunTable,
        notifications: Notifications,
        key: kms.IKey,
        machine: sfn.IStateMachine,
    ) -> None:
        """Each of the backup's functions (and its safety net) gets what its step needs, from BackupGrants."""
        for fn in fns.values():
            # Single-item access only: no Scan, Query or batch writes on the run table.
            runs.table.grant(fn, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
            runs.key.grant_encrypt_decrypt(fn)
            key.grant_encrypt_decrypt(fn)  # the topic's and the archives' key
        secret = (permissions.read_secrets(self, instances),)
        describe = tuple(permissions.describe(instances))
        docs = self.host_documents.arns

        def hosts(*operations: str, only: permissions.Homes = "all") -> tuple[iam.PolicyStatement, ...]:
            """Run Command with these documents of the stack's own (none: only reading results), on the hosts of
            `only` these homes (and the database's)."""
            return tuple(permissions.host_commands(self, instances, docs(*operations), only))

        bucket = self.archive_bucket.bucket_arn if self.archive_bucket is not None else None
        arn = self._archives_of(instances)
        archives = tuple(permissions.read_archives(arn)) if arn is not None else ()

        def search(*methods: str) -> tuple[iam.PolicyStatement, ...]:
            """Requests to the instances' search clusters with these HTTP methods (none without a search index)."""
            return tuple(search_permissions.cluster(self, instances, *methods))

        def undo(role: str) -> tuple[iam.PolicyStatement, ...]:
            """Deleting backups: PRUNE (complete ones past retention) or FAILURE (only a run's unfinished ones)."""
            own = (
                *permissions.manage_own_snapshots(self, instances, role),
                *copy_permissions.manage_own_copies(self, instances, role),
            )
            return (*own, *permissions.manage_own_archives(self, arn, instances, role)) if arn is not None else own

        # Only the pruning step (finalize) deletes complete backups; the failure path and the safety net only what
        # is not complete (their own run's unfinished artifacts).
        stop = tuple(permissions.cancel_host_commands(instances))
        # A failed run's home snapshot is removed by its failure path (only stacks with snapshots deploy the document).
        snapshots = hosts("RemoveHomeSnapshot") if docs("RemoveHomeSnapshot") else ()
        failure = FunctionGrants(
            (*secret, *describe, *undo(permissions.FAILURE), *archives, *stop, *snapshots, *search("GET", "DELETE")),
            publishes=True,
        )
        registers = search_permissions.register_repository(self.search_role)
        grants = BackupGrants(
            validate=FunctionGrants((*secret, *describe, *archives, *search("GET", "PUT"), *registers)),
            lock=FunctionGrants(secret),
            start_backup=FunctionGrants(secret),
            wait_drained=FunctionGrants(secret),
            # Each copy step also undoes its own copy when it finds its run already discarded (functions/backup.py).
            copy_home=FunctionGrants(
                (
                    *describe,
                    *permissions.create_home_snapshots(self, instances, docs("FlushHome", "UnfreezeHome")),
                    *hosts("RsyncHome", "SnapshotHome", "RemoveHomeSnapshot", only="shared"),
                    *permissions.undo_own_copies(self, instances, "shared"),
                )
            ),
            # The Mesh nodes' homes, and nothing of the shared home's or the database's (where an instance has nodes).
            copy_mesh=FunctionGrants(
                (
                    *describe,
                    *permissions.create_home_snapshots(self, instances, docs("FlushHome", "UnfreezeHome"), "mesh"),
                    *hosts("RsyncHome", "SnapshotHome", "RemoveHomeSnapshot", only="mesh"),
                    *permissions.undo_own_copies(self, instances, "mesh"),
                )
            )
            if BACKUP.copy_mesh.name in fns
            else None,
            copy_database=FunctionGrants(
                (
                    *describe,
                    *permissions.create_db_snapshots(self, instances),
                    *hosts("PgDump", "MysqlDump"),
                    *permissions.undo_own_copies(self, instances, None),
                )
            ),
            # The search index's snapshot and its catalog entry (where an instance backs its search index up).
            copy_search=FunctionGrants(
                (
                    *search("GET", "PUT", "DELETE"),  # DELETE: its own snapshot, when its run was discarded meanwhile
                    *archives,
                    *(search_permissions.new_entries(self, arn, instances) if arn else []),
                    *(search_permissions.undo_entries(self, arn, instances) if arn else []),
                )
            )
            if BACKUP.copy_search.name in fns
            else None,
            progress=FunctionGrants(secret),
            unlock=FunctionGrants(secret),
            wait_snapshots=FunctionGrants((*describe, *archives, *search("GET"))),
            finalize=FunctionGrants(
                (*describe, *undo(permissions.PRUNE), *archives, *search("GET", "DELETE")), publishes=True
            ),
            prepare=FunctionGrants(hosts("InstallScript", "RsyncHome", "SnapshotHome")),
            check_host=FunctionGrants(hosts()),  # reads the results of what the others started
            archive=FunctionGrants(hosts("ArchiveUpload", "ArchiveHomeSnapshot")),
            copy_regions=FunctionGrants(
                (*describe, *copy_permissions.copy_to_regions(self, instances, bucket), *archives)
            ),
            handle_failure=failure,
            # The safety net does what the failure path does, for executions that ran no Catch; for the operator's
            # unlock it also asks whether the run that locked still runs.
            safety_net=FunctionGrants(
                (*failure.statements, permissions.describe_executions(self, machine)), publishes=True
            ),
        )
        grants_apply(grants, fns, notifications.topic, key)

    def _read_configuration(
        self,
        id: str,
        fns: Iterable[lambda_.Function],
        instances: list[InstanceConfig],
        parameters: InstanceConfigParameters,
    ) -> None:
        """What every function of a workflow may do, reading its instances' configuration parameters, as one managed
        policy attached to their roles: the same statement in each role's own policy made a fleet's template exceed
        CloudFormation's 1 MB (its ARNs are one per instance)."""
        arns = [parameters.parameters[i.name].parameter_arn for i in instances]
        read = ["ssm:DescribeParameters", "ssm:GetParameters", "ssm:GetParameter", "ssm:GetParameterHistory"]
        roles = [fn.role for fn in fns if fn.role is not None]
        iam.ManagedPolicy(self, id, statements=[iam.PolicyStatement(actions=read, resources=arns)], roles=roles)

    def _archives_of(self, instances: list[InstanceConfig]) -> str | None:
        """The archive bucket's ARN when one of these instances archives to it (rsync or postgresql), else None."""
        if self.archive_bucket is None or not any(i.uses_archive for i in instances):
            return None
        return str(self.archive_bucket.bucket_arn)

    def _grant_staleness_check(self, fn: lambda_.Function, instances: list[InstanceConfig], prefix: str) -> None:
        """Reads the instances' configuration and their catalogs; changes nothing."""
        fn.add_to_role_policy(permissions.read_config_path(self, prefix))
        for statement in permissions.describe(instances):
            fn.add_to_role_policy(statement)
        if self.archive_bucket is not None:
            for statement in permissions.read_archives(self.archive_bucket.bucket_arn):
                fn.add_to_role_policy(statement)

    def _grant_restore(
        self,
        fns: dict[str, lambda_.Function],
        instances: list[InstanceConfig],
        notifications: Notifications,
        key: kms.IKey,
    ) -> None:
        """The restore's functions: no Bitbucket secret, no run table; each only what its step needs."""
        describe = restore_permissions.restore_describe(instances)
        docs = self.host_documents.arns

        def hosts(*operations: str) -> list[iam.PolicyStatement]:
            """Run Command with these documents of the stack's own (none: only reading results)."""
            return restore_permissions.restore_host_commands(self, instances, docs(*operations))

        archives = self._archives_of(instances)
        catalog = permissions.read_archives(archives) if archives is not None else []

        def search(*methods: str) -> list[iam.PolicyStatement]:
            return search_permissions.cluster(self, instances, *methods)

        failure = FunctionGrants(
            (
                *describe,
                *search("GET", "DELETE"),
                *restore_permissions.retag_restored(self, instances, to=(RESTORE_FAILED,)),
                *restore_permissions.remove_failed_restore(self, instances),
                *hosts("RemoveRestoredHome", "DropRestoredDatabase"),
                *permissions.cancel_host_commands(instances),
            ),
            publishes=True,
        )
        homes = FunctionGrants((*describe, *restore_permissions.restore_home(self, instances), *hosts("RestoreHome")))
        grants = RestoreGrants(
            validate=FunctionGrants(
                (
                    *describe,
                    *hosts("InstallScript", "CheckTargetDirectory", "CheckTargetDatabase"),
                    *catalog,
                    *search("GET"),
                )
            ),
            restore_database=FunctionGrants(
                (*describe, *restore_permissions.restore_database(self, instances), *hosts("RestoreDatabase"))
            ),
            restore_home=homes,
            # The Mesh nodes' homes: new volumes, or an extraction, as the shared home's (where an instance has nodes).
            restore_mesh=homes if RESTORE.restore_mesh.name in fns else None,
            # New indices from the search index's snapshot (where an instance backs its search index up).
            restore_search=FunctionGrants(tuple(search("GET", "POST"))) if RESTORE.restore_search.name in fns else None,
            wait_restore=FunctionGrants((*describe, *hosts(), *search("GET"))),
            attach_home=FunctionGrants((*describe, *restore_permissions.restore_attach(self, instances))),
            mount_home=FunctionGrants(
                (*describe, *restore_permissions.restore_mount(self, instances, docs("MountHome")))
            ),
            finish=FunctionGrants((*describe, *restore_permissions.retag_restored(self, instances)), publishes=True),
            handle_failure=failure,
            # The restore's safety net does what its failure path does, for executions that ran no Catch.
            restore_safety_net=failure if OPERATIONS.restore_safety_net.name in fns else None,
        )
        grants_apply(grants, fns, notifications.topic, key)

    def _grant_drill(
        self,
        fns: dict[str, lambda_.Function],
        instances: list[InstanceConfig],
        notifications: Notifications,
        key: kms.IKey,
    ) -> None:
        """The drill reads the catalog, runs its checks on the drill hosts, tags the backup's artifacts (never deletes
        them) and tears down only what its restore created (still `restoring`, as the restore's failure path may)."""
        catalog = permissions.describe(instances)
        archives = self._archives_of(instances)
        if archives is not None:
            catalog = [*catalog, *permissions.read_archives(archives)]
        docs = self.host_documents.arns
        checks = restore_permissions.drill_host_commands(self, instances, docs("InstallScript", "DrillCheck"))
        teardown = docs("RemoveRestoredHome", "DropRestoredDatabase")
        finish = [
            *catalog,
            *restore_permissions.drill_host_commands(self, instances, teardown),
            *permissions.manage_own_snapshots(self, instances, permissions.VERIFY),
            *restore_permissions.restore_describe(instances),
            *restore_permissions.remove_failed_restore(self, instances),
            *restore_permissions.restore_host_commands(self, instances, teardown),
            *permissions.cancel_host_commands(instances),  # the teardown stops its restore's commands first
        ]
        if archives is not None:
            finish += permissions.manage_own_archives(self, archives, instances, permissions.VERIFY)
        grants = DrillGrants(
            plan=FunctionGrants((*catalog, *restore_permissions.restore_describe(instances))),
            check=FunctionGrants(tuple(checks)),
            check_status=FunctionGrants(tuple(restore_permissions.drill_host_commands(self, instances, []))),
            finish=FunctionGrants(tuple(finish), publishes=True),
        )
        grants_apply(grants, fns, notifications.topic, key)


def _object_lock(lock: ArchiveObjectLock | None, *, immutable: bool = False) -> dict[str, Any]:
    """Object Lock on the archive bucket: with a default retention (archive_object_lock), or only enabled so that
    finalize can retain each complete archive of an immutable instance (functions/strategies/host_copy.py lock)."""
    if lock is None:
        return {"object_lock_enabled": True} if immutable else {}
    retention = s3.ObjectLockRetention.compliance if lock.mode == "COMPLIANCE" else s3.ObjectLockRetention.governance
    return {"object_lock_enabled": True, "object_lock_default_retention": retention(Duration.days(lock.days))}
