"""Lambda asset bundled on this machine, without Docker: the sources of `functions/`, and (unless bundling is
"none") the dependencies of functions/requirements.txt pip-installed for the Lambda platform and cached in
.build/ keyed by the requirements' hash, so that only the first synth after a change asks PyPI."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
REQUIREMENTS = FUNCTIONS / "requirements.txt"
PYTHON_VERSION = "3.13"
PLATFORM = "manylinux2014_x86_64"


def _sources() -> list[Path]:
    return sorted(p for p in FUNCTIONS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def asset_hash(with_dependencies: bool) -> str:
    digest = hashlib.sha256(f"deps={with_dependencies}".encode())
    for path in _sources():
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def install_dependencies(cache_root: Path = ROOT / ".build") -> Path:
    requirements = REQUIREMENTS.read_bytes()
    target = cache_root / f"lambda-deps-{hashlib.sha256(requirements).hexdigest()[:16]}"
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
                PYTHON_VERSION,
                "--implementation",
                "cp",
                "--only-binary=:all:",
            ],
            check=True,
        )
        (target / ".complete").touch()
    return target


def bundle(output_dir: Path, with_dependencies: bool) -> None:
    if with_dependencies:
        shutil.copytree(
            install_dependencies(),
            output_dir,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".complete", "__pycache__"),
        )
    shutil.copytree(
        FUNCTIONS, output_dir / "functions", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )


@jsii.implements(ILocalBundling)
class _LocalBundling:
    def __init__(self, with_dependencies: bool) -> None:
        self.with_dependencies = with_dependencies

    def try_bundle(self, output_dir: str, *_args: Any, **_options: Any) -> bool:
        bundle(Path(output_dir), self.with_dependencies)
        return True


def lambda_code(with_dependencies: bool) -> lambda_.Code:
    return lambda_.Code.from_asset(
        str(FUNCTIONS),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=asset_hash(with_dependencies),
        bundling=BundlingOptions(
            # Only used if local bundling declined, which it never does; kept because CDK requires an image.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.13"),
            local=_LocalBundling(with_dependencies),
        ),
    )
