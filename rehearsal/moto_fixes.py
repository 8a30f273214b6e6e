"""Where moto (5.2) does not behave as AWS does and the rehearsal depends on it: `patched` is the one place that
applies every fix (this module's, the EBS Snapshot Lock of rehearsal/moto_fixes_immutability.py, and the speed-ups
of rehearsal/moto_speed.py), and routes what moto cannot do itself to the rehearsal: Lambda invocations to the
Lambda runtime (rehearsal/lambda_runtime.py), Run Commands to the local host.

Each fix has a test in tests/unit/test_moto_fixes.py that fails once moto behaves like AWS: then drop the fix.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from rehearsal import iam, moto_fixes_immutability, moto_speed, ssm_documents
from rehearsal.lambda_runtime import LambdaRuntime
from rehearsal.local_host import LocalHost


def patched(runtime: LambdaRuntime, host: LocalHost) -> contextlib.ExitStack:
    """Patches that make moto behave like AWS where the rehearsal depends on it."""
    stack = contextlib.ExitStack()
    _run_lambdas_in_process(stack, runtime)
    _keep_logging_config(stack)
    _patch_exclude_data_volumes(stack)
    _patch_sfn_integration(stack)
    _run_commands_on_host(stack, host)
    _patch_cross_account(stack)
    stack.enter_context(moto_speed.patched())
    _patch_dynamodb_atomicity(stack)
    _patch_signature_of_empty_bodies(stack)
    stack.enter_context(moto_fixes_immutability.patched())  # EBS Snapshot Lock
    return stack


def default_log_group(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def _keep_logging_config(stack: contextlib.ExitStack) -> None:
    """A function's LoggingConfig (its log group: the stack gives each function its own) is dropped by moto; Lambda
    keeps it, writes the function's lines there, and answers it in GetFunctionConfiguration (the default group
    /aws/lambda/NAME when none was given)."""
    from unittest import mock

    from moto.awslambda.models import LambdaFunction

    original_init, original_configuration = LambdaFunction.__init__, LambdaFunction.get_configuration

    def __init__(self: Any, account_id: str, spec: dict[str, Any], region: str, version: Any = 1) -> None:
        original_init(self, account_id, spec, region, version)
        given = spec.get("LoggingConfig") or {}
        self.logging_config = {
            "LogFormat": given.get("LogFormat", "Text"),
            "LogGroup": given.get("LogGroup") or default_log_group(spec["FunctionName"]),
        }

    def get_configuration(self: Any, on_create: bool = False) -> dict[str, Any]:
        configuration: dict[str, Any] = original_configuration(self, on_create)
        configuration["LoggingConfig"] = dict(getattr(self, "logging_config", {}))
        return configuration

    stack.enter_context(mock.patch.object(LambdaFunction, "__init__", __init__))
    stack.enter_context(mock.patch.object(LambdaFunction, "get_configuration", get_configuration))


def _patch_signature_of_empty_bodies(stack: contextlib.ExitStack) -> None:
    """With IAM enforced, moto checks a bodiless request's SigV4 signature against a payload of its own making (the
    parsed query, e.g. Lambda's ListFunctions: a GET), so a correctly signed GET fails with SignatureDoesNotMatch.
    AWS hashes the empty body; so does this."""
    from unittest import mock

    from moto.iam.access_control import IAMRequestBase

    original = IAMRequestBase._create_aws_request

    def create_aws_request(self: Any) -> Any:
        request = original(self)
        if self._method in ("GET", "HEAD", "DELETE") and not self._body:  # a POST's form may be in _data only
            request.data = b""
        return request

    stack.enter_context(mock.patch.object(IAMRequestBase, "_create_aws_request", create_aws_request))


def _run_lambdas_in_process(stack: contextlib.ExitStack, runtime: LambdaRuntime) -> None:
    """moto without Docker answers every invocation with a canned payload; the rehearsal runs the handler."""
    from unittest import mock

    from moto.awslambda_simple.models import LambdaSimpleBackend

    def invoke(
        self: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
    ) -> bytes:
        return runtime.invoke(self, function_name, qualifier, body, headers, response_headers)

    stack.enter_context(mock.patch.object(LambdaSimpleBackend, "invoke", invoke))


def _patch_exclude_data_volumes(stack: contextlib.ExitStack) -> None:
    """moto ignores CreateSnapshots' ExcludeDataVolumeIds; AWS honours it."""
    from unittest import mock

    from moto.ec2.models.elastic_block_store import EBSBackend

    original_create_snapshots = EBSBackend.create_snapshots

    def create_snapshots(self: Any, instance_spec: dict[str, Any], description: str, tags: dict[str, str]) -> Any:
        excluded = set(instance_spec.get("ExcludeDataVolumeIds") or [])
        snapshots = original_create_snapshots(self, instance_spec, description, tags)
        keep = []
        for snapshot in snapshots:
            if snapshot.volume.id in excluded:
                self.snapshots.pop(snapshot.id, None)
            else:
                keep.append(snapshot)
        return keep

    stack.enter_context(mock.patch.object(EBSBackend, "create_snapshots", create_snapshots))


_RUNNING = ("Pending", "InProgress", "Delayed")


def _key(command: Any, invocation: dict[str, Any]) -> str:
    return f"{command.command_id}/{invocation['InstanceId']}"


def _run_commands_on_host(stack: contextlib.ExitStack, host: LocalHost) -> None:
    """moto records a Run Command as a success without running it; the rehearsal runs it in the local host, in the
    background as the SSM agent does, so that the workflow's waits on it are real."""
    from unittest import mock

    from moto.ssm.models import SimpleSystemManagerBackend
    from moto.ssm.responses import SimpleSystemManagerResponse

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
        command.status = command.status_details = "InProgress"
        for invocation in command.invocations:
            # As SSM answers while the agent runs it: in progress, no output yet (GetCommandInvocation's content is
            # empty until the command ends); then its status and the first 24,000 / 8,000 characters.
            invocation.update(
                Status="InProgress",
                StatusDetails="InProgress",
                ResponseCode=-1,
                StandardOutputContent="",
                StandardErrorContent="",
            )

            def ended(ran: Any, invocation: dict[str, Any] = invocation) -> None:
                invocation.update(
                    Status=ran.status,
                    StatusDetails=ran.status,
                    ResponseCode=ran.exit_code,
                    StandardOutputContent=ran.stdout[:24000],
                    StandardErrorContent=ran.stderr[:8000],
                )
                if all(i["Status"] not in _RUNNING for i in command.invocations):
                    command.status = command.status_details = ran.status

            host.start(invocation["InstanceId"], rendered.script, ended, key=_key(command, invocation))
        return command

    def cancel_command(self: Any) -> Any:
        """SSM's CancelCommand, which moto lacks: the agent kills the command's process; its invocations end
        Cancelled (those that already ended keep their status)."""
        from moto.core.responses import EmptyResult

        backend = self.ssm_backend
        command = backend.get_command_by_id(self._get_param("CommandId"))
        wanted = set(self._get_param("InstanceIds") or []) or set(command.instance_ids)
        for invocation in command.invocations:
            if invocation["InstanceId"] in wanted and invocation["Status"] in _RUNNING:
                host.cancel(_key(command, invocation))
                invocation.update(Status="Cancelled", StatusDetails="Cancelled", ResponseCode=-1)
        if all(i["Status"] not in _RUNNING for i in command.invocations):
            command.status = command.status_details = "Cancelled"
        return EmptyResult()

    stack.enter_context(mock.patch.object(SimpleSystemManagerBackend, "send_command", send_command))
    stack.enter_context(mock.patch.object(SimpleSystemManagerResponse, "cancel_command", cancel_command, create=True))


def _patch_dynamodb_atomicity(stack: contextlib.ExitStack) -> None:
    """DynamoDB applies each request atomically; moto's backend does not, and the rehearsal's parallel branches
    call it from two threads at once (one reading an item while the other updates it)."""
    from unittest import mock

    from moto.dynamodb.responses import DynamoHandler

    original_call = DynamoHandler.call_action
    dynamodb_lock = threading.RLock()

    def call_action(self: Any) -> Any:
        with dynamodb_lock:
            return original_call(self)

    stack.enter_context(mock.patch.object(DynamoHandler, "call_action", call_action))


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
        # such as the README's aws:PrincipalArn narrowing, are not evaluated here). The Lambda service handing a
        # function its role's keys has checked that the role trusts it (rehearsal/iam.py).
        if iam.SERVICE_CALL.active:
            return original_assume_role(self, **kwargs)
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
    principals = iam.assume_role_principals(policy, "AWS")
    return any(p in (account, "*") or str(p).startswith(f"arn:aws:iam::{account}:") for p in principals)


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
