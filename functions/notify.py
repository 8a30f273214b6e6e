"""One SNS message per outcome, with the instance as a message attribute so that each instance's
subscribers (filter policy) get only their own."""

from __future__ import annotations

import json
from typing import Any

from functions.clients.aws import client
from functions.models import environment
from functions.observability import logger, redact


def publish(subject: str, instance: str | None, outcome: str, body: dict[str, Any]) -> None:
    lines = [f"{key}: {value}" for key, value in body.items() if value not in (None, "", [])]
    message = redact(subject + "\n\n" + "\n".join(lines) + "\n\n" + json.dumps(body, default=str))
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
