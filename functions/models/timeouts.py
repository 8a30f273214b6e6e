"""How long a backup execution may run, shared by the stack (the state machine's timeout) and the run table (the
run record must outlive the execution, or its unlock token could be lost)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from functions.models.config import InstanceConfig
from functions.models.part_config import DumpedDatabaseConfig, RsyncHomeConfig

# Lambda work, Step Functions retries and the waits between polls, on top of the bounded waits.
EXECUTION_MARGIN_SECONDS = 3600
# After the execution ended: time for the safety net to find the record.
RECORD_MARGIN_SECONDS = 3600


def longest_host_wait_seconds(config: InstanceConfig) -> int:
    """The commands on hosts: the live rsync pass before the lock, the copy under it (rsync and the dump run in
    parallel) and the archive after the unlock."""
    home = config.home if isinstance(config.home, RsyncHomeConfig) else None
    database = config.database if isinstance(config.database, DumpedDatabaseConfig) else None
    copies = [p.command_timeout_seconds for p in (home, database) if p is not None]
    if not copies:
        return 0
    live = home.command_timeout_seconds if home else 0
    return live + max(copies) + config.archive.command_timeout_seconds


def execution_timeout_seconds(instances: Iterable[InstanceConfig]) -> int:
    """The backup state machine's timeout for these instances: the longest run of any of them (drain, snapshots,
    copies and host commands, each bounded by its own timeout), plus a margin, in whole hours."""
    longest = max((c.longest_run_seconds + longest_host_wait_seconds(c) for c in instances), default=0)
    return math.ceil((longest + EXECUTION_MARGIN_SECONDS) / 3600) * 3600
