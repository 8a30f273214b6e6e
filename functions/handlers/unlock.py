"""Step `unlock`."""

from typing import Any

from functions import backup
from functions.handlers._step import step
from functions.models.events import StepEvent, parse


@step("unlock")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    return backup.unlock(parse(StepEvent, event, "unlock").run)
