"""Step `progress`: report a finished part (or, without a part, 100 %) to Bitbucket."""

from typing import Any

from functions import backup
from functions.handlers._step import step
from functions.models.events import StepEvent, parse


class ProgressEvent(StepEvent):
    part: str | None = None


@step("progress")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(ProgressEvent, event, "progress")
    return backup.report_progress(request.run, request.part)
