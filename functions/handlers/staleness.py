"""Scheduled (EventBridge Scheduler): hours since each instance's newest complete backup, as a metric."""

from typing import Any

from functions import monitoring
from functions.handlers._step import step


@step("staleness-check")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    return monitoring.check_staleness()
