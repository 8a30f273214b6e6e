"""The functions' Lambda asset, built on this machine without Docker: the sources of `functions/` and (unless
bundling is "none") the dependencies of functions/requirements.txt pip-installed for the Lambda platform and cached
in .build/ keyed by the requirements' hash, so that only the first build after a change asks PyPI. Plain Python (no
CDK): `cdk synth` bundles it through stacks/bundling.py, and the rehearsal's Lambda workers run it
(rehearsal/lambda_asset.py).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
REQUIREMENTS = FUNCTIONS / "requirements.txt"
PYTHON_VERSION = "3.13"
PLATFORM = "manylinux2014_x86_64"


def _sources() -> list[Path]:
    return sorted(p for p in FUNCTIONS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def asset_hash(with_dependencies: bool, python_version: str = PYTHON_VERSION) -> str:
    # The deployed asset's hash is unchanged by the version; one built for another Python is another asset.
    other = "" if python_version == PYTHON_VERSION else f"|python={python_version}"
    digest = hashlib.sha256(f"deps={with_dependencies}{other}".encode())
    for path in _sources():
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def install_dependencies(cache_root: Path = ROOT / ".build", python_version: str = PYTHON_VERSION) -> Path:
    """The dependencies pip-installed for the Lambda platform and this Python version (the runtime's, or this
    machine's for the rehearsal's workers), cached by the requirements' hash."""
    requirements = REQUIREMENTS.read_bytes()
    other = "" if python_version == PYTHON_VERSION else f"-py{python_version}"
    target = cache_root / f"lambda-deps-{hashlib.sha256(requirements).hexdigest()[:16]}{other}"
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
                "-t",
                str(target),
                "--platform",
                PLATFORM,
                "--python-version",
                python_version,
                "--implementation",
                "cp",
                "--only-binary=:all:",
            ],
            check=True,
        )
        (target / ".complete").touch()
    return target


def bundle(output_dir: Path, with_dependencies: bool, python_version: str = PYTHON_VERSION) -> None:
    """The asset: what `cdk synth` bundles (local bundling below), and what the rehearsal's Lambda workers run."""
    if with_dependencies:
        shutil.copytree(
            install_dependencies(python_version=python_version),
            output_dir,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".complete", "__pycache__"),
        )
    shutil.copytree(
        FUNCTIONS, output_dir / "functions", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
