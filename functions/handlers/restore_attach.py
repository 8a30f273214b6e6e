"""Restore step `attach-home`: attach the restored volumes to the stopped target instance."""

from typing import Any

from functions import restore
from functions.handlers._step import step
from functions.models.events import parse
from functions.models.restore import StatusEvent


@step("attach-home")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(StatusEvent, event, "attach-home")
    return restore.attach(request.plan, request.created["home"])
