"""Restore step `wait-restore`: are the restored database and volumes available yet (bounded)?"""

from typing import Any

from functions import restore
from functions.handlers._step import step
from functions.models.events import parse
from functions.models.restore import StatusEvent


@step("wait-restore")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(StatusEvent, event, "wait-restore")
    return restore.check(request.plan, request.created)
