"""boto3 clients, created once per process. Creation is guarded because parallel branches of the rehearsal
call handlers from several threads, and boto3's default session is not thread-safe while creating clients."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

_clients: dict[tuple[str, str | None], Any] = {}
_lock = threading.Lock()
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})


def client(service: str, region: str | None = None) -> Any:
    key = (service, region)
    with _lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(service, region_name=region, config=_CONFIG)
        return _clients[key]


def error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(error).__name__))
