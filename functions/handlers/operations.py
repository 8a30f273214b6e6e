"""Functions no state machine calls: the safety nets (EventBridge rules on executions that ended without their own
cleanup: functions/safety_net.py, functions/restore.py handle_stopped; the backup's also answers the operator's
`bitbucket-backup unlock`: functions/operator_unlock.py) and the scheduled staleness check."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions import monitoring, restore
from functions import operator_unlock as unlocking
from functions import safety_net as backup_safety_net
from functions.handlers._step import step
from functions.models.events import UnlockEvent, parse
from functions.models.steps import OPERATIONS

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.results import OperatorUnlocked, SafetyNetActed, StalenessReport


def _detail(event: Any) -> dict[str, Any]:
    detail = event.get("detail") if isinstance(event, dict) else None
    return detail if isinstance(detail, dict) else {}


@step(OPERATIONS.safety_net)
def safety_net(event: dict[str, Any]) -> OperatorUnlocked | SafetyNetActed:
    """A backup execution ended ABORTED, TIMED_OUT or FAILED (an EventBridge event: it has a detail); or an operator
    asks to end the lock a run left behind (`bitbucket-backup unlock`: only the instance's name)."""
    if isinstance(event, dict) and "detail" not in event:
        return unlocking.unlock(parse(UnlockEvent, event, "unlock").instance)
    return backup_safety_net.handle_status_change(_detail(event))


@step(OPERATIONS.restore_safety_net)
def restore_safety_net(event: dict[str, Any]) -> SafetyNetActed:
    """A restore execution ended ABORTED or TIMED_OUT."""
    return restore.handle_stopped(_detail(event))


@step(OPERATIONS.staleness_check)
def staleness_check(event: dict[str, Any]) -> StalenessReport:
    """Scheduled (EventBridge Scheduler): hours since each instance's newest complete backup, as a metric."""
    return monitoring.check_staleness()
