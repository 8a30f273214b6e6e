"""What the steps of the backup, restore, drill and safety-net state machines share: the configured instance's
Bitbucket client, the seed-style progress line, and a failed state's Cause as text fit for a notification.

Kept apart from the backup's logic so that restore, drill and the safety net import only these, not the backup."""

from __future__ import annotations

import importlib
import json
import os
from typing import TYPE_CHECKING, Any

from functions.models.config import InstanceConfig
from functions.observability import logger, redact

if TYPE_CHECKING:
    from functions.clients.bitbucket import BitbucketClient


def bitbucket(config: InstanceConfig) -> BitbucketClient:
    # requests and the secrets provider: imported only by the steps that call Bitbucket
    from functions.clients.bitbucket import BitbucketClient
    from functions.clients.secrets import credentials

    timing = config.timing
    verify: bool | str = config.verify_tls
    if config.verify_tls and config.ca_bundle:
        verify = asset_path(config.ca_bundle)
    return BitbucketClient(
        config.base_url,
        credentials(config.credentials_secret),
        timeout=timing.http_timeout_seconds,
        retries=timing.http_retries,
        backoff=timing.http_backoff_seconds,
        verify=verify,
        refresh=lambda: credentials(config.credentials_secret, fresh=True),
    )


def asset_path(relative: str) -> str:
    """A file shipped inside the Lambda asset (a CA bundle), named by its path from the repository's root."""
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), relative)


def ready_bitbucket() -> None:
    """Import the Bitbucket client ahead of a step's first call (the warm-up of a step that calls Bitbucket), so
    that the import is not paid under the lock."""
    for module in ("functions.clients.bitbucket", "functions.clients.secrets"):
        importlib.import_module(module)


def say(config: InstanceConfig, message: str, **marks: str | int) -> None:
    """A seed-style progress line: `[base_url]  INFO: message`. `marks` are keys for the command line that follows
    these lines: lock="taken"|"released" runs its lock clock, part and percent its
    progress bar."""
    logger.info(message, extra={"seed": f"[{config.base_url}]  INFO: {message}", **marks})


def cause_text(cause: Any) -> str:
    if isinstance(cause, str):
        try:
            parsed = json.loads(cause)
        except ValueError:
            return redact(cause)[:1000]
        if isinstance(parsed, dict) and "errorMessage" in parsed:
            return redact(str(parsed["errorMessage"]))[:1000]
        return redact(cause)[:1000]
    return "no detail"
