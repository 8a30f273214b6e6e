"""Synthesizing takes seconds (the jsii runtime starts node); the rehearsal and the tests reuse a synthesis while
nothing that shapes it has changed: the config, the CDK libraries, and the project files the stack imports (found
by following `stacks/`'s imports, so a handler's code is not part of the key: its asset hash is the one thing that
goes stale, and nothing reads it) plus the host script the install document carries."""

from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".build" / "templates"
PROJECT_PACKAGES = ("functions", "stacks")
LIBRARIES = ("aws-cdk-lib", "cdk-nag", "constructs", "jsii")


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path) -> Iterable[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def stack_sources() -> list[Path]:
    """Every project file `stacks/` imports, directly or through others (packages' __init__ included)."""
    seen: set[Path] = set()
    pending = sorted((ROOT / "stacks").rglob("*.py"))
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path):
            parts = name.split(".")
            if parts[0] not in PROJECT_PACKAGES:
                continue
            found = (_module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1))
            pending.extend(f for f in found if f is not None)
    return sorted(seen)


_digest_lock = threading.Lock()


def _code_digest() -> str:
    # One thread computes it: CPython 3.11's ast.parse is not safe in concurrent threads ("AST constructor recursion
    # depth mismatch", seen when the test workers' first template requests came from several threads at once).
    with _digest_lock:
        return _computed_digest()


@lru_cache(maxsize=1)
def _computed_digest() -> str:
    digest = hashlib.sha256()
    for library in LIBRARIES:
        digest.update(f"{library}=={metadata.version(library)}".encode())
    for path in [*stack_sources(), *sorted((ROOT / "functions" / "host").glob("*.sh"))]:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _key(config_key: str) -> str:
    return hashlib.sha256(f"{_code_digest()}|{config_key}".encode()).hexdigest()[:32]


def cached_template(config_key: str, synthesize: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """What `synthesize` returns for this key (a template, or any JSON record of a synthesis), made once."""
    if os.environ.get("REHEARSAL_NO_CACHE"):
        return synthesize()
    key = _key(config_key)
    path = CACHE / f"{key}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    CACHE.mkdir(parents=True, exist_ok=True)
    # Test workers start on the same templates at once: one synthesizes, the others wait for its result.
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return dict(json.loads(path.read_text()))
        template = synthesize()
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(template))
        tmp.replace(path)  # atomic, so a reader without the lock never reads half a file
    return template
