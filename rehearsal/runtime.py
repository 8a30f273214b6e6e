"""The local runtime: the synthesized state machine, executed by moto's Step Functions interpreter, with every
Lambda task running the project's real handler in-process and SSM Run Command executed by a local shell.

Nothing of the workflow is re-implemented here: the definition comes from the CDK template, the Lambda
environment from the template, the code from functions/. This module only provides what AWS would: resources
(in moto), the Lambda runtime (an in-process call), and a host for Run Command (bash in a local directory).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import pwd
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from functions.handlers._step import is_warm_up
from functions.models.host_operations import DIR_VARIABLE
from rehearsal import moto_fixes_immutability, moto_speed, ssm_documents
from rehearsal.hostworld import APP_PASSWORD, BitbucketHome, Postgres, build_home, local_postgres

ROOT = Path(__file__).resolve().parent.parent
ROOT_HANDLERS = ROOT / "functions" / "handlers"
# The pinned AWS CLI `make awscli` installs (the host script calls `aws`); else whichever `aws` is on PATH.
AWS_CLI_DIR = ROOT / ".awscli" / "bin"
COPY_STRATEGIES = ("rsync", "postgresql")
ACCOUNT = "123456789012"
REGION = "eu-west-1"
STATE_TRANSITION_USD = 0.000025  # Step Functions Standard: 0.025 USD per 1,000 state transitions

# The environment every in-process Lambda sees on top of its own template environment.
LAMBDA_OVERRIDES = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "SECRET_CACHE_SECONDS": "0",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


def set_fake_credentials() -> None:
    """moto needs credentials to sign with; never real ones."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        os.environ[key] = value
    os.environ.pop("AWS_PROFILE", None)
    # moto's thousands of public AMIs cost seconds per world and nothing here uses them.
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def rehearsal_project_config(
    home: str = "amazon-ebs", database: str = "amazon-rds", drill: bool = False
) -> dict[str, Any]:
    """What the rehearsal synthesizes: one instance 'demo' with placeholder ids, replaced at run time by the
    ids of the resources created in moto (the definition does not depend on them). With drill, a weekly restore
    drill (its drill host is created in moto, its Run Commands run in the local host)."""
    home_cfg: dict[str, Any] = {"strategy": "none"}
    if home == "amazon-ebs":
        home_cfg = {
            "strategy": "amazon-ebs",
            "instance_id": "i-00000000000000000",
            "volumes": ["/dev/xvdf"],
            "mount_points": [],
        }
    elif home == "rsync":
        home_cfg = {
            "strategy": "rsync",
            "instance_id": "i-00000000000000000",
            "home_path": "/var/atlassian/application-data/bitbucket",
            "staging_path": "/var/tmp/bitbucket-staging",
        }
    db_cfg: dict[str, Any] = {"strategy": "none"}
    if database == "postgresql":
        db_cfg = {
            "strategy": "postgresql",
            "instance_id": "i-00000000000000000",
            "user": "bitbucket",
            "dbname": "bitbucket",
            "password_secret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:bitbucket/demo/db-AbCdEf",
            "dump_path": "/var/tmp/bitbucket-dumps",
        }
    elif database == "amazon-rds":
        db_cfg = {"strategy": "amazon-rds", "instance_id": "bitbucket-demo"}
    elif database == "amazon-aurora":
        db_cfg = {"strategy": "amazon-aurora", "cluster_id": "bitbucket-demo"}
    return {
        "bundling": "none",
        "notification_emails": [],
        "instances": [
            {
                "name": "demo",
                "base_url": "http://127.0.0.1:7990",
                # The simulator speaks plain http on 127.0.0.1; a real instance needs https (every run warns).
                "insecure_connection_allowed_for_testing": True,
                "credentials_secret": "bitbucket/demo/backup-user",
                "home": home_cfg,
                "database": db_cfg,
                "keep_backups": 2,
                "schedule": "rate(1 day)",
                **({"drill": {"schedule": "rate(7 days)", "host_instance_id": "i-00000000000000000"}} if drill else {}),
            }
        ],
    }


@lru_cache(maxsize=8)
def _synth(config_json: str, retry_interval_s: int) -> str:
    from aws_cdk import Environment

    from rehearsal.template_cache import cached_template
    from stacks.app_builder import STACK_NAME, build_app
    from stacks.constructs.backup_workflow import WorkflowTiming

    def synthesize() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="rehearsal-cdk-") as outdir:
            app, _ = build_app(
                json.loads(config_json),
                outdir=outdir,
                env=Environment(account=ACCOUNT, region=REGION),
                timing=WorkflowTiming(retry_interval_s=retry_interval_s),
                checks=False,
            )
            app.synth()
            return dict(json.loads((Path(outdir) / f"{STACK_NAME}.template.json").read_text()))

    return json.dumps(cached_template(config_json + f"|retry={retry_interval_s}", synthesize))


def synth_template(config: dict[str, Any], retry_interval_s: int = 1) -> dict[str, Any]:
    """The CloudFormation template the CDK app synthesizes for this config (cached per process and on disk)."""
    return dict(json.loads(_synth(json.dumps(config, sort_keys=True), retry_interval_s)))


# --- CloudFormation intrinsic functions, resolved against what was created in moto ---------------------------


class Resolver:
    def __init__(self) -> None:
        self.refs: dict[str, str] = {}
        self.attrs: dict[tuple[str, str], str] = {}
        self.pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "BitbucketDiyBackup",
        }

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.pseudo.get(arg) or self.refs[arg]
            if key == "Fn::GetAtt":
                logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.attrs[(logical, attr)]
            if key == "Fn::Join":
                sep, parts = arg
                return sep.join(str(self(p)) for p in parts)
        return {k: self(v) for k, v in value.items()}


# --- the in-process Lambda runtime -------------------------------------------------------------------------------


@dataclass
class LambdaContext:
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class Invocation:
    function: str
    handler: str
    event: Any
    result: Any = None
    error: str | None = None
    seconds: float = 0.0


class LogCapture(io.TextIOBase):
    """Collects every log line the handlers write (Powertools JSON), and passes seed lines to a listener."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.listener: Callable[[dict[str, Any]], None] | None = None
        self._lock = threading.Lock()
        self._partial = ""

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            *complete, self._partial = self._partial.split("\n")
            self.lines.extend(line for line in complete if line)
        for line in complete:
            if self.listener and line.startswith("{"):
                with contextlib.suppress(ValueError):
                    self.listener(json.loads(line))
        return len(text)

    def records(self) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found


class LambdaRuntime:
    """Replaces moto's Docker-less Lambda backend `invoke` with a call of the configured handler."""

    def __init__(
        self,
        logs: LogCapture,
        faults: dict[str, list[Exception]] | None = None,
        overrides: dict[str, str] | None = None,
    ) -> None:
        self.logs = logs
        self.overrides = overrides or {}  # on top of LAMBDA_OVERRIDES
        self.invocations: list[Invocation] = []
        self.faults: dict[str, list[Exception]] = faults if faults is not None else {}
        self._env_lock = threading.Lock()

    def invoke(
        self,
        backend: Any,
        function_name: str,
        qualifier: str | None,
        body: Any,
        headers: Any,
        response_headers: dict[str, str],
    ) -> bytes:
        fn = backend.get_function(function_name, qualifier)
        handler_path = fn.handler
        module_name, _, attr = handler_path.rpartition(".")
        event = json.loads(body) if body else {}
        with self._env_lock:
            # Every function of the stack shares one environment, so setting it for one sets it for all.
            os.environ.update({**fn.environment_vars, **LAMBDA_OVERRIDES, **self.overrides})
        record = Invocation(function=fn.function_name, handler=handler_path, event=event)
        started = time.monotonic()
        try:
            injected = self.faults.get(fn.function_name)
            # An injected fault hits the step's work; the warm-up before the lock only loads the code.
            if injected and not is_warm_up(event):
                raise injected.pop(0)
            handler = getattr(importlib.import_module(module_name), attr)
            context = LambdaContext(function_name=fn.function_name, invoked_function_arn=fn.function_arn)
            record.result = handler(event, context)
            payload = json.dumps(record.result).encode()
        except Exception as error:  # what the Lambda service does with an unhandled exception
            record.error = type(error).__name__
            response_headers["x-amz-function-error"] = "Unhandled"
            payload = json.dumps({"errorType": type(error).__name__, "errorMessage": str(error)}).encode()
        record.seconds = time.monotonic() - started
        self.invocations.append(record)
        return payload


# --- the local Run Command host ------------------------------------------------------------------------------------


@dataclass
class HostCommand:
    instance_id: str
    script: str
    status: str
    exit_code: int
    stdout: str
    stderr: str


class LocalHost:
    """Runs the stack's SSM documents' commands with sh (as the SSM agent does) in a local directory, standing in
    for the EC2 hosts. The host script is installed in a directory of the local host's (0700, this user's).

    `fsfreeze` cannot run here (it needs root and a real mount), so a recording stand-in is first on PATH;
    everything else (sync, the host scripts) runs for real.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / ".bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.freeze_log = root / ".fsfreeze.log"
        stub = self.bin / "fsfreeze"
        stub.write_text(f'#!/usr/bin/env bash\necho "$@" >> {self.freeze_log}\n')
        stub.chmod(0o755)
        self.commands: list[HostCommand] = []
        # Per instance id: a status to report instead of running (e.g. "TimedOut"), or a failing exit code.
        self.faults: dict[str, str] = {}
        # Extra environment of every command (the AWS CLI's local endpoint), and hooks called before each command
        # with (instance id, script): what changes on a host while the workflow runs (new commits between passes).
        self.env: dict[str, str] = {DIR_VARIABLE: str(root / "opt-bitbucket-diy-backup")}
        self.before_run: list[Callable[[str, str], None]] = []
        self.after_run: list[Callable[[HostCommand], None]] = []

    def run(self, instance_id: str, script: str) -> HostCommand:
        import subprocess

        for hook in list(self.before_run):
            hook(instance_id, script)
        fault = self.faults.get(instance_id)
        if fault in ("TimedOut", "Cancelled", "InProgress"):
            result = HostCommand(instance_id, script, fault, -1, "", "")
        else:
            path = f"{self.bin}:{AWS_CLI_DIR}:{os.environ.get('PATH', '')}"
            env = {**os.environ, **self.env, "PATH": path}
            proc = subprocess.run(
                ["sh", "-c", script], cwd=self.root, env=env, capture_output=True, text=True, timeout=600, check=False
            )
            status = "Success" if proc.returncode == 0 else "Failed"
            result = HostCommand(instance_id, script, status, proc.returncode, proc.stdout, proc.stderr)
        self.commands.append(result)
        for after in list(self.after_run):
            after(result)
        return result

    def freezes(self) -> list[str]:
        return self.freeze_log.read_text().splitlines() if self.freeze_log.exists() else []


def _patch_moto(runtime: LambdaRuntime, host: LocalHost) -> contextlib.ExitStack:
    """Patches that make moto behave like AWS where the rehearsal depends on it."""
    from unittest import mock

    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.ec2.models.elastic_block_store import EBSBackend
    from moto.ssm.models import SimpleSystemManagerBackend

    stack = contextlib.ExitStack()

    def invoke(
        self: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
    ) -> bytes:
        return runtime.invoke(self, function_name, qualifier, body, headers, response_headers)

    original_create_snapshots = EBSBackend.create_snapshots

    def create_snapshots(self: Any, instance_spec: dict[str, Any], description: str, tags: dict[str, str]) -> Any:
        # moto ignores ExcludeDataVolumeIds; AWS honours it.
        excluded = set(instance_spec.get("ExcludeDataVolumeIds") or [])
        snapshots = original_create_snapshots(self, instance_spec, description, tags)
        keep = []
        for snapshot in snapshots:
            if snapshot.volume.id in excluded:
                self.snapshots.pop(snapshot.id, None)
            else:
                keep.append(snapshot)
        return keep

    original_send = SimpleSystemManagerBackend.send_command

    def send_command(self: Any, **kwargs: Any) -> Any:
        # SSM refuses an unknown document or a parameter its allowedPattern rejects before anything runs.
        rendered = ssm_documents.render(self, kwargs.get("document_name"), kwargs.get("parameters"))
        requested = list(kwargs.get("instance_ids") or [])  # moto extends the caller's list in place
        command = original_send(self, **kwargs)
        if requested and not kwargs.get("targets"):
            # Without Targets moto also sends the command to every instance in the account; AWS does not.
            command.invocations = [i for i in command.invocations if i["InstanceId"] in requested]
            command.instance_ids = requested
        for invocation in command.invocations:
            ran = host.run(invocation["InstanceId"], rendered.script)
            invocation.update(
                Status=ran.status,
                StatusDetails=ran.status,
                ResponseCode=ran.exit_code,
                StandardOutputContent=ran.stdout[-24000:],
                StandardErrorContent=ran.stderr[-8000:],
            )
        return command

    stack.enter_context(mock.patch.object(LambdaSimpleBackend, "invoke", invoke))
    stack.enter_context(mock.patch.object(EBSBackend, "create_snapshots", create_snapshots))
    _patch_sfn_integration(stack)
    stack.enter_context(mock.patch.object(SimpleSystemManagerBackend, "send_command", send_command))
    _patch_cross_account(stack)
    stack.enter_context(moto_speed.patched())

    # DynamoDB applies each request atomically; moto's backend does not, and the rehearsal's parallel branches
    # call it from two threads at once (one reading an item while the other updates it).
    from moto.dynamodb.responses import DynamoHandler

    original_call = DynamoHandler.call_action
    dynamodb_lock = threading.RLock()

    def call_action(self: Any) -> Any:
        with dynamodb_lock:
            return original_call(self)

    stack.enter_context(mock.patch.object(DynamoHandler, "call_action", call_action))
    return stack


def _patch_cross_account(stack: contextlib.ExitStack) -> None:
    """Accounts in moto: a request's account is the one its access key belongs to (an assumed role's keys belong
    to the role's account), but moto lets any account assume any role and copy only its own snapshots. AWS does
    neither: the role must exist and trust the caller's account, and a snapshot of another account can be copied
    only once that account shared it (and then only by the accounts it was shared with)."""
    from unittest import mock

    from moto.ec2.exceptions import InvalidSnapshotIdError
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot
    from moto.ec2.utils import random_snapshot_id
    from moto.iam.models import iam_backends
    from moto.rds.models import RDSBackend, rds_backends
    from moto.rds.utils import split_arn
    from moto.sts.exceptions import STSClientError
    from moto.sts.models import STSBackend

    original_assume_role = STSBackend.assume_role

    def assume_role(self: Any, **kwargs: Any) -> Any:
        # AWS: AccessDenied unless the role exists and its trust policy allows the caller's account (conditions,
        # such as the README's aws:PrincipalArn narrowing, are not evaluated here).
        role_arn = str(kwargs["role_arn"])
        account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
        role = next((r for r in iam_backends[account]["aws"].get_roles() if r.arn == role_arn), None)
        if role is None or not _trusts(role.assume_role_policy_document, self.account_id):
            raise STSClientError(
                "AccessDenied",
                f"User: arn:aws:sts::{self.account_id}:assumed-role/caller is not authorized to perform: "
                f"sts:AssumeRole on resource: {role_arn}",
            )
        return original_assume_role(self, **kwargs)

    original_copy_snapshot = EBSBackend.copy_snapshot

    def copy_snapshot(
        self: Any, source_snapshot_id: str, source_region: str, description: str, kms_key_id: str | None
    ) -> Any:
        if source_snapshot_id in ec2_backends[self.account_id][source_region].snapshots:
            return original_copy_snapshot(self, source_snapshot_id, source_region, description, kms_key_id)
        # AWS: a snapshot of another account, if that account gave this one createVolumePermission.
        for account, regions in list(ec2_backends.items()):
            backend = regions.get(source_region) if account != self.account_id else None
            source = backend.snapshots.get(source_snapshot_id) if backend is not None else None
            if source is None:
                continue
            if not (
                self.account_id in source.create_volume_permission_userids
                or "all" in source.create_volume_permission_groups
            ):
                break
            snapshot = Snapshot(
                self,
                random_snapshot_id(),
                volume=source.volume,
                description=description,
                encrypted=source.encrypted,
                kms_key_id=kms_key_id,
            )
            self.snapshots[snapshot.id] = snapshot
            return snapshot
        raise InvalidSnapshotIdError()

    original_get_snapshot = RDSBackend.get_snapshot

    def get_snapshot(self: Any, identifier: str, resource_type: Any, not_found_exception: Any) -> Any:
        if identifier.startswith("arn:"):
            region, account, _, name = split_arn(identifier)
            if account != self.account_id:
                # AWS: a snapshot of another account, by its ARN, if that account shared it ("restore" attribute).
                snapshot = rds_backends[account][region].resource_map[resource_type].get(name)
                if snapshot is None or not {self.account_id, "all"} & set(snapshot.attributes["restore"]):
                    raise not_found_exception(identifier)
                return snapshot
        return original_get_snapshot(self, identifier, resource_type, not_found_exception)

    stack.enter_context(mock.patch.object(STSBackend, "assume_role", assume_role))
    stack.enter_context(mock.patch.object(EBSBackend, "copy_snapshot", copy_snapshot))
    stack.enter_context(mock.patch.object(RDSBackend, "get_snapshot", get_snapshot))


def _trusts(policy: Any, account: str) -> bool:
    """Whether a role's trust policy lets principals of `account` assume it."""
    document = json.loads(policy) if isinstance(policy, str) else policy
    statements = document.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        actions = statement.get("Action", [])
        actions = actions if isinstance(actions, list) else [actions]
        principals = statement.get("Principal", {})
        principals = principals.get("AWS", []) if isinstance(principals, dict) else [principals]
        principals = principals if isinstance(principals, list) else [principals]
        if statement.get("Effect") != "Allow" or not {"sts:AssumeRole", "sts:*", "*"} & set(actions):
            continue
        if any(p in (account, "*") or str(p).startswith(f"arn:aws:iam::{account}:") for p in principals):
            return True
    return False


def _patch_sfn_integration(stack: contextlib.ExitStack) -> None:
    """moto's interpreter passes a Step Functions task's parameters (`StateMachineArn`, `Input`) to boto3 as written,
    and hands the responses (`executionArn`, `output`) back as boto3 returns them; AWS maps both between the state
    language's PascalCase and the API's camelCase (the drill starts the restore with `startExecution.sync:2`)."""
    from unittest import mock

    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_sfn

    cls = state_task_service_sfn.StateTaskServiceSfn
    original_parameters, original_eval = cls._normalise_parameters, cls._eval_service_task

    def recase(value: Any, first: Callable[[str], str]) -> None:
        if isinstance(value, dict):
            for key in list(value):
                value[first(key[0]) + key[1:]] = value.pop(key)

    def normalise_parameters(self: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        original_parameters(self, parameters, *args, **kwargs)
        recase(parameters, str.lower)

    def normalise_response(self: Any, response: Any, *args: Any, **kwargs: Any) -> None:
        recase(response, str.upper)

    def eval_service_task(self: Any, env: Any, *args: Any, **kwargs: Any) -> None:
        original_eval(self, env, *args, **kwargs)
        recase(env.stack[-1], str.upper)

    stack.enter_context(mock.patch.object(cls, "_normalise_parameters", normalise_parameters))
    stack.enter_context(mock.patch.object(cls, "_normalise_response", normalise_response))
    stack.enter_context(mock.patch.object(cls, "_eval_service_task", eval_service_task))


# --- the rehearsal world ----------------------------------------------------------------------------------------------


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
    def cost_usd(self) -> float:
        return self.state_transitions * STATE_TRANSITION_USD

    def states_entered(self) -> list[str]:
        return [e["stateEnteredEventDetails"]["name"] for e in self.history if "stateEnteredEventDetails" in e]


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
        postgres: Postgres | None = None,
        project_overrides: dict[str, Any] | None = None,
        metrics: bool = False,
        drill: bool = False,
    ) -> None:
        self.bitbucket_url = bitbucket_url.rstrip("/")
        self.username, self.password = username, password
        self.project_config = rehearsal_project_config(home, database, drill) | (project_overrides or {})
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
        self.postgres = postgres
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
        self.delivered: list[dict[str, Any]] = []
        self._stack = contextlib.ExitStack()

    # --- lifecycle ---------------------------------------------------------------------------------------------------

    def __enter__(self) -> Rehearsal:
        from moto import mock_aws

        from functions.clients.aws import forget_assumed

        set_fake_credentials()
        forget_assumed()  # an assumed role's keys belong to the previous world's moto
        instance = self.project_config["instances"][0]
        home, database = instance["home"]["strategy"], instance["database"]["strategy"]
        template = synth_template(self.project_config)
        self._stack.enter_context(
            mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}})
        )
        self._stack.enter_context(_patch_moto(self.runtime, self.host))
        self._stack.enter_context(moto_fixes_immutability.patched())  # EBS Snapshot Lock
        if home in COPY_STRATEGIES or database in COPY_STRATEGIES:
            self._serve_host_endpoint()
        self._redirect_logs()
        self._deploy(template)
        os.environ["DEPLOYMENT_ID"] = self.resolver(template["Outputs"]["DeploymentId"]["Value"])  # as in Lambda
        self._create_world()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        if self._own_host_root:
            shutil.rmtree(self.host.root, ignore_errors=True)

    def _serve_host_endpoint(self) -> None:
        """The hosts' AWS CLI (S3 upload, Secrets Manager) talks to this process's moto over HTTP on 127.0.0.1."""
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._stack.callback(server.stop)
        address, port = server.get_host_and_port()
        self.host.env.update(
            {
                "AWS_ENDPOINT_URL": f"http://{address}:{port}",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
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

    def client(self, service: str) -> Any:
        from functions.clients.aws import client

        # The same cached clients the handlers use: creating a boto3 client costs tens of milliseconds.
        return client(service, REGION)

    # --- deploying the template into moto -----------------------------------------------------------------------

    def _deploy(self, template: dict[str, Any]) -> None:
        resources: dict[str, dict[str, Any]] = template["Resources"]
        r = self.resolver
        iam = self.client("iam")
        role_arn = iam.create_role(
            RoleName="rehearsal-role",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        order = [
            "AWS::KMS::Key",
            "AWS::SNS::Topic",
            "AWS::DynamoDB::Table",
            "AWS::SSM::Parameter",
            "AWS::S3::Bucket",
            "AWS::SSM::Document",
            "AWS::Lambda::Function",
            "AWS::StepFunctions::StateMachine",
            "AWS::Events::Rule",
        ]
        for kind in order:
            for logical, resource in resources.items():
                if resource["Type"] == kind:
                    self._create(logical, kind, resource.get("Properties", {}), role_arn)
        self.state_machines = {
            logical: r.refs[logical]
            for logical, res in resources.items()
            if res["Type"] == "AWS::StepFunctions::StateMachine"
        }
        self.topic_arn = next(r.refs[k] for k, v in resources.items() if v["Type"] == "AWS::SNS::Topic")
        self.table = next(r.refs[k] for k, v in resources.items() if v["Type"] == "AWS::DynamoDB::Table")
        self.parameters = {
            v["Properties"]["Name"]: v["Properties"]["Value"]
            for v in resources.values()
            if v["Type"] == "AWS::SSM::Parameter"
        }

    def _create(self, logical: str, kind: str, props: dict[str, Any], role_arn: str) -> None:
        r = self.resolver
        if kind == "AWS::KMS::Key":
            key = self.client("kms").create_key(Description=logical)["KeyMetadata"]
            r.refs[logical], r.attrs[(logical, "Arn")] = key["KeyId"], key["Arn"]
        elif kind == "AWS::SNS::Topic":
            arn = self.client("sns").create_topic(Name=logical)["TopicArn"]
            r.refs[logical], r.attrs[(logical, "TopicArn")] = arn, arn
        elif kind == "AWS::DynamoDB::Table":
            table = self.client("dynamodb").create_table(
                TableName=logical,
                KeySchema=props["KeySchema"],
                AttributeDefinitions=props["AttributeDefinitions"],
                BillingMode="PAY_PER_REQUEST",
            )["TableDescription"]
            r.refs[logical], r.attrs[(logical, "Arn")] = logical, table["TableArn"]
        elif kind == "AWS::SSM::Parameter":
            self.client("ssm").put_parameter(Name=props["Name"], Value=r(props["Value"]), Type="String")
            r.refs[logical] = props["Name"]
        elif kind == "AWS::SSM::Document":
            r.refs[logical] = ssm_documents.create(self.client("ssm"), props, r)
        elif kind == "AWS::S3::Bucket":
            s3 = self.client("s3")
            name = props.get("BucketName") or f"{logical.lower()[:40]}-{uuid.uuid4().hex[:8]}"
            locked = bool(props.get("ObjectLockEnabled"))
            s3.create_bucket(
                Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION}, ObjectLockEnabledForBucket=locked
            )
            if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            if locked and props.get("ObjectLockConfiguration"):
                s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration=props["ObjectLockConfiguration"])
            r.refs[logical], r.attrs[(logical, "Arn")] = name, f"arn:aws:s3:::{name}"
            self.archive_bucket = name
        elif kind == "AWS::Lambda::Function":
            code = io.BytesIO()
            with zipfile.ZipFile(code, "w") as archive:
                archive.writestr("README", "the rehearsal runs functions/ in-process")
            fn = self.client("lambda").create_function(
                FunctionName=logical,
                Runtime="python3.13",
                Role=role_arn,
                Handler=props["Handler"],
                Code={"ZipFile": code.getvalue()},
                Timeout=props.get("Timeout", 60),
                Environment={"Variables": r(props.get("Environment", {}).get("Variables", {}))},
            )
            r.refs[logical], r.attrs[(logical, "Arn")] = logical, fn["FunctionArn"]
        elif kind == "AWS::Events::Rule":
            # Kept here and delivered by `wait`: moto's EventBridge does not see Step Functions status changes.
            self.rules.append((r(props["EventPattern"]), [r(t["Arn"]) for t in props.get("Targets", [])]))
        elif kind == "AWS::StepFunctions::StateMachine":
            definition = r(props["DefinitionString"])
            # A fixed name counts (the functions recognise the drill's restore machine by it); else the logical id.
            name = props.get("StateMachineName") or logical
            arn = self.client("stepfunctions").create_state_machine(name=name, definition=definition, roleArn=role_arn)[
                "stateMachineArn"
            ]
            r.refs[logical], r.attrs[(logical, "Name")] = arn, name
            self.definitions = getattr(self, "definitions", {})
            self.definitions[logical] = json.loads(definition)

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
            ec2 = self.client("ec2")
            # moto's own example AMI: listing all of moto's images would take seconds.
            ec2_instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m5.large")[
                "Instances"
            ][0]
            zone = ec2_instance["Placement"]["AvailabilityZone"]
            self.resources["zone"] = zone
            volumes = {}
            for device, size in (("/dev/xvdf", self.home_gb), ("/dev/xvdg", 20)):
                volume = ec2.create_volume(AvailabilityZone=zone, Size=size, VolumeType="gp3")["VolumeId"]
                ec2.attach_volume(VolumeId=volume, InstanceId=ec2_instance["InstanceId"], Device=device)
                volumes[device] = volume
            # /dev/xvdg is attached but not configured: it must not be snapshotted.
            self.resources.update(ec2_instance=ec2_instance["InstanceId"], volumes=volumes)
            home["instance_id"] = ec2_instance["InstanceId"]
        if home["strategy"] == "rsync":
            if self.home_path is None:
                self.bitbucket_home = build_home(self.host.root, range(1, self.home_repos + 1))
                self.home_path = self.bitbucket_home.root
            home.update(
                instance_id=self._host_instance("home"),
                owner=pwd.getpwuid(os.getuid()).pw_name,  # Bitbucket's user on a real host
                home_path=str(self.home_path),
                staging_path=str(self.host.root / "staging"),
            )
        if database["strategy"] == "postgresql":
            if self.postgres is None:
                self.postgres = self._stack.enter_context(local_postgres())
            secret = sm.create_secret(
                Name="bitbucket/demo/db",
                SecretString=json.dumps({"username": "bitbucket", "password": APP_PASSWORD}),
            )["ARN"]
            database.update(
                instance_id=self._host_instance("database"),
                host=self.postgres.host,
                port=self.postgres.port,
                password_secret=secret,
                dump_path=str(self.host.root / "dumps"),
            )
            self.resources["postgres"] = f"{self.postgres.host}:{self.postgres.port}"
        if home["strategy"] in COPY_STRATEGIES or database["strategy"] in COPY_STRATEGIES:
            self.instance_overrides.setdefault("archive", {"work_path": str(self.host.root / "archive-work")})
        if home["strategy"] in COPY_STRATEGIES:
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

    def snapshots(self, backup_id: str | None = None) -> list[dict[str, Any]]:
        from functions.models.config import parse_instance_config
        from functions.strategies import strategies_for

        config = parse_instance_config(self.instance_config)
        return [
            a.summary() | {"backup_id": a.backup_id} for s in strategies_for(config) for a in s.artifacts(backup_id)
        ]

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
