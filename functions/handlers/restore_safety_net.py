"""EventBridge target: a restore execution ended ABORTED or TIMED_OUT (see functions/restore.py handle_stopped)."""

from typing import Any

from functions import restore
from functions.handlers._step import step


@step("restore-safety-net")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    detail = event.get("detail") if isinstance(event, dict) else None
    return restore.handle_stopped(detail if isinstance(detail, dict) else {})
