"""What every handler shares: Powertools context, metrics flush, and error texts that cannot leak a secret.

Exceptions propagate (Step Functions Retry/Catch match their class names); only an unexpected exception whose
text contains a registered secret is replaced by one with the secret masked.

The event `{"warm": true}`, optionally with the run (`"run": {…}`) and nothing else, is a warm-up, answered before
anything else runs: the state machine sends it to every function the locked phase calls, while Bitbucket is still
live, so that none of them starts cold under the lock; a step that calls Bitbucket imports its client then; with the
run, it also reads ahead what the step reads first (functions/warm_up.py). Any other event is parsed as the step's own.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from functions.errors import BackupError
from functions.handlers import resume_collector
from functions.models.steps import Function
from functions.observability import bind, logger, metrics, redact
from functions.steps import ready_bitbucket

# A step's result (functions/models/results.py): the handler's declared result flows through the decorator. Types
# only: creating the TypedDicts costs a few ms at a cold start, and the results are plain dicts at run time.
R = TypeVar("R", bound=Mapping[str, Any])
if TYPE_CHECKING:
    from functions.models.results import WarmUp

    Handler = Callable[[dict[str, Any], Any], R | WarmUp]
    Body = Callable[[dict[str, Any]], R]

WARM_EVENT: dict[str, Any] = {"warm": True}
# When the running invocation must have returned (time.time()), from the Lambda context; for the in-function waits.
_ends_at: ContextVar[float] = ContextVar("invocation_ends_at", default=math.inf)


def seconds_left() -> float:
    """Seconds until this invocation's Lambda timeout; 0 when the context does not say (one check, no waiting)."""
    left = _ends_at.get() - time.time()
    return 0.0 if math.isinf(left) else max(0.0, left)


def is_warm_up(event: Any) -> bool:
    return isinstance(event, dict) and event.get("warm") is True and event.keys() <= {"warm", "run"}


def _ends(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return time.time() + remaining() / 1000 if callable(remaining) else math.inf


def step(row: Function) -> Callable[[Body[R]], Handler[R]]:
    """The handler of the step `row` (functions/models/steps.py), which must be named as the row."""
    name = row.label

    def wrap(body: Body[R]) -> Handler[R]:
        assert body.__name__ == row.name, f"the handler of step {row.name} is named {body.__name__}"

        @functools.wraps(body)
        def run(event: dict[str, Any], context: Any) -> R:
            logger.append_keys(step=name)
            run_ = event.get("run") if isinstance(event, dict) else None
            if isinstance(run_, dict):  # instance and backup id on every line, before the event is even parsed
                bind(instance=run_.get("instance"), backup_id=run_.get("backup_id"))
            token = _ends_at.set(_ends(context))
            try:
                return body(event)
            except BackupError as error:
                logger.error(str(error), extra={"error": type(error).__name__})
                raise
            except Exception as error:
                text = redact(str(error))
                logger.error(f"{name}: {type(error).__name__}: {text}")
                if text != str(error):
                    raise BackupError(f"{name}: {type(error).__name__}: {text}") from None
                raise
            finally:
                _ends_at.reset(token)
                if is_metrics_disabled():  # Powertools keeps unflushed metrics otherwise, across invocations
                    metrics.clear_metrics()

        with_context: Callable[[dict[str, Any], Any], R] = logger.inject_lambda_context(clear_state=True)(run)
        with_metrics: Callable[[dict[str, Any], Any], R] = metrics.log_metrics(with_context)

        @functools.wraps(body)
        def handler(event: dict[str, Any], context: Any) -> R | WarmUp:
            resume_collector()
            if is_warm_up(event):  # no metric, and no call but the reads ahead
                if row.bitbucket:
                    ready_bitbucket()
                if "run" not in event:
                    return {"warm": True, "step": name}
                from functions.warm_up import prime  # only the warm-up's reads; a step imports what it needs

                return {"warm": True, "step": name, "primed": prime(row, event["run"])}
            return with_metrics(event, context)

        return handler

    return wrap
