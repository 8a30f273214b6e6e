"""Restore step `validate`: parse the input, check the backup and the targets; creates nothing."""

from typing import Any

from functions import restore
from functions.handlers._step import step
from functions.models.events import parse
from functions.models.restore import ValidateEvent


@step("validate")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(ValidateEvent, event, "validate")
    return restore.validate(request.input, request.execution, request.start_time, request.drill).model_dump(mode="json")
