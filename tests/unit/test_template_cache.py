"""The template cache (rehearsal/template_cache.py): workers asking for the same missing template at once get one
synthesis between them, and every one of them the same template."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from rehearsal import template_cache


def test_concurrent_misses_synthesize_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template_cache, "CACHE", tmp_path)
    monkeypatch.delenv("REHEARSAL_NO_CACHE", raising=False)
    calls: list[int] = []

    def synthesize() -> dict[str, Any]:
        calls.append(1)
        time.sleep(0.3)  # long enough for every other thread to miss the cache and queue on the lock
        return {"Resources": {"Made": len(calls)}}

    key = f"config-{uuid.uuid4()}"
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(target=lambda: results.append(template_cache.cached_template(key, synthesize)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == [{"Resources": {"Made": 1}}] * 4
    assert [p.name for p in tmp_path.glob("*.tmp")] == []


_digest_of_root = template_cache._computed_digest.__wrapped__


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_key_follows_what_the_stack_imports_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(
        tmp_path,
        {
            "stacks/__init__.py": "",
            "stacks/stack.py": "from functions.strategies import DEPLOYMENT_ENV\nimport functions.models.steps\n",
            "functions/__init__.py": "",
            "functions/strategies/__init__.py": "DEPLOYMENT_ENV = 'DEPLOYMENT_ID'\n",
            "functions/models/__init__.py": "",
            "functions/models/steps.py": "from functions.errors import StepError\n",
            "functions/errors.py": "class StepError(Exception): ...\n",
            "functions/handlers/backup.py": "def handler(event, context): ...\n",
            "functions/host/bitbucket-backup-host.sh": "#!/bin/bash\n",
        },
    )
    monkeypatch.setattr(template_cache, "ROOT", tmp_path)
    # The digest of this fake tree must not outlive the test: later worlds of this process would be keyed by it and
    # read whatever template an earlier run of this test left under that key (a stale state machine).
    monkeypatch.setattr(template_cache, "_computed_digest", functools.lru_cache(maxsize=1)(_digest_of_root))
    found = {str(p.relative_to(tmp_path)) for p in template_cache.stack_sources()}
    assert "functions/errors.py" in found and "functions/strategies/__init__.py" in found
    assert "functions/handlers/backup.py" not in found

    def key_after(name: str, text: str) -> str:
        (tmp_path / name).write_text(text)
        template_cache._computed_digest.cache_clear()
        return template_cache._key("config")

    before = key_after("functions/errors.py", "class StepError(Exception): ...\n")
    assert key_after("functions/handlers/backup.py", "def handler(event, context): return 1\n") == before
    assert key_after("functions/errors.py", "class StepError(RuntimeError): ...\n") != before
    assert key_after("functions/host/bitbucket-backup-host.sh", "#!/bin/bash\nset -e\n") != before
    assert template_cache._key("another config") != template_cache._key("config")
