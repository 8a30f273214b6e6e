"""The Lambda handlers, one module per workflow; functions/models/steps.py names each step's handler.

In Lambda (AWS_LAMBDA_FUNCTION_NAME is set), the cyclic garbage collector is paused while a handler module and its
libraries import: every collection then scans all the objects built so far and frees next to nothing (26 ms of the
backup handler's cold start on Python 3.11, 8 ms on 3.13; README, "What it measured"). The first invocation freezes
what the import built (module-level objects that live as long as the process) out of later collections and resumes
the collector (functions.handlers._step).
"""

from __future__ import annotations

import gc
import os

_paused = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) and gc.isenabled()
if _paused:
    gc.disable()


def resume_collector() -> None:
    """Once, at the first invocation: freeze what the cold start built and collect as usual from then on."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
