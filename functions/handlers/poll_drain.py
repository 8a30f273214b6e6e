"""Step `wait-drained`: checks the drain state inside the invocation until DRAINED or its slice ends."""

from typing import Any

from functions import backup
from functions.handlers._step import seconds_left, step
from functions.models.events import StepEvent, parse


@step("wait-drained")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    return backup.poll_drain(parse(StepEvent, event, "wait-drained").run, seconds_left())
