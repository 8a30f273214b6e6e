"""Restore step `finish`: hand the restored resources over, announce them and the next manual steps."""

from typing import Any

from functions import restore
from functions.handlers._step import step
from functions.models.events import parse
from functions.models.restore import StateEvent


@step("finish")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    return restore.finish(parse(StateEvent, event, "finish").state)
