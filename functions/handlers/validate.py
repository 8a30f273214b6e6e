"""Step `validate`: parse the execution input, check everything while Bitbucket is live, take the guard."""

from typing import Any

from functions import backup
from functions.handlers._step import step
from functions.models.events import PrepareEvent, parse


@step("validate")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(PrepareEvent, event, "validate")
    return backup.prepare(request.input, request.execution, request.start_time).model_dump(mode="json")
