"""The rehearsal world: the synthesized stack deployed into moto, a demo instance's AWS resources, and the state
machines run by moto's Step Functions interpreter, with every Lambda task running the project's real handler in
a Lambda worker process from the bundled asset (rehearsal/lambda_runtime.py) and SSM Run Command executed by a
local shell (rehearsal/local_host.py).

Nothing of the workflow is re-implemented here: the definition comes from the CDK template, the Lambda
environment from the template, the code from functions/. This module only provides what AWS would: resources
(in moto), created from the template as CloudFormation would (rehearsal/cfn_resolver.py), where moto behaves
like AWS (rehearsal/moto_fixes.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehearsal import iam, latency, moto_fixes
from rehearsal.aws_endpoint import moto_endpoint
from rehearsal.cfn_resolver import Resolver
from rehearsal.deployer import Deployer
from rehearsal.fake_account import ACCOUNT, ADMIN_KEY_ID, ADMIN_SECRET, REGION, set_fake_credentials
from rehearsal.hostworld import (
    APP_PASSWORD,
    BitbucketHome,
    Mysql,
    Postgres,
    btrfs_subvolume,
    btrfs_volume,
    build_home,
    local_mysql,
    local_postgres,
)
from rehearsal.lambda_asset import built_asset
from rehearsal.lambda_runtime import LambdaRuntime, LogCapture
from rehearsal.latency import LatencyModel
from rehearsal.local_host import LocalHost
from rehearsal.synth import rehearsal_project_config, synth_template

if TYPE_CHECKING:
    from rehearsal.search_simulator import SearchSimulator

# The self-managed search cluster's backup user (its secret is created in moto).
SEARCH_USER, SEARCH_PASSWORD = "bitbucket-backup", "Search-Passw0rd-demo"

COPY_STRATEGIES = ("rsync", "btrfs", "postgresql", "mysql")
STATE_TRANSITION_USD = 0.000025  # Step Functions Standard: 0.025 USD per 1,000 state transitions
# Step Functions fails an execution whose state input or output exceeds 256 KiB of UTF-8 (States.DataLimitExceeded),
# and so does moto's interpreter (tests/integration/test_payload_limit.py); the summary says how close a run came.
STATE_PAYLOAD_LIMIT = 256 * 1024


def largest_payload(history: list[dict[str, Any]]) -> tuple[int, str]:
    """The largest input, output or result in an execution's history, in bytes, and the state it belongs to."""
    largest, where, state = 0, "", "(execution)"
    for event in history:
        for key, details in event.items():
            if not key.endswith("EventDetails") or not isinstance(details, dict):
                continue
            state = str(details.get("name") or state)
            for field in ("input", "output"):
                value = details.get(field)
                size = len(value.encode()) if isinstance(value, str) else 0
                if size > largest:
                    largest, where = size, f"{field} of {state} ({event['type']})"
    return largest, where


@dataclass
class RunResult:
    status: str
    execution_arn: str
    output: dict[str, Any] | None
    error: str | None
    cause: str | None
    history: list[dict[str, Any]]
    seconds: float

    @property
    def state_transitions(self) -> int:
        # Each state entered is a transition; each retry of a task is one more.
        entered = sum(1 for e in self.history if e["type"].endswith("StateEntered"))
        scheduled = sum(1 for e in self.history if e["type"] == "LambdaFunctionScheduled")
        tasks = sum(1 for e in self.history if e["type"] == "TaskStateEntered")
        return entered + max(0, scheduled - tasks)

    @property
    def largest_payload_bytes(self) -> int:
        return largest_payload(self.history)[0]

    @property
    def cost_usd(self) -> float:
        return self.state_transitions * STATE_TRANSITION_USD

    def states_entered(self) -> list[str]:
        return [e["stateEnteredEventDetails"]["name"] for e in self.history if "stateEnteredEventDetails" in e]


MOTO_CONFIG: Any = {
    "stepfunctions": {"execute_state_machine": True},
    "lambda": {"use_docker": False},
    # Keep the harness's keys (fake_account): moto's own would belong to no identity of the world.
    "core": {"mock_credentials": False},
}


class Rehearsal:
    """A moto world with the synthesized stack deployed into it, a demo instance's AWS resources, and a
    Bitbucket to talk to (a simulator or a real staging instance)."""

    def __init__(
        self,
        bitbucket_url: str,
        *,
        username: str = "admin",
        password: str = "admin",
        home: str = "amazon-ebs",
        database: str = "amazon-rds",
        timing: dict[str, Any] | None = None,
        instance_overrides: dict[str, Any] | None = None,
        host_root: Path | None = None,
        sizes: tuple[int, int] = (100, 50),
        home_repos: int = 4,
        home_path: Path | None = None,
        home_settings: dict[str, Any] | None = None,
        postgres: Postgres | None = None,
        mysql: Mysql | None = None,
        project_overrides: dict[str, Any] | None = None,
        metrics: bool = False,
        latency_model: LatencyModel | None = None,
        drill: bool = False,
        deployed: dict[str, Any] | None = None,
        mesh_nodes: int = 0,
        mesh_strategy: str = "amazon-ebs",
        search: str = "none",
    ) -> None:
        self.bitbucket_url = bitbucket_url.rstrip("/")
        self.username, self.password = username, password
        self.project_config = rehearsal_project_config(home, database, drill, mesh_nodes, mesh_strategy, search) | (
            project_overrides or {}
        )
        # The search cluster (a simulator of the snapshot API on 127.0.0.1) when the instance backs its index up.
        self.search: SearchSimulator | None = None
        # Instance fields the stack was deployed with (what `cdk deploy` turns into roles and functions), e.g. copies
        # with placeholder targets that a test replaces with real ones through `configure`.
        if deployed:
            self.project_config["instances"] = [{**self.project_config["instances"][0], **deployed}]
        self.timing = {
            "poll_interval_seconds": 0,
            "drain_timeout_seconds": 30,
            "snapshot_poll_interval_seconds": 0,
            "snapshot_timeout_seconds": 60,
            "host_poll_interval_seconds": 0,
            "restore_poll_interval_seconds": 0,
            "restore_timeout_seconds": 60,
            "http_timeout_seconds": 2,
            "http_retries": 2,
            "http_backoff_seconds": 0.05,
            **(timing or {}),
        }
        self.instance_overrides = instance_overrides or {}
        self.home_gb, self.db_gb = sizes
        self.home_repos = home_repos
        self.home_path = home_path  # an existing home for the rsync strategy (the benchmark's); else one is built
        self.home_settings = home_settings or {}  # more of the rsync home's settings (locked_pass_parallel)
        self.postgres = postgres
        self.mysql = mysql
        self.bitbucket_home: BitbucketHome | None = None
        self.logs = LogCapture()
        self.lambda_faults: dict[str, list[Exception]] = {}
        # With metrics=True the handlers print their CloudWatch EMF records on stdout, as they do in Lambda.
        overrides = {"POWERTOOLS_METRICS_DISABLED": "false"} if metrics else None
        self.runtime = LambdaRuntime(self.logs, self.lambda_faults, overrides)
        self._own_host_root = host_root is None
        self.host = LocalHost(host_root or Path(tempfile.mkdtemp(prefix="rehearsal-host-")))
        self.resolver = Resolver()
        self.resources: dict[str, Any] = {}
        self.rules: list[tuple[dict[str, Any], list[str]]] = []
        self.iam = iam.Enforcement()  # each function calls AWS as its own role, moto refusing what it may not do
        self.delivered: list[dict[str, Any]] = []
        # Off by default: moto answers at loopback speed; on, every AWS call and Task dispatch waits as in a region.
        self.latency = latency_model
        self._stack = contextlib.ExitStack()

    # --- lifecycle ---------------------------------------------------------------------------------------------------

    def __enter__(self) -> Rehearsal:
        from moto import mock_aws

        from functions.clients.aws import forget_assumed

        set_fake_credentials()
        forget_assumed()  # an assumed role's keys belong to the previous world's moto
        instance = self.project_config["instances"][0]
        home, database = instance["home"]["strategy"], instance["database"]["strategy"]
        nodes = [node["home"]["strategy"] for node in instance.get("mesh_nodes", [])]
        template = synth_template(self.project_config)
        self._stack.enter_context(mock_aws(config=MOTO_CONFIG))
        self._stack.enter_context(moto_fixes.patched(self.runtime, self.host))
        iam.create_harness_identities()
        self._stack.enter_context(self.iam.enforced())
        if home in COPY_STRATEGIES or database in COPY_STRATEGIES or "rsync" in nodes:
            self._serve_host_endpoint()
        if not self.runtime.inline:
            self.runtime.endpoint, self.runtime.asset = moto_endpoint(), built_asset()
        self._stack.enter_context(latency.applied(self.latency))
        self._redirect_logs()
        deployed = Deployer(self.client, self.resolver).deploy(template)
        self.state_machines, self.topic_arn, self.table = deployed.state_machines, deployed.topic_arn, deployed.table
        self.parameters, self.definitions, self.rules = deployed.parameters, deployed.definitions, deployed.rules
        if deployed.archive_bucket is not None:
            self.archive_bucket = deployed.archive_bucket
        # The harness's own catalog calls (tags it writes, the snapshots it lists) are this deployment's.
        os.environ["DEPLOYMENT_ID"] = self.resolver(template["Outputs"]["DeploymentId"]["Value"])
        self._create_world()
        return self

    def __exit__(self, *exc: object) -> None:
        self.host.stop()
        self._stack.close()
        if self._own_host_root:
            shutil.rmtree(self.host.root, ignore_errors=True)

    def _serve_host_endpoint(self) -> None:
        """The hosts' AWS CLI (S3 upload, Secrets Manager) talks to this process's moto over HTTP on 127.0.0.1."""
        self.host.env.update(
            {
                "AWS_ENDPOINT_URL": moto_endpoint(),
                # The hosts sign as the harness's administrator: their instance role is the user's, not the stack's.
                "AWS_ACCESS_KEY_ID": ADMIN_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": ADMIN_SECRET,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )

    def _redirect_logs(self) -> None:
        from functions.observability import logger

        for handler in logger.handlers:
            if hasattr(handler, "setStream"):
                previous = handler.setStream(self.logs)
                self._stack.callback(handler.setStream, previous)
        # moto's interpreter logs every failed execution with its own internals (FailureEventException, objects'
        # reprs): the run's history and result say what failed, in the user's words.
        interpreter = logging.getLogger("moto.stepfunctions.parser")
        self._stack.callback(interpreter.setLevel, interpreter.level)
        interpreter.setLevel(logging.CRITICAL)

    def client(self, service: str) -> Any:
        from functions.clients.aws import client

        # The same cached clients the handlers use: creating a boto3 client costs tens of milliseconds.
        return client(service, REGION)

    # --- the demo instance's AWS resources -----------------------------------------------------------------------

    def _create_world(self) -> None:
        instance = self.project_config["instances"][0]
        sm = self.client("secretsmanager")
        sm.create_secret(
            Name=instance["credentials_secret"],
            SecretString=json.dumps({"username": self.username, "password": self.password}),
        )
        home, database = dict(instance["home"]), dict(instance["database"])
        if home["strategy"] == "amazon-ebs":
            instance_id, volumes = self._ebs_instance(self.home_gb)
            # /dev/xvdg is attached but not configured: it must not be snapshotted.
            self.resources.update(ec2_instance=instance_id, volumes=volumes)
            home["instance_id"] = instance_id
        mesh_nodes = [self._mesh_node(dict(node)) for node in instance.get("mesh_nodes", [])]
        if mesh_nodes:
            self.instance_overrides.setdefault("mesh_nodes", mesh_nodes)
        if "search" in instance:
            self.instance_overrides.setdefault("search", self._search_cluster(dict(instance["search"])))
        if home["strategy"] == "rsync" and home.get("snapshot") == "btrfs":
            # The home is a subvolume of a real btrfs file system (a loop device), snapshotted beside it.
            volume = self._stack.enter_context(btrfs_volume(self.host.root))
            if self.home_path is not None:
                raise ValueError("a btrfs home is generated by the rehearsal: no home_path with it")
            btrfs_subvolume(volume / "bitbucket-home")
            self.bitbucket_home = build_home(volume, range(1, self.home_repos + 1))
            self.home_path = self.bitbucket_home.root
            home["snapshot_path"] = str(volume / "snapshots")
        if home["strategy"] == "rsync":
            if self.home_path is None:
                self.bitbucket_home = build_home(self.host.root, range(1, self.home_repos + 1))
                self.home_path = self.bitbucket_home.root
            home.update(
                instance_id=self._host_instance("home"),
                owner=pwd.getpwuid(os.getuid()).pw_name,  # Bitbucket's user on a real host
                home_path=str(self.home_path),
                staging_path=str(self.host.root / "staging"),
                **self.home_settings,
            )
        if database["strategy"] == "postgresql-fslevel":
            # A data directory inside the generated home (its files only: the host tests run PostgreSQL on one).
            if self.home_path is None or home.get("snapshot") != "btrfs":
                raise ValueError("postgresql-fslevel is rehearsed with a btrfs home (--home-strategy btrfs)")
            data = Path(self.home_path) / "pgdata"
            (data / "base").mkdir(parents=True, exist_ok=True)
            (data / "PG_VERSION").write_text("15\n")
            database["data_directory"] = str(data)
        if database["strategy"] in ("postgresql", "mysql"):
            server: Postgres | Mysql
            if database["strategy"] == "mysql":
                if self.mysql is None:
                    self.mysql = self._stack.enter_context(local_mysql())
                server = self.mysql
            else:
                if self.postgres is None:
                    self.postgres = self._stack.enter_context(local_postgres())
                server = self.postgres
            secret = sm.create_secret(
                Name="bitbucket/demo/db",
                SecretString=json.dumps({"username": "bitbucket", "password": APP_PASSWORD}),
            )["ARN"]
            database.update(
                instance_id=self._host_instance("database"),
                host=server.host,
                port=server.port,
                password_secret=secret,
                dump_path=str(self.host.root / "dumps"),
            )
            self.resources[database["strategy"]] = f"{server.host}:{server.port}"
        rsync_nodes = any(node["home"]["strategy"] == "rsync" for node in mesh_nodes)
        if home["strategy"] in COPY_STRATEGIES or database["strategy"] in COPY_STRATEGIES or rsync_nodes:
            self.instance_overrides.setdefault("archive", {"work_path": str(self.host.root / "archive-work")})
        if home["strategy"] in COPY_STRATEGIES or rsync_nodes:
            # An archive restore extracts only below a configured root: the rehearsal's own directory.
            self.instance_overrides.setdefault("restore", {"allowed_roots": [str(self.host.root)]})
        if "drill" in instance:
            # A small host of its own, tagged as a restore target of the instance (archives are restored onto it).
            drill_host = self._host_instance("drill")
            self.client("ec2").create_tags(
                Resources=[drill_host], Tags=[{"Key": "bitbucket-backup:restore-target", "Value": "demo"}]
            )
            self.instance_overrides.setdefault(
                "drill",
                {
                    **instance["drill"],
                    "host_instance_id": drill_host,
                    "work_path": str(self.host.root / "drill"),
                },
            )
        if database["strategy"] == "amazon-rds":
            self.client("rds").create_db_instance(
                DBInstanceIdentifier=database["instance_id"],
                DBInstanceClass="db.t3.medium",
                Engine="postgres",
                AllocatedStorage=self.db_gb,
                MasterUsername="bitbucket",
                MasterUserPassword="not-a-real-secret-1",
            )
            self.resources["db_instance"] = database["instance_id"]
        elif database["strategy"] == "amazon-aurora":
            self.client("rds").create_db_cluster(
                DBClusterIdentifier=database["cluster_id"],
                Engine="aurora-postgresql",
                MasterUsername="bitbucket",
                MasterUserPassword="not-a-real-secret-1",
            )
            self.resources["db_cluster"] = database["cluster_id"]
        self.configure(
            home=home, database=database, base_url=self.bitbucket_url, timing=self.timing, **self.instance_overrides
        )

    def _search_cluster(self, search: dict[str, Any]) -> dict[str, Any]:
        """The search cluster, served by the snapshot-API simulator: an Amazon OpenSearch domain verifies each
        request's SigV4 signature with moto's keys and authorizes it with the caller's role (as moto does AWS calls);
        a self-managed cluster takes the secret's user. Bitbucket's indices (one with its alias) and an index of
        somebody else's are there."""
        from rehearsal.search_simulator import SearchSimulator

        if search["strategy"] == "amazon-opensearch":
            sim = SearchSimulator(
                auth="sigv4",
                region=REGION,
                domain_arn=search["domain_arn"],
                secret_for=iam.secret_of,
                allowed=lambda key, action, resource: iam.allows(self.iam, key, action),
                may_pass_role=lambda key, role: iam.allows(self.iam, key, "iam:PassRole"),
            )
        else:
            repository = self.host.root / "search-repository"
            repository.mkdir(parents=True, exist_ok=True)
            sim = SearchSimulator(
                auth="basic", username=SEARCH_USER, password=SEARCH_PASSWORD, path_repo=[str(repository)]
            )
            sim.add_repository(search["repository"], "fs", {"location": str(repository)})
            self.client("secretsmanager").create_secret(
                Name=search["credentials_secret"],
                SecretString=json.dumps({"username": SEARCH_USER, "password": SEARCH_PASSWORD}),
            )
        sim.add_index(
            "bitbucket-search-v1", [{"repo": n, "text": f"file {n}"} for n in range(3)], aliases=["bitbucket-search"]
        )
        sim.add_index("bitbucket-index-version", [{"version": 1}])
        sim.add_index("other-application", [{"not": "ours"}])
        sim.start()
        self._stack.callback(sim.stop)
        self.search = sim
        return {**search, "endpoint": sim.url}

    def _ebs_instance(self, home_gb: int) -> tuple[str, dict[str, str]]:
        """An EC2 instance in moto with a home volume (/dev/xvdf) and a second one that is not configured."""
        ec2 = self.client("ec2")
        # moto's own example AMI: listing all of moto's images would take seconds.
        ec2_instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m5.large")[
            "Instances"
        ][0]
        zone = ec2_instance["Placement"]["AvailabilityZone"]
        self.resources["zone"] = zone
        volumes = {}
        for device, size in (("/dev/xvdf", home_gb), ("/dev/xvdg", 20)):
            volume = ec2.create_volume(AvailabilityZone=zone, Size=size, VolumeType="gp3")["VolumeId"]
            ec2.attach_volume(VolumeId=volume, InstanceId=ec2_instance["InstanceId"], Device=device)
            volumes[device] = volume
        return str(ec2_instance["InstanceId"]), volumes

    def _mesh_node(self, node: dict[str, Any]) -> dict[str, Any]:
        """A Mesh node's host: an EC2 instance with volumes in moto (amazon-ebs), or a host whose Run Commands run
        locally, with a generated home of real git repositories (rsync). Its id is resources["mesh-<name>_host"]."""
        part, home = f"mesh-{node['name']}", dict(node["home"])
        if home["strategy"] == "amazon-ebs":
            home["instance_id"], self.resources[f"{part}_volumes"] = self._ebs_instance(self.home_gb)
            self.resources[f"{part}_host"] = home["instance_id"]
        else:
            built = build_home(self._mesh_root(part), range(1, self.home_repos + 1))
            self.resources[f"{part}_home"] = built
            home.update(
                instance_id=self._host_instance(part),
                owner=pwd.getpwuid(os.getuid()).pw_name,
                home_path=str(built.root),
                staging_path=str(self.host.root / f"{part}-staging"),
            )
        return {**node, "home": home}

    def _mesh_root(self, part: str) -> Path:
        root = self.host.root / part
        root.mkdir(exist_ok=True)
        return root

    def _host_instance(self, role: str) -> str:
        """An EC2 instance in moto standing for the host of one part (its Run Commands run in the local host)."""
        instance_id = str(
            self.client("ec2").run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m5.large")[
                "Instances"
            ][0]["InstanceId"]
        )
        self.resources[f"{role}_host"] = instance_id
        return instance_id

    def archives(self) -> list[dict[str, Any]]:
        """Every object in the archive bucket (all versions' latest), with its tags."""
        bucket = getattr(self, "archive_bucket", None)
        if not bucket:
            return []
        s3 = self.client("s3")
        found = []
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            tags = s3.get_object_tagging(Bucket=bucket, Key=obj["Key"])["TagSet"]
            found.append({"key": obj["Key"], "size": obj["Size"], "tags": {t["Key"]: t["Value"] for t in tags}})
        return found

    def configure(self, **fields: Any) -> dict[str, Any]:
        """Change the demo instance's stored configuration (what cdk.json would say), as a redeploy would."""
        name = next(iter(self.parameters))
        current: dict[str, Any] = json.loads(self.client("ssm").get_parameter(Name=name)["Parameter"]["Value"])
        current.update(fields)
        from functions.models.config import parse_instance_config

        parse_instance_config(current)  # the rehearsal stores only what `cdk synth` would accept
        self.client("ssm").put_parameter(Name=name, Value=json.dumps(current), Type="String", Overwrite=True)
        self.instance_config = current
        return current

    # --- running -----------------------------------------------------------------------------------------------------

    @property
    def state_machine_arn(self) -> str:
        """The backup state machine (the template also holds the restore one)."""
        return next(arn for logical, arn in self.state_machines.items() if logical.startswith("Backup"))

    @property
    def restore_state_machine_arn(self) -> str:
        return next(arn for logical, arn in self.state_machines.items() if logical.startswith("Restore"))

    @property
    def drill_state_machine_arn(self) -> str:
        return next(arn for logical, arn in self.state_machines.items() if logical.startswith("Drill"))

    def run_drill(self, timeout: float = 300.0) -> RunResult:
        """Runs the restore drill of the demo instance, as its schedule would."""
        return self.wait(self.start({"instance": "demo"}, state_machine_arn=self.drill_state_machine_arn), timeout)

    def start(self, execution_input: Any = None, name: str | None = None, state_machine_arn: str | None = None) -> str:
        payload = execution_input if execution_input is not None else {"instance": "demo"}
        return str(
            self.client("stepfunctions").start_execution(
                stateMachineArn=state_machine_arn or self.state_machine_arn,
                name=name or f"rehearsal-{uuid.uuid4().hex[:12]}",
                input=payload if isinstance(payload, str) else json.dumps(payload),
            )["executionArn"]
        )

    def wait(self, execution_arn: str, timeout: float = 120.0) -> RunResult:
        sfn = self.client("stepfunctions")
        started = time.monotonic()
        while True:
            described = sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                break
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"execution still RUNNING after {timeout} s")
            time.sleep(0.02)
        self._deliver_status_change(described)
        history = self._history(execution_arn)
        output = json.loads(described["output"]) if described.get("output") else None
        return RunResult(
            status=described["status"],
            execution_arn=execution_arn,
            output=output,
            error=described.get("error"),
            cause=described.get("cause"),
            history=history,
            seconds=time.monotonic() - started,
        )

    def _deliver_status_change(self, described: dict[str, Any]) -> None:
        """What EventBridge does with "Step Functions Execution Status Change": match the rules, invoke targets."""
        detail = {
            "executionArn": described["executionArn"],
            "stateMachineArn": described["stateMachineArn"],
            "status": described["status"],
            "input": described.get("input"),
        }
        event = {"source": "aws.states", "detail-type": "Step Functions Execution Status Change", "detail": detail}
        for pattern, targets in self.rules:
            if _matches(pattern, event):
                for target in targets:
                    response = self.client("lambda").invoke(FunctionName=target, Payload=json.dumps(event).encode())
                    self.delivered.append(
                        {
                            "target": target,
                            "status": detail["status"],
                            "result": json.loads(response["Payload"].read() or b"null"),
                        }
                    )

    def run_backup(self, execution_input: Any = None, timeout: float = 120.0) -> RunResult:
        return self.wait(self.start(execution_input), timeout)

    def run_restore(self, execution_input: dict[str, Any], timeout: float = 120.0) -> RunResult:
        """Runs the restore state machine: {"instance": "demo", "backup_id": ..., "target": {...}}."""
        return self.wait(self.start(execution_input, state_machine_arn=self.restore_state_machine_arn), timeout)

    def _history(self, execution_arn: str) -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        while True:
            page = sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]

    # --- what happened -------------------------------------------------------------------------------------------

    def notifications(self) -> list[dict[str, Any]]:
        from moto.sns.models import sns_backends

        topic = sns_backends[ACCOUNT][REGION].topics[self.topic_arn]
        return [{"message": n[1], "subject": n[2], "attributes": n[3]} for n in topic.sent_notifications]

    def parts(self) -> list[str]:
        """The parts a backup of the demo instance consists of (the home, the database, each Mesh node)."""
        from functions.models.config import parse_instance_config

        return parse_instance_config(self.instance_config).parts

    def snapshots(self, backup_id: str | None = None) -> list[dict[str, Any]]:
        from functions.models.config import parse_instance_config
        from functions.strategies import acting_for, strategies_for

        config = parse_instance_config(self.instance_config)
        # The harness reads the catalog as the operator's command line does: this deployment's, in its bucket.
        with acting_for(os.environ["DEPLOYMENT_ID"], getattr(self, "archive_bucket", None)):
            return [
                a.summary() | {"backup_id": a.backup_id} for s in strategies_for(config) for a in s.artifacts(backup_id)
            ]

    def cold_starts_while_locked(self) -> list[str]:
        """The functions that started cold after the lock step's first invocation and before the end of the unlock's
        (the goal is none: the warm-up before the lock starts every environment the locked phase needs). The lock
        step's own start comes before its request, so before Bitbucket is locked."""
        from functions.handlers._step import is_warm_up
        from functions.models.steps import BACKUP

        calls = [i for i in list(self.runtime.invocations) if not is_warm_up(i.event)]
        locks = [i.started for i in calls if i.handler == BACKUP.lock.handler]
        releases = [i.ended for i in calls if i.handler in (BACKUP.unlock.handler, BACKUP.handle_failure.handler)]
        if not locks:
            return []
        start, end = locks[0], max(releases, default=float("inf"))
        return [i.function for i in calls if i.cold and start < i.started <= end]

    def run_record(self) -> dict[str, Any] | None:
        item = self.client("dynamodb").get_item(TableName=self.table, Key={"instance": {"S": "demo"}}).get("Item")
        return dict(item) if item else None


def _matches(pattern: Any, value: Any) -> bool:
    """EventBridge pattern matching, for the exact-value lists and nested objects this stack's rules use."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches(p, value.get(k)) for k, p in pattern.items())
    if isinstance(pattern, list):
        return value in pattern
    return bool(pattern == value)


@contextlib.contextmanager
def local_simulator(**kwargs: Any) -> Iterator[Any]:
    from rehearsal.bitbucket_simulator import BitbucketSimulator

    simulator = BitbucketSimulator(**kwargs).start()
    try:
        yield simulator
    finally:
        simulator.stop()
