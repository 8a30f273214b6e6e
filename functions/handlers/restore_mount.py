"""Restore step `mount-home`: mount the restored home on the target instance through SSM Run Command."""

from typing import Any

from functions import restore
from functions.handlers._step import step
from functions.models.events import parse
from functions.models.restore import MountEvent


@step("mount-home")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(MountEvent, event, "mount-home")
    return restore.mount(request.plan, request.attach)
