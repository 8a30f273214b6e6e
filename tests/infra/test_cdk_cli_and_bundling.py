"""The pinned npm CDK CLI reads this library's cloud assembly offline; local bundling builds a Linux asset."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
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
    from stacks.asset import bundle, bytecode_python

    bundle(tmp_path, with_dependencies=True)
    assert (tmp_path / "functions" / "handlers" / "backup.py").exists()
    assert (tmp_path / "aws_lambda_powertools").is_dir() and (tmp_path / "requests").is_dir()
    cores = list((tmp_path / "pydantic_core").glob("_pydantic_core.cpython-313-x86_64-linux-gnu.so"))
    assert cores, sorted(p.name for p in (tmp_path / "pydantic_core").iterdir())
    # Bytecode only of the runtime's version (pip's own, of this machine's Python, is left behind), and of every
    # module when this machine has a Python 3.13 to compile it with.
    assert {p.name.split(".")[1] for p in tmp_path.rglob("*.pyc")} <= {"cpython-313"}
    if bytecode_python("3.13"):
        assert (tmp_path / "pydantic" / "__pycache__" / "main.cpython-313.pyc").exists()
        assert (tmp_path / "functions" / "handlers" / "__pycache__" / "backup.cpython-313.pyc").exists()
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


def _pyc_flags(pyc: Path) -> int:
    # PEP 552: after the magic number, bit 0 says hash-based and bit 1 says checked against the source.
    flags: int = struct.unpack("<I", pyc.read_bytes()[4:8])[0]
    return flags


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.13", f"{sys.version_info[0]}.{sys.version_info[1]}"])
def test_the_asset_ships_each_module_compiled_for_the_runtime_and_checked_against_its_source(
    tmp_path: Path, version: str
) -> None:
    """Lambda's /var/task is read-only: a module without bytecode there is compiled again at every cold start."""
    from stacks.asset import bundle, bytecode_python

    if bytecode_python(version) is None:
        pytest.skip(f"no Python {version} on this machine (the asset then ships its sources only, with a warning)")
    bundle(tmp_path, with_dependencies=False, python_version=version)
    tag = "cpython-" + version.replace(".", "")
    sources = sorted(tmp_path.rglob("*.py"))
    assert sources
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        assert pyc.exists(), source.relative_to(tmp_path)
        assert _pyc_flags(pyc) == 0b11, pyc
    assert {p.name.split(".")[1] for p in tmp_path.rglob("*.pyc")} == {tag}


@pytest.mark.slow
def test_without_an_interpreter_of_the_runtimes_version_the_asset_ships_sources_and_says_so(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stacks.asset import compile_bytecode

    (tmp_path / "module.py").write_text("X = 1\n")
    monkeypatch.setenv("LAMBDA_BYTECODE_PYTHON", str(tmp_path / "no-such-python"))  # named, but not there
    assert compile_bytecode(tmp_path, "3.99") is False
    assert not list(tmp_path.rglob("*.pyc"))
    assert "no Python 3.99 on this machine" in capfd.readouterr().err


@pytest.mark.slow
def test_a_file_that_does_not_compile_is_left_as_it_is_and_said(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from stacks.asset import compile_bytecode

    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    (tmp_path / "module.py").write_text("X = 1\n")
    (tmp_path / "example.py").write_text("print 'a file for Python 2'\n")
    assert compile_bytecode(tmp_path, version) is True
    assert [p.name.split(".")[0] for p in tmp_path.rglob("*.pyc")] == ["module"]
    assert "1 file(s) of the Lambda asset did not compile" in capfd.readouterr().err
