"""Step `wait-drained`."""

from typing import Any

from functions import workflow
from functions.handlers._step import step
from functions.models.events import StepEvent, parse


@step("wait-drained")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    return workflow.poll_drain(parse(StepEvent, event, "wait-drained").run)
