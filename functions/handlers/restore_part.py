"""Restore steps `restore-database` / `restore-home`: start creating the new resources of one part."""

from typing import Any

from functions import restore
from functions.handlers._step import step
from functions.models.events import parse
from functions.models.restore import PartEvent


@step("restore-part")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(PartEvent, event, "restore-part")
    return restore.start_part(request.plan, request.part)
