"""boto3 clients, created once per process. Creation is guarded because parallel branches of the rehearsal
call handlers from several threads, and boto3's default session is not thread-safe while creating clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import boto3
from botocore.config import Config

_clients: dict[tuple[str, str | None], Any] = {}
_lock = threading.Lock()
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})
# Set by `clients_from` (the operator command line): this thread's code gets its clients from there instead.
_factory: ContextVar[Callable[[str, str | None], Any] | None] = ContextVar("aws_client_factory", default=None)


def client(service: str, region: str | None = None) -> Any:
    factory = _factory.get()
    if factory is not None:
        return factory(service, region)
    key = (service, region)
    with _lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(service, region_name=region, config=_CONFIG)
        return _clients[key]


_assumed: dict[tuple[str, str, str], tuple[float, Any]] = {}
ASSUMED_SESSION_SECONDS = 3600


def target_client(service: str, target: Any) -> Any:
    """A client in a copy target's region, as its role in its account when it names one (`target` is a
    CopyTarget). Assumed clients are cached until shortly before their credentials expire."""
    if not getattr(target, "role_arn", None):
        return client(service, target.region)
    key = (target.role_arn, service, target.region)
    with _lock:
        cached = _assumed.get(key)
    if cached and cached[0] - time.time() > 300:
        return cached[1]
    credentials = client("sts").assume_role(
        RoleArn=target.role_arn, RoleSessionName="bitbucket-diy-backup", DurationSeconds=ASSUMED_SESSION_SECONDS
    )["Credentials"]
    session = boto3.session.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    made = session.client(service, region_name=target.region, config=_CONFIG)
    with _lock:
        _assumed[key] = (credentials["Expiration"].timestamp(), made)
    return made


def forget_assumed() -> None:
    """Drops the cached clients of assumed roles (a new process does: the rehearsal, per emulated world)."""
    with _lock:
        _assumed.clear()


@contextmanager
def clients_from(factory: Callable[[str, str | None], Any]) -> Iterator[None]:
    """Within this block, and in this thread only, `client()` returns `factory(service, region)`: the command line
    reuses the catalog code with its own session (profile, region, endpoint) without touching the Lambdas' cache."""
    token = _factory.set(factory)
    try:
        yield
    finally:
        _factory.reset(token)


def error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(error).__name__))
