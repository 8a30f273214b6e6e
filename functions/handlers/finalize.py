"""Step `finalize`: mark the backup complete, prune old ones, optionally announce success."""

from typing import Any

from functions import backup
from functions.handlers._step import step
from functions.models.events import StepEvent, parse


class FinalizeEvent(StepEvent):
    unlocked: dict[str, Any] | None = None


@step("finalize")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(FinalizeEvent, event, "finalize")
    return backup.finalize(request.run, request.unlocked)
