"""One SNS message per outcome, with the instance as a message attribute so that each instance's
subscribers (filter policy) get only their own."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from functions.clients.aws import client
from functions.models import environment
from functions.observability import logger, redact


def plain(value: Any) -> str:
    """A value as a person reads it, never as Python prints it: yes/no, lists one item per line or joined with
    "; ", mappings as `key value` pairs."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        pairs = ((key, plain(item)) for key, item in value.items() if item is not None)
        return ", ".join(f"{key} {text}" for key, text in pairs if text)
    if isinstance(value, (list, tuple)):
        items = [plain(item) for item in value]
        if any(isinstance(item, (dict, list, tuple)) for item in value):
            return "".join(f"\n  - {item}" for item in items)
        return "; ".join(items)
    return str(value)


def readable(body: Mapping[str, Any]) -> str:
    """The lines of a notification a person reads (the JSON copy for machines follows them)."""
    lines = ((key, plain(value)) for key, value in body.items() if value is not None)
    return "\n".join(f"{key}:{text}" if text.startswith("\n") else f"{key}: {text}" for key, text in lines if text)


def publish(subject: str, instance: str | None, outcome: str, body: Mapping[str, Any]) -> None:
    message = redact(subject + "\n\n" + readable(body) + "\n\n" + json.dumps(body, default=str))
    client("sns").publish(
        TopicArn=environment.topic_arn(),
        Subject=redact(subject)[:99],
        Message=message,
        MessageAttributes={
            "instance": {"DataType": "String", "StringValue": instance or "unknown"},
            "outcome": {"DataType": "String", "StringValue": outcome},
        },
    )
    logger.info(f"notification sent: {subject}")
