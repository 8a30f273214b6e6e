"""Step `prepare-host`: before the lock, install the host script and start the first (live) copy pass."""

from typing import Any

from functions import backup
from functions.handlers._step import step
from functions.models.events import StepEvent, parse


@step("prepare-host")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(StepEvent, event, "prepare-host")
    return backup.prepare_host(request.run)
