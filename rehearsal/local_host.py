"""The local Run Command host: the commands of the stack's SSM documents, run with sh in a local directory that
stands in for the EC2 hosts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
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
        self._lock = threading.Lock()
        # Every command's process while it runs, by its key (the command id; a direct run without one gets its own).
        self._running: dict[str, subprocess.Popen[str]] = {}
        self._threads: list[threading.Thread] = []
        self._cancelled: set[str] = set()

    def run(self, instance_id: str, script: str, key: str = "") -> HostCommand:
        """Runs the command to its end (a test's direct call); SSM's own way is `start`. `key` names it for
        `cancel` (the command id)."""
        for hook in list(self.before_run):
            hook(instance_id, script)
        fault = self.faults.get(instance_id)
        if fault in ("TimedOut", "Cancelled", "InProgress"):
            result = HostCommand(instance_id, script, fault, -1, "", "")
        elif key and key in self._cancelled:
            result = HostCommand(instance_id, script, "Cancelled", -1, "", "")
        else:
            path = f"{self.bin}:{AWS_CLI_DIR}:{os.environ.get('PATH', '')}"
            env = {**os.environ, **self.env, "PATH": path}
            proc = subprocess.Popen(
                ["sh", "-c", script],
                cwd=self.root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # its own process group: a cancel ends what it started too (tar, aws s3 cp)
            )
            running_as = key or f"direct-{proc.pid}"
            with self._lock:
                self._running[running_as] = proc
            try:
                stdout, stderr = proc.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                stdout, stderr = proc.communicate()
            finally:
                with self._lock:
                    self._running.pop(running_as, None)
            status = "Success" if proc.returncode == 0 else "Failed"
            if key and key in self._cancelled:
                status = "Cancelled"
            result = HostCommand(instance_id, script, status, proc.returncode, stdout, stderr)
        self.commands.append(result)
        for after in list(self.after_run):
            after(result)
        return result

    def start(self, instance_id: str, script: str, done: Callable[[HostCommand], None], key: str = "") -> None:
        """As the SSM agent runs a command: in the background, the caller polling its invocation meanwhile; `done`
        is called with the result (never, for a command faulted to stay InProgress)."""
        if self.faults.get(instance_id) == "InProgress":
            self.commands.append(HostCommand(instance_id, script, "InProgress", -1, "", ""))
            return

        def run() -> None:
            done(self.run(instance_id, script, key))

        thread = threading.Thread(target=run, name=f"host-command-{instance_id}", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def cancel(self, key: str) -> None:
        """As the agent cancels a command: its process is killed (or never started)."""
        with self._lock:
            self._cancelled.add(key)
            proc = self._running.get(key)
        if proc is not None:
            _kill_group(proc)

    def stop(self) -> None:
        """The world ends: a command still running (a failed backup's copy, say) is killed, as the host would be
        torn down, so that nothing of it writes into the next world."""
        with self._lock:
            running, threads, self._threads = list(self._running.values()), self._threads, []
        for proc in running:
            _kill_group(proc)
        for thread in threads:
            thread.join(timeout=10)

    def freezes(self) -> list[str]:
        return self.freeze_log.read_text().splitlines() if self.freeze_log.exists() else []


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """As the agent ends a cancelled command: the shell and every process it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
