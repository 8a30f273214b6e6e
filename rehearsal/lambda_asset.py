"""What the rehearsal's Lambda workers run: the functions' asset as `cdk synth` bundles it (stacks/asset.py's
`bundle`, the stack's local bundling), with its dependencies installed for this machine's Python instead of the
runtime's, and beside it only what the Lambda Python runtime itself provides (boto3 and what boto3 needs).

A dependency missing from functions/requirements.txt, or a module the asset leaves out, fails the rehearsal's
invocations as it would fail in Lambda (Runtime.ImportModuleError), not only after `cdk deploy`."""

from __future__ import annotations

import compileall
import fcntl
import importlib.metadata
import shutil
import sys
from pathlib import Path

from stacks.asset import ROOT, asset_hash, bundle

LOCAL_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"
BUILD = ROOT / ".build"
# What the Lambda Python runtime provides besides the standard library: boto3 and its dependencies.
RUNTIME_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")


def built_asset(cache_root: Path = BUILD, python_version: str = LOCAL_PYTHON) -> Path:
    """The bundled asset for the functions' current sources (built once per sources, requirements and Python version,
    shared by the test workers: one builds while the others wait). This machine's Python by default (the workers'),
    or another version (the runtime's, as synth bundles it for deployment: rehearsal/bench_cold.py)."""
    target = cache_root / "rehearsal-assets" / f"asset.{asset_hash(True, python_version)}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)
            bundle(target, with_dependencies=True, python_version=python_version)
            (target / ".complete").touch()
    return target


def runtime_site(cache_root: Path = BUILD) -> Path:
    """A directory with only the runtime's boto3 (links into this environment's site-packages, at the pinned
    versions): a worker's path has it, the asset and the standard library, nothing else. Compiled, as the runtime
    ships it: pip installs with --no-compile here, and the workers (-B) would otherwise compile botocore at every
    cold start (0.24 s against 0.1 s for `import boto3`, `python -m rehearsal.bench_cold`)."""
    version = importlib.metadata.version("boto3")
    target = cache_root / f"lambda-python-runtime-boto3-{version}-py{LOCAL_PYTHON}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_root / ".runtime-site.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        target.mkdir(parents=True, exist_ok=True)
        for name in RUNTIME_DISTRIBUTIONS:
            dist = importlib.metadata.distribution(name)
            tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith(("..", "/"))}
            for top in sorted(tops):
                if top.endswith((".dist-info", ".egg-info")) or top in ("__pycache__", "bin"):
                    continue
                source = Path(str(dist.locate_file(top)))
                link = target / top
                if source.exists() and not link.exists():
                    link.symlink_to(source)
                if source.is_dir():
                    compileall.compile_dir(source, quiet=2)
                elif source.suffix == ".py":
                    compileall.compile_file(source, quiet=2)
        (target / ".complete").touch()
    return target
