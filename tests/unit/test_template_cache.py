"""The template cache (rehearsal/template_cache.py): workers asking for the same missing template at once get one
synthesis between them, and every one of them the same template."""

from __future__ import annotations

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
