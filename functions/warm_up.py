"""The warm-up before the lock: what a locked step would otherwise read first, read while Bitbucket is still live.

The state machine invokes every function of the locked phase with `{"warm": true, "run": …}` just before the lock.
Besides starting the execution environment, the warm-up loads the run's configuration (the pinned SSM version), the
Bitbucket credentials (for the steps that call Bitbucket) and the run record, each kept by the warm process (the
configuration and the secret in their caches, the clients with their open connections), so that the first call of
the step under the lock does none of it. A warm-up that cannot read something is still a warm-up: the step reads
it again itself, and fails there if it must.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from functions import runs
from functions.clients.secrets import credentials
from functions.models.events import RunContext
from functions.models.part_config import SelfManagedSearchConfig
from functions.models.steps import BACKUP, Function
from functions.observability import logger


def prime(row: Function, raw_run: Any) -> bool:
    """Read what step `row` reads first for run `raw_run`; True when all of it was read."""
    try:
        run = RunContext.model_validate(raw_run)
        config = run.config
        if row.bitbucket:
            credentials(config.credentials_secret)
        if row.name == BACKUP.copy_search.name and config.search_index is not None:
            # The search snapshot's client (requests, the signer) and a self-managed cluster's credentials.
            importlib.import_module("functions.strategies.search_snapshot")
            if isinstance(config.search_index, SelfManagedSearchConfig):
                credentials(config.search_index.credentials_secret)
        runs.get(run.instance, run.backup_id)
    except Exception as error:  # best effort: the step reads it again itself, under its own retries and catch
        reason = "its run is invalid" if isinstance(error, ValidationError) else type(error).__name__
        logger.warning(f"warm-up: {row.label} read nothing ahead ({reason})")
        return False
    return True
