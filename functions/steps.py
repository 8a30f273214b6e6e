"""What the steps of the backup, restore, drill and safety-net state machines share: the configured instance's
Bitbucket client, the seed-style progress line, and a failed state's Cause as text fit for a notification.

Kept apart from the backup's logic so that restore, drill and the safety net import only these, not the backup."""

from __future__ import annotations

import json
import os
from typing import Any

from functions.clients.bitbucket import BitbucketClient
from functions.clients.secrets import credentials
from functions.models.config import InstanceConfig
from functions.observability import logger, redact


def bitbucket(config: InstanceConfig) -> BitbucketClient:
    timing = config.timing
    verify: bool | str = config.verify_tls
    if config.verify_tls and config.ca_bundle:
        verify = os.path.join(os.path.dirname(os.path.dirname(__file__)), config.ca_bundle)
    return BitbucketClient(
        config.base_url,
        credentials(config.credentials_secret),
        timeout=timing.http_timeout_seconds,
        retries=timing.http_retries,
        backoff=timing.http_backoff_seconds,
        verify=verify,
        refresh=lambda: credentials(config.credentials_secret, fresh=True),
    )


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
