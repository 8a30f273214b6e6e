"""Short commands on an EC2 host through SSM Run Command (AWS-RunShellScript), waited for in-process.

`run` is only for steps that take seconds (flush, freeze, unfreeze); long copies (rsync, pg_dump, archive) are
driven by the state machine with `start` and `check`, and call the host script installed by `install_script`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from functions.clients.aws import client, error_code
from functions.errors import HostCommandFailed
from functions.observability import redact

# Statuses in which a command has ended without success.


def run(instance_id: str, script: str, *, step: str, timeout: int = 120, poll: float = 0.2) -> str:
    """A short command, waited for here; its stdout. Raises HostCommandFailed if it fails or outlives `timeout`.
    Checked every `poll` seconds: some run under the lock (flush, freeze, unfreeze), where each wait counts."""
    command = start(instance_id, script, step=step, timeout=timeout)
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


def _invocation(command: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    try:
        invocation = client("ssm").get_command_invocation(
            CommandId=command["command_id"], InstanceId=command["instance_id"]
        )
    except ClientError as error:
        # Eventually consistent: right after SendCommand the invocation may not exist yet.
        if error_code(error) != "InvocationDoesNotExist":
            raise
        invocation = {"Status": "Pending"}
    return str(invocation.get("Status", "Pending")), dict(invocation)


def _failed(command: dict[str, Any], status: str, invocation: dict[str, Any]) -> HostCommandFailed:
    """The step, the host, how it ended, and the end of its error output (secrets masked)."""
    detail = redact((invocation.get("StandardErrorContent") or "").strip())[-500:]
    code = invocation.get("ResponseCode")
    return HostCommandFailed(
        f"{command['step']}: command on {command['instance_id']} ended {status}"
        + (f" (exit {code})" if code not in (None, -1) else "")
        + (f": {detail}" if detail else "")
    )


# --- long commands, driven by the state machine: start one, then check it until it ends ---------------------------

SCRIPT_PATH = Path(__file__).resolve().parent.parent / "host" / "bitbucket-backup-host.sh"
_TERMINAL_FAILURES = {
    "Cancelled",
    "Failed",
    "TimedOut",
    "Cancelling",
    "DeliveryTimedOut",
    "Undeliverable",
    "Terminated",
}


@functools.lru_cache(maxsize=1)
def host_script() -> tuple[str, str]:
    """The host script's text and its versioned install path on the host (version and content hash)."""
    text = SCRIPT_PATH.read_text()
    match = re.search(r'^VERSION="([0-9A-Za-z.-]+)"$', text, re.MULTILINE)
    version = match.group(1) if match else "0"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return text, f"/var/tmp/bitbucket-backup-host-{version}-{digest}.sh"


def install_script() -> str:
    """A command that writes the host script to its versioned path, unless an identical copy is already there.

    The script (about 48 KB) is sent once per run, in the step before the lock, rather than inline in every command:
    each later command only calls the installed copy, so the commands in the SSM history stay short and readable."""
    text, path = host_script()
    digest = hashlib.sha256(text.encode()).hexdigest()
    delimiter = "BBSCRIPT_" + digest[:16]
    assert delimiter not in text
    target = shlex.quote(path)
    return "\n".join(
        [
            "set -euo pipefail",
            f"if [ -f {target} ] && echo {digest}'  '{target} | sha256sum -c --status; then exit 0; fi",
            f"tmp=$(mktemp {target}.XXXXXX)",
            f"cat > \"$tmp\" <<'{delimiter}'",
            text.rstrip("\n"),
            delimiter,
            'chmod 0755 "$tmp"',
            f'mv -f "$tmp" {target}',
        ]
    )


_SHELL_VARIABLE = re.compile(r"^\$[a-z]+(/[A-Za-z0-9._-]+)*$")


def _word(arg: str | int) -> str:
    """One argument, quoted; `$name/rest` is a variable of the surrounding script (a temporary path), expanded."""
    text = str(arg)
    return f'"{text}"' if _SHELL_VARIABLE.match(text) else shlex.quote(text)


def installed_check() -> str:
    """A line that fails clearly (exit 11) if the host script is not installed on the host."""
    _, path = host_script()
    return f"[ -f {shlex.quote(path)} ] || {{ echo 'host script {path} is not installed' >&2; exit 11; }}"


def script_line(subcommand: str, *args: str | int) -> str:
    """One call of the installed host script, every argument quoted."""
    _, path = host_script()
    return " ".join(_word(w) for w in ["bash", path, subcommand, *args])


def script_command(subcommand: str, *args: str | int, then: str | None = None) -> str:
    """A whole command: the installed-check and one call of the host script. `then` is run after it."""
    lines = ["set -euo pipefail", installed_check(), script_line(subcommand, *args)]
    return "\n".join(lines + ([then] if then else []))


def start(instance_id: str, script: str, *, step: str, timeout: int) -> dict[str, Any]:
    """SendCommand; returns what check() needs (JSON, carried by the state machine)."""
    ssm = client("ssm")
    try:
        command = ssm.send_command(
            InstanceIds=[instance_id],
            DocumentName="AWS-RunShellScript",
            Parameters={"commands": [script], "executionTimeout": [str(timeout)]},
            TimeoutSeconds=max(30, min(timeout, 2592000)),
            Comment=f"bitbucket-diy-backup {step}"[:100],
        )["Command"]
    except ClientError as error:
        raise HostCommandFailed(f"{step}: SSM SendCommand to {instance_id} failed: {error_code(error)}") from None
    return {
        "instance_id": instance_id,
        "command_id": command["CommandId"],
        "step": step,
        "started_at": time.time(),
        "timeout": timeout,
    }


def check(command: dict[str, Any]) -> dict[str, Any] | None:
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


def _summary(step: str, stdout: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
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
