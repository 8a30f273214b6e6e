"""Step `start-backup`."""

from typing import Any

from functions import backup
from functions.handlers._step import step
from functions.models.events import StepEvent, parse


@step("start-backup")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    return backup.start_backup(parse(StepEvent, event, "start-backup").run)
