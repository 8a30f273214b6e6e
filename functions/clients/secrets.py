"""Bitbucket credentials from Secrets Manager, cached for SECRET_CACHE_SECONDS (default 300) by Powertools'
parameters utility (its `max_age`; `force_fetch` after a 401, when the password was rotated)."""

from __future__ import annotations

import json
import threading

from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from aws_lambda_powertools.utilities.parameters.secrets import SecretsProvider

from functions.clients.aws import client, error_code
from functions.clients.bitbucket_answers import Credentials
from functions.errors import PreflightFailed
from functions.models import environment

_providers: dict[int, SecretsProvider] = {}
_lock = threading.Lock()


def _secrets() -> SecretsProvider:
    """One provider (and its cache) per Secrets Manager client: in Lambda, one per process; in the rehearsal, one per
    function, whose role's client it is."""
    secretsmanager = client("secretsmanager")
    with _lock:
        provider = _providers.get(id(secretsmanager))
        if provider is None or provider.client is not secretsmanager:
            provider = _providers[id(secretsmanager)] = SecretsProvider(boto3_client=secretsmanager)
        return provider


def credentials(secret_id: str, *, fresh: bool = False) -> Credentials:
    """The secret's credentials, cached; `fresh` reads Secrets Manager again (after a 401: it was rotated)."""
    max_age = environment.secret_cache_seconds()
    try:
        # Powertools applies max_age when it stores a value, not when it reads one: with no caching asked for now,
        # a value stored earlier under a longer max_age must not be served either.
        raw = _secrets().get(secret_id, max_age=max_age, force_fetch=fresh or max_age <= 0)
    except GetParameterError as error:
        # Powertools wraps the AWS error in its own (without `from`): name the AWS error code, never its text.
        cause = error.__context__
        code = error_code(cause) if isinstance(cause, Exception) else "unknown error"
        raise PreflightFailed(f"secret {secret_id} cannot be read ({code})") from None
    if not isinstance(raw, str):
        raise PreflightFailed(f"secret {secret_id} has no SecretString")
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
    return Credentials(username=username, password=password, token=token if isinstance(token, str) else None)
