"""Host operations on an EC2 host through SSM Run Command: the stack's own documents, sent by name.

A function sends an operation of functions.models.host_operations (its document's name comes from the stack's
environment, never from an event) and that operation's parameters; never a script. Each value is checked against
the document's allowedPattern here first, so a refusal names the step and the field instead of SSM's error.
`run` is only for steps that take seconds (install, checks, flush, freeze, unfreeze); long copies (rsync, pg_dump,
archive) are driven by the state machine with `start` and `check`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from functions.clients.aws import client, error_code
from functions.errors import HostCommandFailed
from functions.models import environment
from functions.models.host_operations import OPERATIONS
from functions.observability import redact

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.results import HostCommand, HostSummary

Parameters = dict[str, str | int]


def run(
    instance_id: str, operation: str, parameters: Parameters, *, step: str, timeout: int = 120, poll: float = 0.2
) -> str:
    """A short operation, waited for here; its stdout. Raises HostCommandFailed if it fails or outlives `timeout`.
    Checked every `poll` seconds: some run under the lock (flush, freeze, unfreeze), where each wait counts."""
    command = start(instance_id, operation, parameters, step=step, timeout=timeout)
    deadline = time.monotonic() + timeout + 30
    while True:
        status, invocation = _invocation(command)
        if status == "Success":
            return str(invocation.get("StandardOutputContent", ""))
        if status in _TERMINAL_FAILURES:
            raise _failed(command, status, invocation)
        if time.monotonic() > deadline:
            raise HostCommandFailed(f"{step}: command on {instance_id} still {status} after {timeout} s")
        time.sleep(poll)


def _invocation(command: HostCommand) -> tuple[str, dict[str, Any]]:
    return _invocation_of(command["command_id"], command["instance_id"])


def _invocation_of(command_id: str, instance_id: str) -> tuple[str, dict[str, Any]]:
    try:
        invocation = client("ssm").get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    except ClientError as error:
        # Eventually consistent: right after SendCommand the invocation may not exist yet.
        if error_code(error) != "InvocationDoesNotExist":
            raise
        invocation = {"Status": "Pending"}
    return str(invocation.get("Status", "Pending")), dict(invocation)


def _failed(command: HostCommand, status: str, invocation: dict[str, Any]) -> HostCommandFailed:
    """The step, the host, how it ended, and the end of its error output (secrets masked)."""
    detail = redact((invocation.get("StandardErrorContent") or "").strip())[-500:]
    code = invocation.get("ResponseCode")
    return HostCommandFailed(
        f"{command['step']}: command on {command['instance_id']} ended {status}"
        + (f" (exit {code})" if code not in (None, -1) else "")
        + (f": {detail}" if detail else "")
    )


# --- long commands, driven by the state machine: start one, then check it until it ends ---------------------------

_TERMINAL_FAILURES = {
    "Cancelled",
    "Failed",
    "TimedOut",
    "Cancelling",
    "DeliveryTimedOut",
    "Undeliverable",
    "Terminated",
}


def document(operation: str) -> str:
    """The stack's document for an operation (the prefix is the deployed stack's, from the environment)."""
    prefix = environment.host_document_prefix()
    if not prefix:
        raise HostCommandFailed(
            f"this deployment names no host documents ({environment.HOST_DOCUMENT_PREFIX} is not set)"
        )
    return prefix + operation


def _parameters(operation: str, parameters: Parameters, step: str) -> dict[str, list[str]]:
    """SendCommand's parameters, each checked against its document's allowedPattern (as SSM will)."""
    spec = OPERATIONS[operation]
    known = {p.name for p in spec.parameters}
    assert set(parameters) <= known, f"{operation} takes no {sorted(set(parameters) - known)}"
    sent: dict[str, list[str]] = {}
    for p in spec.parameters:
        value = str(parameters.get(p.name, ""))
        if value == "" and p.optional:
            continue
        if not p.accepts(value):
            shown = value if len(value) <= 80 else value[:80] + "…"
            raise HostCommandFailed(
                f"{step}: {p.description[0].lower()}{p.description[1:]} '{shown}' cannot be sent to the host: it "
                "has characters (or a form) the host operation does not accept"
            )
        sent[p.name] = [value]
    return sent


def _comment(run: str, step: str) -> str:
    """The command's Comment: the run it belongs to (a backup id, a restore's execution name) first, so that
    cancel_running finds the run's own commands and never another's."""
    return (f"bitbucket-diy-backup {run}: {step}" if run else f"bitbucket-diy-backup {step}")[:100]


def start(
    instance_id: str, operation: str, parameters: Parameters, *, step: str, timeout: int, run: str = ""
) -> HostCommand:
    """SendCommand of an operation's document; returns what check() needs (JSON, carried by the state machine).
    `run` marks a long command as the run's, for cancel_running."""
    ssm = client("ssm")
    sent = _parameters(operation, parameters, step) | {"executionTimeout": [str(max(30, min(timeout, 172800)))]}
    try:
        command = ssm.send_command(
            InstanceIds=[instance_id],
            DocumentName=document(operation),
            Parameters=sent,
            TimeoutSeconds=max(30, min(timeout, 2592000)),
            Comment=_comment(run, step),
        )["Command"]
    except ClientError as error:
        raise HostCommandFailed(
            f"{step}: SSM SendCommand of {document(operation)} to {instance_id} failed: {error_code(error)}"
        ) from None
    return {
        "instance_id": instance_id,
        "command_id": command["CommandId"],
        "step": step,
        "started_at": time.time(),
        "timeout": timeout,
    }


def check(command: HostCommand) -> HostSummary | None:
    """None while the command runs; its parsed JSON summary (the last JSON line on stdout) once it succeeded.
    Raises HostCommandFailed when it failed, timed out or was cancelled, or outlived its timeout."""
    status, invocation = _invocation(command)
    if status == "Success":
        return _summary(command["step"], str(invocation.get("StandardOutputContent") or ""))
    if status in _TERMINAL_FAILURES:
        raise _failed(command, status, invocation)
    waited = time.time() - float(command["started_at"])
    if waited > int(command["timeout"]) + 120:
        raise HostCommandFailed(
            f"{command['step']}: command on {command['instance_id']} still {status} after {waited:.0f} s"
        )
    return None


def _summary(step: str, stdout: str) -> HostSummary:
    found: HostSummary = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                found[str(parsed.get("subcommand", len(found)))] = parsed
    if not found:
        raise HostCommandFailed(f"{step}: the host command succeeded but printed no JSON summary")
    return found


# --- a failure path: the run's commands still running are cancelled before what they write is removed -------------

_RUNNING = ("Pending", "InProgress", "Delayed")


def cancel_running(instance_ids: list[str], run: str, *, since: float, wait_s: float = 60.0) -> list[str]:
    """Cancels the long commands of `run` still running on these hosts (started after `since`, epoch seconds), and
    waits until they ended, at most wait_s: a failure path removes what a run made only once none of its commands
    can still write (an archive still uploading, a home still extracting). What it did, for the notification."""
    if not run or not instance_ids:
        return []
    ssm = client("ssm")
    marker, prefix = _comment(run, ""), environment.host_document_prefix()
    after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since - 60))
    cancelled: list[tuple[str, str, str]] = []
    for instance_id in sorted(set(instance_ids)):
        kwargs: dict[str, Any] = {"InstanceId": instance_id, "Filters": [{"key": "InvokedAfter", "value": after}]}
        while True:
            page = ssm.list_commands(**kwargs)
            for command in page.get("Commands", []):
                comment = str(command.get("Comment") or "")
                if (
                    command.get("Status") in _RUNNING
                    and comment.startswith(marker)
                    and str(command.get("DocumentName", "")).startswith(prefix)
                ):
                    try:
                        ssm.cancel_command(CommandId=command["CommandId"], InstanceIds=[instance_id])
                    except ClientError as error:  # it ended meanwhile
                        if error_code(error) not in ("InvalidCommandId", "InvalidInstanceId"):
                            raise
                    cancelled.append((str(command["CommandId"]), instance_id, comment.removeprefix(marker)))
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
    deadline = time.monotonic() + wait_s
    done: list[str] = []
    for command_id, instance_id, step in cancelled:
        status, _ = _invocation_of(command_id, instance_id)
        while status in _STILL and time.monotonic() < deadline:
            time.sleep(0.5)
            status, _ = _invocation_of(command_id, instance_id)
        done.append(f"{'asked to cancel' if status in _STILL else 'cancelled'} {step} on {instance_id}")
    return done


def cancel(commands: list[HostCommand], wait_s: float = 60.0) -> list[str]:
    """Cancels these commands (a copy step's own, just sent for a run already discarded) and waits until they ended,
    at most wait_s, so that what they leave is removed only after. One line each, for the step's error."""
    ssm = client("ssm")
    for command in commands:
        try:
            ssm.cancel_command(CommandId=command["command_id"], InstanceIds=[command["instance_id"]])
        except ClientError as error:  # it ended meanwhile
            if error_code(error) not in ("InvalidCommandId", "InvalidInstanceId"):
                raise
    deadline = time.monotonic() + wait_s
    done: list[str] = []
    for command in commands:
        status, _ = _invocation(command)
        while status in _STILL and time.monotonic() < deadline:
            time.sleep(0.2)
            status, _ = _invocation(command)
        if status in _STILL:
            how = f"asked to cancel (still {status})"
        else:
            how = {"Cancelled": "cancelled", "Success": "had ended"}.get(status, f"ended {status}")
        done.append(f"{command['step']} on {command['instance_id']} {how}")
    return done


_STILL = (*_RUNNING, "Cancelling")
