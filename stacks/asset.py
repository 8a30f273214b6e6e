"""The functions' Lambda asset, built on this machine without Docker: the sources of `functions/` and (unless
bundling is "none") the dependencies of functions/requirements.txt pip-installed for the Lambda platform and cached
in .build/ keyed by the requirements' hash, so that only the first build after a change asks PyPI; then compiled to
the runtime's bytecode. Plain Python (no CDK): `cdk synth` bundles it through stacks/bundling.py, and the
rehearsal's Lambda workers run it (rehearsal/lambda_asset.py).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
REQUIREMENTS = FUNCTIONS / "requirements.txt"
PYTHON_VERSION = "3.13"
PLATFORM = "manylinux2014_x86_64"


# Lambda's /var/task is read-only, so a module without bytecode in the asset is compiled again at every cold start
# (measured: 1.4 s against 0.8 s for the backup handler, `python -m rehearsal.bench_cold`). Hash-based bytecode,
# checked against its source: the zip's timestamps are not the build's, and a stale file is never run.
INVALIDATION_MODE = "checked-hash"


def _sources() -> list[Path]:
    return sorted(p for p in FUNCTIONS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def asset_hash(with_dependencies: bool, python_version: str = PYTHON_VERSION) -> str:
    # The deployed asset's hash is unchanged by the version; one built for another Python is another asset.
    other = "" if python_version == PYTHON_VERSION else f"|python={python_version}"
    # With or without bytecode is another asset: a machine that gains the interpreter redeploys the functions.
    bytecode = INVALIDATION_MODE if bytecode_python(python_version) else "none"
    digest = hashlib.sha256(f"deps={with_dependencies}{other}|bytecode={bytecode}".encode())
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


@functools.cache
def bytecode_python(python_version: str = PYTHON_VERSION) -> str | None:
    """An interpreter of `python_version` to compile the asset with: this one, $LAMBDA_BYTECODE_PYTHON,
    python3.X on the PATH or one of pyenv's; None when the machine has none."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == python_version:
        return sys.executable
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates = [os.environ.get("LAMBDA_BYTECODE_PYTHON") or "", shutil.which(f"python{python_version}") or ""]
    candidates += [str(p) for p in sorted(pyenv.glob(f"versions/{python_version}.*/bin/python{python_version}"))[::-1]]
    for candidate in filter(None, candidates):
        # A pyenv shim is on the PATH even when its version is not selected; ask the interpreter itself.
        try:
            found = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError:  # $LAMBDA_BYTECODE_PYTHON names no program
            continue
        if found.returncode == 0 and found.stdout.strip() == python_version:
            return candidate
    return None


def compile_bytecode(output_dir: Path, python_version: str = PYTHON_VERSION) -> bool:
    """Compile every module of the asset for the runtime's Python; False (and a warning) when no interpreter of
    that version is on this machine: the asset then works, with slower cold starts."""
    python = bytecode_python(python_version)
    if python is None:
        print(
            f"warning: no Python {python_version} on this machine to compile the Lambda asset's bytecode; each cold "
            f"start will compile it (set LAMBDA_BYTECODE_PYTHON to a python{python_version})",
            file=sys.stderr,
        )
        return False
    compiled = subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", INVALIDATION_MODE, str(output_dir)],
        check=False,
        capture_output=True,
        text=True,
    )
    if compiled.returncode != 0:
        # A file a package ships but never imports (an example, a test for another Python) may not compile: the
        # asset still works, and a module that fails here would fail the same way when imported.
        failed = [line for line in compiled.stdout.splitlines() if line.startswith("*** Error compiling")]
        print(f"warning: {len(failed)} file(s) of the Lambda asset did not compile: {failed[:3]}", file=sys.stderr)
    return True


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
    compile_bytecode(output_dir, python_version)
