"""Step `wait-snapshots`."""

from typing import Any

from functions import backup
from functions.handlers._step import step
from functions.models.events import StepEvent, parse


@step("wait-snapshots")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    return backup.check_snapshots(parse(StepEvent, event, "wait-snapshots").run)
