"""The rehearsal's Lambda runtime behaves as Lambda does: a function runs in its own process from the bundled asset
with only the runtime's boto3 beside it, starts cold once and stays warm, calls AWS over HTTP as its own role, is
stopped at its timeout, and fails to start when its asset lacks a dependency."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from functions.handlers._step import WARM_EVENT
from functions.models.steps import BACKUP
from rehearsal.fake_account import ACCOUNT, REGION
from tests.integration.conftest import World

PROBE = """
import importlib.util, os, sys, time

import boto3  # in the init phase, which has its own limit, not the function's timeout

def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    caller = boto3.client("sts").get_caller_identity()["Arn"]
    return {
        "path": sys.path,
        "found": {m: importlib.util.find_spec(m) is not None for m in ("boto3", "moto", "pytest", "rehearsal")},
        "endpoint": os.environ.get("AWS_ENDPOINT_URL", ""),
        "caller": caller,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
"""


@pytest.fixture
def world(world: World) -> World:
    if world.r.runtime.inline:
        pytest.skip("a property of the Lambda workers (REHEARSAL_LAMBDA=inline runs the handlers in-process)")
    return world


def _role_of(w: World, handler: str) -> str:
    from moto.awslambda_simple.models import lambda_simple_backends

    functions = lambda_simple_backends[ACCOUNT][REGION]
    return next(str(f.role) for f in functions.list_functions() if f.handler == handler)


def _deploy(w: World, name: str, handler: str, role: str, timeout: int = 30) -> None:
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("README", "the rehearsal runs its asset directory")
    w.r.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=role,
        Handler=handler,
        Code={"ZipFile": code.getvalue()},
        Timeout=timeout,
    )


@contextmanager
def running_from(w: World, asset: Path) -> Iterator[None]:
    """This world's functions run from another asset directory for the block (its workers start anew)."""
    previous, w.r.runtime.asset = w.r.runtime.asset, asset
    try:
        yield
    finally:
        w.r.runtime.asset = previous


def _invoke(w: World, name: str, event: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    answer = w.r.client("lambda").invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return json.loads(answer["Payload"].read()), "FunctionError" in answer


def test_a_function_runs_its_asset_as_its_role_cold_once_then_warm(world: World, tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    role = _role_of(world, BACKUP.lock.handler)
    _deploy(world, "Probe", "probe.handler", role)
    with running_from(world, tmp_path):
        first, failed = _invoke(world, "Probe", {})
        assert not failed, first
        again, failed = _invoke(world, "Probe", {})
        assert not failed and again["path"] == first["path"]
    # Its path: the asset, the runtime's boto3, the standard library; nothing of the rehearsal's environment.
    assert first["path"][0] == str(tmp_path) and "lambda-python-runtime-boto3" in first["path"][1]
    assert not any("site-packages" in p for p in first["path"]), first["path"]
    assert first["found"] == {"boto3": True, "moto": False, "pytest": False, "rehearsal": False}
    # AWS over HTTP on loopback, signed with the function's own role's credentials.
    assert first["endpoint"].startswith("http://127.0.0.1:")
    assert first["caller"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/{role.rsplit('/', 1)[-1]}/")
    assert 0 < first["remaining_ms"] <= 30_000
    probes = [i for i in world.r.runtime.invocations if i.function == "Probe"]
    assert [i.cold for i in probes] == [True, False] and probes[0].init_s > 0
    # Lambda's task root is read-only: the worker ran the asset without writing bytecode into it.
    assert not list(tmp_path.rglob("__pycache__"))


def test_a_function_that_overruns_its_timeout_is_stopped(world: World, tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    _deploy(world, "Slow", "probe.handler", _role_of(world, BACKUP.lock.handler), timeout=2)
    with running_from(world, tmp_path):
        started = time.monotonic()
        answer, failed = _invoke(world, "Slow", {"sleep": 30})
        took = time.monotonic() - started
        again, _ = _invoke(world, "Slow", {})
    # Reported as Step Functions reports a Lambda timeout; the environment is gone, so the next call starts cold.
    assert failed and answer == {"errorType": "Lambda.Unknown", "errorMessage": "Task timed out after 2.00 seconds"}
    assert took < 10, took
    assert "caller" in again
    assert [i.cold for i in world.r.runtime.invocations if i.function == "Slow"] == [True, True]


@pytest.mark.parametrize(
    ("missing", "error_type"),
    [
        # Every handler imports pydantic at its cold start: the function cannot start.
        ("pydantic", "Runtime.ImportModuleError"),
        # A step that calls Bitbucket imports requests at its warm-up (functions.steps.ready_bitbucket), before the
        # lock: the warm-up fails, and so would the step itself.
        ("requests", "ModuleNotFoundError"),
    ],
)
def test_an_asset_without_a_dependency_fails_to_start(
    world: World, tmp_path: Path, missing: str, error_type: str
) -> None:
    assert world.r.runtime.asset is not None
    broken = tmp_path / "asset"
    shutil.copytree(world.r.runtime.asset, broken, ignore=shutil.ignore_patterns(missing, "__pycache__"))
    function = next(n for n in world.r.resolver.refs if re.fullmatch(r"Validate[0-9A-F]{8}", n))
    with running_from(world, broken):
        answer, failed = _invoke(world, function, WARM_EVENT)
    assert failed and answer["errorType"] == error_type, answer
    assert missing in answer["errorMessage"]
    # The same function from the asset as built starts.
    answer, failed = _invoke(world, function, WARM_EVENT)
    assert not failed and answer["warm"] is True
