"""Host-script fixtures: the script itself, a Bitbucket-like home of real git repositories, a tiny file system, and a
real PostgreSQL 15 server started on loopback for the test session (as a non-root user when the tests run as root).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rehearsal.hostworld import (  # noqa: F401  (re-exported for the host tests)
    APP_PASSWORD,
    EXCLUDED,
    INCLUDED,
    PG_BIN,
    REPOS,
    TABLES,
    BitbucketHome,
    Postgres,
    PostgresUnavailable,
    build_home,
    git,
    local_postgres,
    table_fingerprint,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "functions" / "host" / "bitbucket-backup-host.sh"

# Exit codes documented in the script's header.
EXIT_USAGE, EXIT_MISSING, EXIT_NO_SPACE, EXIT_COPY, EXIT_REFUSED, EXIT_CHECKSUM, EXIT_AUTH = 2, 3, 4, 5, 6, 7, 8


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        """The one-line JSON summary a successful subcommand prints on stdout."""
        assert self.returncode == 0, f"exit {self.returncode}: {self.stderr}"
        lines = self.stdout.splitlines()
        assert len(lines) == 1, self.stdout
        value: dict[str, Any] = json.loads(lines[0])
        return value

    def ok(self) -> dict[str, Any]:
        return self.summary

    def assert_error(self, code: int, subcommand: str) -> None:
        """Failed with `code`, nothing on stdout, and one error line on stderr prefixed with the subcommand."""
        assert self.returncode == code, f"expected exit {code}, got {self.returncode}: {self.stderr}"
        assert self.stdout == ""
        errors = [line for line in self.stderr.splitlines() if ": warning: " not in line]
        assert len(errors) == 1, self.stderr
        assert errors[0].startswith(f"{subcommand}: "), self.stderr


def run(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 60) -> Result:
    """Run the host script for real."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def home(tmp_path: Path) -> BitbucketHome:
    return build_home(tmp_path, range(1, 6), big_blob_repo=4)


def wait_for(predicate: Any, timeout: float = 20, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting for a condition")
