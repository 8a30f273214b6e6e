"""Step `backup-home` / `backup-database`: the copy of one part, under the lock.

A host copy (rsync's locked pass, pg_dump) is waited for inside the invocation; when it outlives the invocation, the
state machine calls this function again with what it returned (`progress`), and it goes on waiting.
"""

from typing import Any

# The strategy modules are imported at cold start, so that the warm-up (before the lock) pays for them.
from functions import backup
from functions.handlers._step import seconds_left, step
from functions.models.events import PartEvent, parse
from functions.strategies import amazon_ebs, amazon_rds, host_copy  # noqa: F401


class PartProgressEvent(PartEvent):
    progress: dict[str, Any] | None = None


@step("backup-part")
def handler(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(PartProgressEvent, event, "backup-part")
    if request.progress is not None:
        return backup.wait_host(request.run, request.progress, seconds_left())
    return backup.backup_part(request.run, request.part, seconds_left())
