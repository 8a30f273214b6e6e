"""Powertools Logger and Metrics, made once for every handler; plus secret redaction.

No tracer: Lambda's and Step Functions' active tracing (set in the stack) need no SDK in the function, and
Powertools' Tracer is built on the X-Ray SDK (maintenance mode since 2026-02-25, end of support 2027-02-25),
whose import was about a quarter of a handler's cold start (README, "What it measured").

Every secret the code learns (password, token, unlock and cancel tokens) is registered here, and the log
formatter and error texts pass through `redact`, so a secret cannot reach a log line or an error even by
mistake (a URL with ?token= in an exception, for example).
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from functions.models.metrics import NAMESPACE, SERVICE

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    # Short values would redact ordinary words; real tokens and passwords used here are longer.
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def short(token: str) -> str:
    """A recognisable but useless prefix of a token, for the seed-style progress lines."""
    return token[:4] + "…" if len(token) > 8 else "…"


class _RedactingFormatter(LambdaPowertoolsFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# A step that records no metric is normal here; Powertools would warn on every such invocation.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger(service=SERVICE, logger_formatter=_RedactingFormatter())
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def bind(**keys: Any) -> None:
    """Keys that appear on every following log line of this invocation (instance, backup_id)."""
    logger.append_keys(**{k: v for k, v in keys.items() if v is not None})
