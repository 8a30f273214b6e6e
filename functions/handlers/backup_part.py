"""Step `backup-home` / `backup-database`: the copy of one part, under the lock."""

from typing import Any

from functions import workflow
from functions.handlers._step import step
from functions.models.events import PartEvent, parse


@step("backup-part")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(PartEvent, event, "backup-part")
    return workflow.backup_part(request.run, request.part)
