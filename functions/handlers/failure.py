"""The failure path: cancel, unlock if this run locked, remove what it made, notify once."""

from typing import Any

# What the failure path uses, imported at cold start: the warm-up before the lock pays for it, not a failed run.
from functions import backup, cleanup, monitoring  # noqa: F401
from functions.handlers._step import step
from functions.models.events import FailureEvent, parse
from functions.strategies import amazon_ebs, amazon_rds, host_copy  # noqa: F401


@step("handle-failure")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(FailureEvent, event, "handle-failure")
    return backup.handle_failure(request.input, request.run, request.failure)
