"""The pinned npm CDK CLI reads this library's cloud assembly offline; local bundling builds a Linux asset."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from stacks.app_builder import CONTEXT_KEY, STACK_NAME

ROOT = Path(__file__).resolve().parents[2]
CDK = ROOT / "node_modules" / ".bin" / "cdk"


@pytest.mark.slow
@pytest.mark.skipif(not CDK.exists(), reason="the CDK CLI is installed by `make cdk-cli` (make test does it)")
def test_pinned_cdk_cli_synthesizes_the_example_config_offline(tmp_path: Path) -> None:
    """`cdk synth` as a newcomer runs it on cdk.json's example, without AWS credentials or a region."""
    config = json.loads((ROOT / "cdk.json").read_text())["context"][CONTEXT_KEY]
    config["bundling"] = "none"  # no pip at synth time
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_DEFAULT_"))}
    env |= {"CDK_DISABLE_CLI_TELEMETRY": "true", "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    proc = subprocess.run(
        [
            str(CDK),
            "synth",
            "--quiet",
            "--no-notices",
            "-o",
            str(tmp_path / "out"),
            "-c",
            f"{CONTEXT_KEY}={json.dumps(config)}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    out = tmp_path / "out"
    template = json.loads((out / f"{STACK_NAME}.template.json").read_text())
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::StepFunctions::StateMachine", "AWS::Scheduler::Schedule", "AWS::SNS::Topic"} <= kinds
    # One trusted configuration per instance of the example.
    parameters = [r for r in template["Resources"].values() if r["Type"] == "AWS::SSM::Parameter"]
    names = sorted(i["name"] for i in config["instances"])
    assert sorted(json.loads(p["Properties"]["Value"])["name"] for p in parameters) == names
    # Without credentials the account is unknown (the CLI still picks a default region), and cdk-nag (on in app.py)
    # passes.
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"][STACK_NAME]["environment"].startswith("aws://unknown-account/")
    report = json.loads((out / "validation-report.json").read_text())
    assert not [v for plugin in report.get("pluginReports", []) for v in plugin.get("violations", [])]


@pytest.mark.slow
def test_local_bundling_installs_linux_python313_wheels(tmp_path: Path) -> None:
    from stacks.asset import bundle

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


def test_the_lambda_asset_holds_the_functions_and_not_the_command_line(tmp_path: Path) -> None:
    """The operator command line is its own package: a change to it redeploys no function."""
    from stacks.asset import bundle

    bundle(tmp_path, with_dependencies=False)
    modules = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.py")}
    assert "functions/handlers/backup.py" in modules
    assert not [m for m in modules if m.startswith("bitbucket_backup_cli/") or m.endswith("/cli.py")]
    # Nor does any function import it (it would fail to start).
    assert not [m for m in modules if "bitbucket_backup_cli" in (tmp_path / m).read_text()]
