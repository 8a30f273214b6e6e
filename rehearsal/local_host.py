"""The local Run Command host: the commands of the stack's SSM documents, run with sh in a local directory that
stands in for the EC2 hosts."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from functions.models.host_operations import DIR_VARIABLE

# The pinned AWS CLI `make awscli` installs (the host script calls `aws`); else whichever `aws` is on PATH.
AWS_CLI_DIR = Path(__file__).resolve().parent.parent / ".awscli" / "bin"


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
