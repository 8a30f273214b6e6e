"""The pinned npm CDK CLI reads this library's cloud assembly offline; local bundling builds a Linux asset."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CDK = ROOT / "node_modules" / ".bin" / "cdk"


@pytest.mark.slow
@pytest.mark.skipif(not CDK.exists(), reason="the CDK CLI is installed by `make cdk-cli` (make test does it)")
def test_pinned_cdk_cli_synthesizes_offline(tmp_path: Path) -> None:
    config = json.loads((ROOT / "cdk.json").read_text())["context"]["bitbucket-backup"]
    config["bundling"] = "none"
    env = {
        **os.environ,
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
    }
    proc = subprocess.run(
        [
            str(CDK),
            "synth",
            "--quiet",
            "--no-notices",
            "-o",
            str(tmp_path / "out"),
            "-c",
            f"bitbucket-backup={json.dumps(config)}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    template = json.loads((tmp_path / "out" / "BitbucketDiyBackup.template.json").read_text())
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::StepFunctions::StateMachine", "AWS::Scheduler::Schedule", "AWS::SNS::Topic"} <= kinds


@pytest.mark.slow
def test_local_bundling_installs_linux_python313_wheels(tmp_path: Path) -> None:
    from stacks.bundling import bundle

    bundle(tmp_path, with_dependencies=True)
    assert (tmp_path / "functions" / "handlers" / "backup.py").exists()
    assert (tmp_path / "aws_lambda_powertools").is_dir() and (tmp_path / "requests").is_dir()
    cores = list((tmp_path / "pydantic_core").glob("_pydantic_core.cpython-313-x86_64-linux-gnu.so"))
    assert cores, sorted(p.name for p in (tmp_path / "pydantic_core").iterdir())
    assert not list(tmp_path.rglob("__pycache__"))
    # The asset is what Lambda unzips: the handler module path must resolve from its root.
    archive = tmp_path.parent / "asset.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(tmp_path / "functions" / "handlers" / "backup.py", "functions/handlers/backup.py")
    assert "functions/handlers/backup.py" in zipfile.ZipFile(archive).namelist()
