"""Step `check-host`: one check of the SSM Run Commands a host step started."""

from typing import Any

from functions import backup
from functions.handlers._step import step
from functions.models.events import HostProgressEvent, parse


@step("check-host")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(HostProgressEvent, event, "check-host")
    return backup.check_host(request.run, request.progress)
