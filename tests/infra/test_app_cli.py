"""app.py as the CDK CLI runs it: a subprocess, the context in CDK_CONTEXT_JSON (App reads it from there), the
assembly directory in CDK_OUTDIR. A good config synthesizes; a bad one exits 1 with one line per wrong field,
naming the instance and the field, and no traceback. Each run starts the jsii runtime: few runs, marked slow. (The
example config in cdk.json is synthesized by the pinned CDK CLI: tests/infra/test_cdk_cli_and_bundling.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks.app_builder import CONTEXT_KEY

ROOT = Path(__file__).resolve().parents[2]


def run_app(context: dict[str, Any], outdir: Path) -> subprocess.CompletedProcess[str]:
    """As `cdk synth` without AWS credentials runs it: no CDK_DEFAULT_ACCOUNT/REGION, an environment-agnostic stack
    (the in-process synthesis of conftest.py covers the environment-specific one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION")}
    env |= {
        "CDK_CONTEXT_JSON": json.dumps(context),
        "CDK_OUTDIR": str(outdir),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    return subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _instance(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "base_url": "https://bitbucket.example.com",
        "credentials_secret": f"bitbucket/{name}/backup-user",
        "home": {"strategy": "amazon-ebs", "instance_id": "i-0123456789abcdef0", "volumes": ["/dev/xvdf"]},
        "database": {"strategy": "amazon-rds", "instance_id": f"bitbucket-{name}"},
    }


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """One run for three broken instances: the validation reports every wrong field at once."""
    missing = _instance("no-url")
    del missing["base_url"]
    strategy = _instance("efs-home")
    strategy["home"] = {"strategy": "amazon-efs", "file_system_id": "fs-0123456789abcdef0"}
    schedule = _instance("bad-schedule")
    schedule["schedule"] = "every night at two"
    context = {CONTEXT_KEY: {"bundling": "none", "instances": [missing, strategy, schedule]}}
    return run_app(context, tmp_path_factory.mktemp("cdk-out-broken"))


def _line_about(result: subprocess.CompletedProcess[str], instance: str) -> str:
    lines = [line for line in result.stderr.splitlines() if f"instance '{instance}'" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.slow
def test_a_bad_config_exits_1_without_a_traceback(broken: subprocess.CompletedProcess[str]) -> None:
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "Traceback" not in broken.stderr + broken.stdout
    assert f"'{CONTEXT_KEY}' is invalid" in broken.stderr


@pytest.mark.slow
def test_a_missing_field_names_the_instance_and_the_field(broken: subprocess.CompletedProcess[str]) -> None:
    assert _line_about(broken, "no-url") == "instance 'no-url': base_url is required"


@pytest.mark.slow
def test_a_wrong_strategy_names_the_instance_the_field_and_the_choices(
    broken: subprocess.CompletedProcess[str],
) -> None:
    line = _line_about(broken, "efs-home")
    assert re.match(r"instance 'efs-home': home(\.strategy)? ", line), line
    assert "amazon-efs" in line and "amazon-ebs" in line


@pytest.mark.slow
def test_a_bad_schedule_names_the_instance_and_the_field(broken: subprocess.CompletedProcess[str]) -> None:
    line = _line_about(broken, "bad-schedule")
    assert line.startswith("instance 'bad-schedule': schedule ")
    assert "every night at two" in line
