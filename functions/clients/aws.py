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
import botocore.session
from botocore.config import Config
from botocore.loaders import Loader, create_loader

_clients: dict[tuple[str, str | None], Any] = {}
_lock = threading.Lock()
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})
# Set by `clients_from` (the rehearsal's in-process workers, each as its role; the unit tests, over moto): this
# context's code gets its clients from there instead of the process's cache.
_factory: ContextVar[Callable[[str, str | None], Any] | None] = ContextVar("aws_client_factory", default=None)


_loader: Loader | None = None


def _session(**credentials: str) -> boto3.session.Session:
    """A new session (credentials and region as the environment says now) sharing one loader: each service model
    and the endpoint rules are read from disk once per process, not once per client."""
    global _loader
    core = botocore.session.get_session()
    if _loader is None:
        _loader = create_loader(core.get_config_variable("data_path"))
    core.register_component("data_loader", _loader)
    session = boto3.session.Session(botocore_session=core, **credentials)
    _loader.search_paths[:] = list(dict.fromkeys(_loader.search_paths))  # boto3 appends its own path each time
    return session


def new_client(service: str, region: str | None = None) -> Any:
    """A client of its own (not the process's cache), configured as the functions' are: for a `clients_from`
    factory that keeps its own."""
    with _lock:
        return _session().client(service, region_name=region, config=_CONFIG)


def client(service: str, region: str | None = None) -> Any:
    factory = _factory.get()
    if factory is not None:
        return factory(service, region)
    key = (service, region)
    with _lock:
        if key not in _clients:
            _clients[key] = _session().client(service, region_name=region, config=_CONFIG)
        return _clients[key]


def credentials_client(
    service: str, region: str | None, *, access_key_id: str, secret_access_key: str, session_token: str
) -> Any:
    """A client signing with these credentials (an assumed role's)."""
    with _lock:
        session = _session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, aws_session_token=session_token
        )
        return session.client(service, region_name=region, config=_CONFIG)


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
    made = credentials_client(
        service,
        target.region,
        access_key_id=credentials["AccessKeyId"],
        secret_access_key=credentials["SecretAccessKey"],
        session_token=credentials["SessionToken"],
    )
    with _lock:
        _assumed[key] = (credentials["Expiration"].timestamp(), made)
    return made


def forget_assumed() -> None:
    """Drops the cached clients of assumed roles (a new process does: the rehearsal, per emulated world)."""
    with _lock:
        _assumed.clear()


@contextmanager
def clients_from(factory: Callable[[str, str | None], Any]) -> Iterator[None]:
    """Within this block, and in this context only, `client()` returns `factory(service, region)`: the caller
    passes the clients in (a role's, or the tests' over moto) without touching the process's cache."""
    token = _factory.set(factory)
    try:
        yield
    finally:
        _factory.reset(token)


def error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(error).__name__))


def signing_credentials() -> Any:
    """The credentials this code's AWS clients sign with (the function's role, or the rehearsal's per-role clients):
    for a request botocore does not send itself, the search domain's HTTP API signed with SigV4. botocore keeps them
    on the client's signer only (a private attribute, read here in one place)."""
    credentials = client("sts")._request_signer._credentials
    if credentials is None:
        raise RuntimeError("no AWS credentials to sign the search domain's requests with")
    return credentials.get_frozen_credentials()
