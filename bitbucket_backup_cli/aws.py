"""AWS access: one session for the whole command, the stack's outputs, the state machines and the instances."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from bitbucket_backup_cli.base import (
    ARCHIVE_CONSTRUCT,
    ARCHIVE_OUTPUT,
    FAILED,
    HOST_PROGRESS_CONSTRUCT,
    HOST_PROGRESS_OUTPUT,
    LOOPBACK,
    NOT_FOUND,
    OUTPUT_KEYS,
    CliError,
)
from functions.models import steps

if TYPE_CHECKING:
    from functions.models.config import InstanceConfig


# --- AWS access ----------------------------------------------------------------------------------------------------


@dataclass
class StateMachine:
    kind: str  # backup | restore
    arn: str
    instances: list[str] | None = None  # from the stack output's description; None when not known

    @property
    def name(self) -> str:
        return self.arn.rsplit(":", 1)[-1]

    def execution_arn(self, name: str) -> str:
        return self.arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


@dataclass
class Aws:
    """One boto3 session for the whole command: the operator's profile, region and (local runtime) endpoint."""

    region: str | None
    profile: str | None
    endpoint_url: str | None
    stack_name: str
    _session: Any = None
    _clients: dict[str, Any] = field(default_factory=dict)
    _machines: list[StateMachine] | None = None
    _outputs: list[dict[str, Any]] | None = None
    _definitions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def config_prefix(self) -> str:
        # As the stack writes them (stacks/backup_stack.py): one parameter per instance under this prefix.
        return f"/bitbucket-diy-backup/{self.stack_name}/instances"

    def session(self) -> Any:
        if self._session is None:
            import boto3
            import botocore.session

            core = botocore.session.Session(profile=self.profile)
            if self._local() and core.get_credentials() is None:
                # The local runtime knows these keys (an administrator of the emulated account): never real ones.
                core.set_credentials("testing", "testing")
            self._session = boto3.session.Session(botocore_session=core, region_name=self.region)
        return self._session

    def _local(self) -> bool:
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        return bool(endpoint) and urlparse(endpoint).hostname in LOOPBACK

    def client(self, service: str, region: str | None = None) -> Any:
        if service not in self._clients:
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=60)
            self._clients[service] = self.session().client(service, endpoint_url=self.endpoint_url, config=config)
        return self._clients[service]

    @property
    def region_name(self) -> str:
        return str(self.session().region_name or "?")

    # --- the state machines ------------------------------------------------------------------------------------------

    def machines(self) -> list[StateMachine]:
        """From the stack outputs when the stack exists; else (the local runtime, a renamed stack) by name."""
        if self._machines is None:
            found = self._from_stack()
            if found is None:
                found = self._by_name()
            self._machines = found
        return self._machines

    def _stack_outputs(self) -> list[dict[str, Any]] | None:
        """The stack's outputs; None when there is no such stack here (or no permission to read it)."""
        from botocore.exceptions import ClientError

        if self._outputs is None:
            try:
                stacks = self.client("cloudformation").describe_stacks(StackName=self.stack_name)["Stacks"]
            except ClientError:
                return None
            self._outputs = list(stacks[0].get("Outputs", [])) if stacks else []
        return self._outputs

    def archive_bucket(self) -> str | None:
        """The stack's archive bucket (its output); without the stack's outputs (the local runtime), the one bucket
        named as CloudFormation names the stack's."""
        outputs = self._stack_outputs()
        if outputs is not None:
            return next((o["OutputValue"] for o in outputs if o.get("OutputKey") == ARCHIVE_OUTPUT), None)
        prefix = f"{self.stack_name}-{ARCHIVE_CONSTRUCT}".lower()
        names = [b["Name"] for b in self.client("s3").list_buckets().get("Buckets", [])]
        found = [n for n in names if n.startswith(prefix)]
        return found[0] if len(found) == 1 else None

    def host_progress_group(self) -> str | None:
        """The log group of the hosts' progress reports (its output); without the stack's outputs (the local
        runtime), the one group named as CloudFormation names the stack's. None: the stack has none (no archives)."""
        outputs = self._stack_outputs()
        if outputs is not None:
            return next((o["OutputValue"] for o in outputs if o.get("OutputKey") == HOST_PROGRESS_OUTPUT), None)
        prefix = f"{self.stack_name}-{HOST_PROGRESS_CONSTRUCT}"
        groups = self.client("logs").describe_log_groups(logGroupNamePrefix=prefix).get("logGroups", [])
        found = [str(g["logGroupName"]) for g in groups if str(g.get("logGroupName", "")).startswith(prefix)]
        return found[0] if len(found) == 1 else None

    def _from_stack(self) -> list[StateMachine] | None:
        outputs = self._stack_outputs()
        if outputs is None:
            return None  # look the state machines up by name
        found = []
        for output in outputs:
            for kind, key in OUTPUT_KEYS.items():
                if re.fullmatch(key + r"\d*", output.get("OutputKey", "")):
                    described = output.get("Description", "")
                    names = described.split(":", 1)[1] if ":" in described else ""
                    instances = [n.strip() for n in names.split(",") if n.strip()] or None
                    found.append(StateMachine(kind, output["OutputValue"], instances))
        return found or None

    def _by_name(self) -> list[StateMachine]:
        found = []
        for page in self.client("stepfunctions").get_paginator("list_state_machines").paginate():
            for machine in page["stateMachines"]:
                for kind, key in OUTPUT_KEYS.items():
                    if key in machine["name"]:
                        found.append(StateMachine(kind, machine["stateMachineArn"]))
        return found

    def machine_for(self, kind: str, instance: str) -> StateMachine:
        candidates = [m for m in self.machines() if m.kind == kind]
        if not candidates:
            raise CliError(
                NOT_FOUND,
                f"no {kind} state machine found (stack {self.stack_name} in {self.region_name}): is the stack "
                "deployed there? (--stack-name, --region, --endpoint-url)",
            )
        serving = [m for m in candidates if m.instances and instance in m.instances]
        if len(serving) == 1 or len(candidates) == 1:
            return (serving or candidates)[0]
        names = ", ".join(m.name for m in candidates)
        raise CliError(FAILED, f"several {kind} state machines ({names}) and none says it serves '{instance}'")

    def unlock_function(self, instance: str) -> str:
        """The function that answers `unlock` for `instance` (the backup's safety net): from the stack's outputs
        (their descriptions end in the instances it serves); without them (the local runtime), the one there is."""

        def serves(described: str) -> bool:
            if steps.OPERATOR_UNLOCK_FOR not in described:
                return False
            served = described.split(steps.OPERATOR_UNLOCK_FOR, 1)[1]
            return instance in [n.strip() for n in served.split(",")]

        outputs = self._stack_outputs()
        if outputs is not None:
            found = [o["OutputValue"] for o in outputs if serves(o.get("Description", ""))]
        else:  # no outputs to say which serves whom: the one backup safety net there is (its description: its id)
            found = [
                f["FunctionName"]
                for page in self.client("lambda").get_paginator("list_functions").paginate()
                for f in page["Functions"]
                if re.search(r": SafetyNet\d*$", f.get("Description", ""))
            ]
        if len(found) != 1:
            raise CliError(
                NOT_FOUND,
                f"no safety-net function to unlock '{instance}' (stack {self.stack_name} in {self.region_name}): "
                "is a stack of this version deployed there? (--stack-name, --region, --endpoint-url)",
            )
        return str(found[0])

    def definition(self, machine_arn: str) -> dict[str, Any]:
        if machine_arn not in self._definitions:
            described = self.client("stepfunctions").describe_state_machine(stateMachineArn=machine_arn)
            self._definitions[machine_arn] = dict(json.loads(described["definition"]))
        return self._definitions[machine_arn]

    # --- instances --------------------------------------------------------------------------------------------------

    def instance_names(self) -> list[str]:
        names = []
        paginator = self.client("ssm").get_paginator("get_parameters_by_path")
        for page in paginator.paginate(Path=self.config_prefix, Recursive=True):
            names += [p["Name"].rsplit("/", 1)[-1] for p in page["Parameters"]]
        return sorted(names)

    def instance_config(self, name: str) -> InstanceConfig:
        from botocore.exceptions import ClientError

        from functions.clients.aws import error_code
        from functions.models.config import ConfigError, parse_instance_config

        try:
            raw = self.client("ssm").get_parameter(Name=f"{self.config_prefix}/{name}")["Parameter"]["Value"]
        except ClientError as error:
            if error_code(error) != "ParameterNotFound":
                raise
            known = self.instance_names()
            configured = f"configured: {', '.join(known)}" if known else "none is configured here"
            raise CliError(
                NOT_FOUND, f"no instance '{name}' in stack {self.stack_name} ({self.region_name}); {configured}"
            ) from None
        try:
            return parse_instance_config(json.loads(raw))
        except (ValueError, ConfigError) as error:
            first = str(error).splitlines()[-1]
            raise CliError(FAILED, f"the stored configuration of instance '{name}' is invalid: {first}") from None

    @contextmanager
    def catalog_clients(self, config: InstanceConfig) -> Iterator[None]:
        """The catalog code (functions/strategies) asks functions.clients.aws for its clients: give it ours."""
        from functions.clients.aws import clients_from
        from functions.strategies import acting_for, deployment_id_for

        # The stack's deployment id (its account, region and name): only its artifacts are listed.
        account = str(self.client("sts").get_caller_identity()["Account"])
        deployment = deployment_id_for(account, self.region_name, self.stack_name)
        archives = self.archive_bucket() if config.uses_archive else None
        with clients_from(lambda service, region: self.client(service)), acting_for(deployment, archives):
            yield
