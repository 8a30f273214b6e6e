"""Short commands on an EC2 host through SSM Run Command (AWS-RunShellScript), waited for in-process.

Only for steps that take seconds (flush, freeze, unfreeze); long copies are driven by the state machine.
"""

from __future__ import annotations

import time

from botocore.exceptions import ClientError

from functions.clients.aws import client, error_code
from functions.errors import HostCommandFailed
from functions.observability import redact

_DONE = {"Success", "Cancelled", "Failed", "TimedOut", "Cancelling"}


def run(instance_id: str, script: str, *, step: str, timeout: int = 120, poll: float = 0.5) -> str:
    ssm = client("ssm")
    try:
        command = ssm.send_command(
            InstanceIds=[instance_id],
            DocumentName="AWS-RunShellScript",
            Parameters={"commands": [script], "executionTimeout": [str(timeout)]},
            TimeoutSeconds=max(30, timeout),
            Comment=f"bitbucket-diy-backup {step}"[:100],
        )["Command"]
    except ClientError as error:
        raise HostCommandFailed(f"{step}: SSM SendCommand to {instance_id} failed: {error_code(error)}") from None
    deadline = time.monotonic() + timeout + 30
    while True:
        try:
            invocation = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=instance_id)
        except ClientError as error:
            # Eventually consistent: right after SendCommand the invocation may not exist yet.
            if error_code(error) != "InvocationDoesNotExist":
                raise
            invocation = {"Status": "Pending"}
        status = invocation.get("Status", "Pending")
        if status in _DONE:
            break
        if time.monotonic() > deadline:
            raise HostCommandFailed(f"{step}: command on {instance_id} still {status} after {timeout} s")
        time.sleep(poll)
    if status != "Success":
        detail = redact((invocation.get("StandardErrorContent") or "").strip())[-500:]
        raise HostCommandFailed(
            f"{step}: command on {instance_id} ended {status}"
            + (f" (exit {invocation.get('ResponseCode')})" if invocation.get("ResponseCode") not in (None, -1) else "")
            + (f": {detail}" if detail else "")
        )
    return str(invocation.get("StandardOutputContent", ""))
