"""What every handler shares: Powertools context, metrics flush, and error texts that cannot leak a secret.

Exceptions propagate (Step Functions Retry/Catch match their class names); only an unexpected exception whose
text contains a registered secret is replaced by one with the secret masked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from functions.errors import BackupError
from functions.observability import bind, logger, metrics, redact, tracer

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def step(name: str) -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Handler]:
    def wrap(body: Callable[[dict[str, Any]], dict[str, Any]]) -> Handler:
        @functools.wraps(body)
        def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
            logger.append_keys(step=name)
            run_ = event.get("run") if isinstance(event, dict) else None
            if isinstance(run_, dict):  # instance and backup id on every line, before the event is even parsed
                bind(instance=run_.get("instance"), backup_id=run_.get("backup_id"))
            try:
                return body(event)
            except BackupError as error:
                logger.error(str(error), extra={"error": type(error).__name__})
                raise
            except Exception as error:
                text = redact(str(error))
                logger.error(f"{name}: {type(error).__name__}: {text}")
                if text != str(error):
                    raise BackupError(f"{name}: {type(error).__name__}: {text}") from None
                raise
            finally:
                if is_metrics_disabled():  # Powertools keeps unflushed metrics otherwise, across invocations
                    metrics.clear_metrics()

        with_context: Handler = logger.inject_lambda_context(clear_state=True)(run)
        with_metrics: Handler = metrics.log_metrics(with_context)
        traced: Handler = tracer.capture_lambda_handler(with_metrics)
        return traced

    return wrap
