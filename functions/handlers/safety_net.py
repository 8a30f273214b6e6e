"""EventBridge target: a backup execution ended ABORTED, TIMED_OUT or FAILED (see functions/safety_net.py)."""

from typing import Any

from functions import safety_net
from functions.handlers._step import step


@step("safety-net")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    detail = event.get("detail") if isinstance(event, dict) else None
    return safety_net.handle_status_change(detail if isinstance(detail, dict) else {})
