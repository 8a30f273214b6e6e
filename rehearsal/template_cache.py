"""Synthesizing takes seconds (the jsii runtime starts node); the rehearsal and the tests reuse a template
while nothing that shapes it has changed: the config, the stack code, the config models, the host script. (Handler
code runs in-process from the working tree, so it is not part of the key; only the unused asset hash goes stale.)"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".build" / "templates"


def _key(config_key: str) -> str:
    digest = hashlib.sha256(config_key.encode())
    # The host script is part of the template too: the stack's install document carries it.
    for folder, pattern in (("stacks", "*.py"), ("functions/models", "*.py"), ("functions/host", "*.sh")):
        for path in sorted((ROOT / folder).rglob(pattern)):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def cached_template(config_key: str, synthesize: Callable[[], dict[str, Any]]) -> dict[str, Any]:
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
