"""Synthesizing takes seconds (the jsii runtime starts node); the rehearsal and the tests reuse a template
while nothing that shapes it has changed: the config, the stack code, the config models, the host script. (Handler
code runs in-process from the working tree, so it is not part of the key; only the unused asset hash goes stale.)"""

from __future__ import annotations

import hashlib
import json
import os
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
    path = CACHE / f"{_key(config_key)}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    template = synthesize()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(template))
    tmp.replace(path)  # atomic, so parallel test workers never read half a file
    return template
