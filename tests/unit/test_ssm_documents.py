"""The rehearsal's SendCommand behaves as SSM's: only documents that exist, parameters checked against their
allowedPattern before anything runs, `{{ name }}` substituted, the commands run by the local host."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from functions.models.host_operations import OPERATIONS, content
from rehearsal import moto_fixes, ssm_documents
from rehearsal.fake_account import set_fake_credentials
from rehearsal.lambda_runtime import LambdaRuntime, LogCapture
from rehearsal.local_host import LocalHost


def test_send_command_runs_only_the_stacks_documents_with_valid_parameters(tmp_path: Path) -> None:
    set_fake_credentials()
    host = LocalHost(tmp_path)
    with mock_aws(), moto_fixes.patched(LambdaRuntime(LogCapture()), host):
        ssm = boto3.client("ssm", region_name="eu-west-1")
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        instance = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        name = ssm_documents.create(
            ssm,
            {"Name": "Stack-host-CheckTargetDirectory", "Content": content(OPERATIONS["CheckTargetDirectory"])},
            lambda value: value,
        )

        def send(document: str, **parameters: list[str]) -> str:
            return str(
                ssm.send_command(InstanceIds=[instance], DocumentName=document, Parameters=parameters)["Command"][
                    "CommandId"
                ]
            )

        # The generic document is not the stack's: SSM has no such document here, nothing runs.
        with pytest.raises(ClientError, match="InvalidDocument"):
            send("AWS-RunShellScript", commands=["touch pwned"])
        with pytest.raises(ClientError, match="InvalidParameters"):
            send(name, path=[f"{tmp_path}/x'; touch pwned; '"])
        with pytest.raises(ClientError, match="InvalidParameters"):
            send(name, path=["/x"], commands=["touch pwned"])
        assert host.commands == [] and not (tmp_path / "pwned").exists()

        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "f").write_text("x")

        def ended(command: str) -> dict[str, Any]:
            """The command runs in the background, as the agent runs it: its invocation once it has ended. (Not
            host.stop(): that kills what still runs, as a torn-down host would, which a busy machine showed as -9.)"""
            deadline = time.monotonic() + 60
            while True:
                invocation: dict[str, Any] = ssm.get_command_invocation(CommandId=command, InstanceId=instance)
                if invocation["Status"] not in ("Pending", "InProgress", "Delayed") or time.monotonic() > deadline:
                    return invocation
                time.sleep(0.05)

        command = send(name, path=[str(tmp_path / "full")])
        invocation = ended(command)
        assert (invocation["Status"], invocation["ResponseCode"]) == ("Failed", 6)
        command = send(name, path=[str(tmp_path / "empty")])
        assert ended(command)["Status"] == "Success"
        host.stop()
        assert f"p='{tmp_path}/empty'" in host.commands[-1].script
