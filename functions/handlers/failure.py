"""The failure path: cancel, unlock if this run locked, remove what it made, notify once."""

from typing import Any

from functions import workflow
from functions.handlers._step import step
from functions.models.events import FailureEvent, parse


@step("handle-failure")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(FailureEvent, event, "handle-failure")
    return workflow.handle_failure(request.input, request.run, request.failure)
