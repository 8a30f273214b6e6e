"""Step `lock`."""

from typing import Any

from functions import backup
from functions.handlers._step import step
from functions.models.events import StepEvent, parse


@step("lock")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    return backup.lock(parse(StepEvent, event, "lock").run)
