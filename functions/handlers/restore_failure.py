"""The restore's failure path: remove what this execution created (unless kept), notify once."""

from typing import Any

from functions import restore
from functions.handlers._step import step
from functions.models.events import parse
from functions.models.restore import StateEvent


@step("handle-restore-failure")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(StateEvent, event, "handle-restore-failure")
    return restore.handle_failure(request.state, request.failure, request.execution)
