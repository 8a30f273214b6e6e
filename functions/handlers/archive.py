"""Step `archive`: after the unlock, archive the host copies and upload them to S3."""

from typing import Any

from functions import backup
from functions.handlers._step import step
from functions.models.events import StepEvent, parse


@step("archive")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(StepEvent, event, "archive")
    return backup.archive(request.run)
