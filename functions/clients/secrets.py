"""Bitbucket credentials from Secrets Manager, cached for SECRET_CACHE_SECONDS (default 300)."""

from __future__ import annotations

import json
import os
import threading
import time

from botocore.exceptions import ClientError

from functions.clients.aws import client, error_code
from functions.clients.bitbucket import Credentials
from functions.errors import PreflightFailed

_cache: dict[str, tuple[float, Credentials]] = {}
_lock = threading.Lock()


def credentials(secret_id: str, *, fresh: bool = False) -> Credentials:
    """The secret's credentials, cached; `fresh` reads Secrets Manager again (after a 401: it was rotated)."""
    ttl = float(os.environ.get("SECRET_CACHE_SECONDS", "300"))
    now = time.monotonic()
    with _lock:
        cached = _cache.get(secret_id)
        if cached and now - cached[0] < ttl and not fresh:
            return cached[1]
    try:
        raw = client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    except ClientError as error:
        raise PreflightFailed(f"secret {secret_id} cannot be read ({error_code(error)})") from None
    except KeyError:
        raise PreflightFailed(f"secret {secret_id} has no SecretString") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise PreflightFailed(f"secret {secret_id} is not JSON with username and password") from None
    if not isinstance(data, dict):
        raise PreflightFailed(f"secret {secret_id} is not a JSON object")
    token, username, password = data.get("token"), data.get("username"), data.get("password")
    if not (isinstance(token, str) and token) and not (
        isinstance(username, str) and username and isinstance(password, str) and password
    ):
        raise PreflightFailed(f"secret {secret_id} needs 'username' and 'password' (or 'token')")
    found = Credentials(username=username, password=password, token=token if isinstance(token, str) else None)
    with _lock:
        _cache[secret_id] = (now, found)
    return found
