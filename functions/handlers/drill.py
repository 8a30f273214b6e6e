"""The restore drill's steps (functions.drill): plan, start the checks, check them, record and tear down."""

from typing import Any

from functions import drill
from functions.handlers._step import step
from functions.models.drill import CheckEvent, FinishEvent, PlanEvent, RestoredEvent
from functions.models.events import parse


@step("drill-plan")
def plan(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(PlanEvent, event, "plan")
    return drill.plan(request.input, request.execution).model_dump(mode="json")


@step("drill-check")
def start_checks(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(RestoredEvent, event, "check")
    return drill.start_checks(request.plan, request.restored)


@step("drill-check-status")
def check_status(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(CheckEvent, event, "check")
    return drill.check_status(request.plan, request.check)


@step("drill-finish")
def finish(event: dict[str, Any]) -> dict[str, Any]:
    request = parse(FinishEvent, event, "finish")
    return drill.finish(request.state, request.failure)
