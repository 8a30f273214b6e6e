"""The restore drill's steps (functions.drill): plan, start the checks, check them, record and tear down."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from functions import drill
from functions.handlers._step import step
from functions.models.drill import CheckEvent, FinishEvent, PlanEvent, RestoredEvent
from functions.models.events import parse
from functions.models.steps import DRILL

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.results import DrillChecked, DrillChecks, DrillSummary


@step(DRILL.plan)
def plan(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(PlanEvent, event, DRILL.plan.label)
    return drill.plan(request.input, request.execution).model_dump(mode="json")


@step(DRILL.check)
def check(event: dict[str, Any]) -> DrillChecks:
    request = parse(RestoredEvent, event, DRILL.check.label)
    return drill.start_checks(request.plan, request.restored)


@step(DRILL.check_status)
def check_status(event: dict[str, Any]) -> DrillChecked:
    request = parse(CheckEvent, event, DRILL.check.label)  # part of the checks, as the user sees it
    return drill.check_status(request.plan, cast("DrillChecks", request.check))  # the check step's result


@step(DRILL.finish)
def finish(event: dict[str, Any]) -> DrillSummary:
    request = parse(FinishEvent, event, DRILL.finish.label)
    return drill.finish(request.state, request.failure)
