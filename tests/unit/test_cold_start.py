"""What a cold start does before the first invocation (functions/handlers/__init__.py, functions.steps): in Lambda the
collector is paused while a handler module imports and resumed, with the import's objects frozen, by the first
invocation; requests is imported only by the steps that call Bitbucket, at their warm-up. Each case runs in a fresh
interpreter, as a cold start does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import gc, json, sys
from functions.handlers import {module} as handlers
imported = {{"collecting": gc.isenabled(), "requests": "requests" in sys.modules}}
answer = getattr(handlers, {step!r})({{"warm": True}}, None)
print(json.dumps({{
    "imported": imported,
    "warm": answer["warm"],
    "collecting": gc.isenabled(),
    "frozen": gc.get_freeze_count(),
    "requests": "requests" in sys.modules,
}}))
"""

pytestmark = pytest.mark.slow  # a fresh interpreter per case


def _cold_start(module: str, step: str, lambda_name: str | None = "f") -> dict[str, Any]:
    env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "eu-west-1", "POWERTOOLS_METRICS_DISABLED": "true"}
    if lambda_name:
        env["AWS_LAMBDA_FUNCTION_NAME"] = lambda_name
    found = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module, step=step)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    result: dict[str, Any] = json.loads(found.stdout.strip().splitlines()[-1])
    return result


def test_in_lambda_the_collector_is_paused_while_the_handler_imports_and_resumed_by_the_first_invocation() -> None:
    started = _cold_start("backup", "copy_home")
    assert started["imported"]["collecting"] is False
    assert started["warm"] is True and started["collecting"] is True
    assert started["frozen"] > 10_000  # what the import built: out of every later collection


def test_outside_lambda_the_collector_is_left_alone() -> None:
    started = _cold_start("backup", "copy_home", lambda_name=None)
    assert started["imported"]["collecting"] is True and started["collecting"] is True
    assert started["frozen"] == 0


@pytest.mark.parametrize(
    ("module", "step", "calls_bitbucket"),
    [
        ("backup", "lock", True),
        ("backup", "wait_drained", True),
        ("backup", "unlock", True),
        ("backup", "copy_home", False),
        ("backup", "wait_snapshots", False),
        ("drill", "check", False),
        ("restore", "restore_home", False),
    ],
)
def test_requests_is_imported_at_the_warm_up_of_a_step_that_calls_bitbucket_and_only_there(
    module: str, step: str, calls_bitbucket: bool
) -> None:
    started = _cold_start(module, step)
    assert started["imported"]["requests"] is False
    assert started["requests"] is calls_bitbucket
