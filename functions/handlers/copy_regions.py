"""Step `copy-regions`: start the disaster-recovery copies in other regions (and accounts), check them."""

from typing import Any

from functions import backup
from functions.handlers._step import step
from functions.models.events import StepEvent, parse


@step("copy-regions")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    return backup.copy_regions(parse(StepEvent, event, "copy-regions").run)
