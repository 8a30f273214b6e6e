"""The restore's steps (functions.restore), one handler each, named as their rows in functions/models/steps.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from functions import restore
from functions.handlers._step import step
from functions.models.events import parse
from functions.models.restore import MountEvent, PartEvent, StateEvent, StatusEvent, ValidateEvent
from functions.models.steps import RESTORE, Step

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time).
if TYPE_CHECKING:
    from functions.models.restore_plans import Attached, EbsCreated, Mounted, PartCreated
    from functions.models.results import DrillRestoreSummary, RestoreChecked, RestoreFailureHandled, RestoreSummary


@step(RESTORE.validate)
def validate(event: dict[str, Any]) -> dict[str, Any]:
    """Parse the input, check the backup and the targets; creates nothing."""
    request = parse(ValidateEvent, event, RESTORE.validate.label)
    return restore.validate(request.input, request.execution, request.start_time, request.drill).model_dump(mode="json")


def _start_part(row: Step, event: dict[str, Any]) -> PartCreated:
    request = parse(PartEvent, event, row.label)
    restore.check_own_part(request.plan, row, request.part)
    return restore.start_part(request.plan, request.part)


@step(RESTORE.restore_database)
def restore_database(event: dict[str, Any]) -> PartCreated:
    return _start_part(RESTORE.restore_database, event)


@step(RESTORE.restore_home)
def restore_home(event: dict[str, Any]) -> PartCreated:
    """Start creating the home volumes."""
    return _start_part(RESTORE.restore_home, event)


@step(RESTORE.restore_mesh)
def restore_mesh(event: dict[str, Any]) -> PartCreated:
    """Start restoring one Mesh node's home (an iteration of the Map state over the plan's nodes)."""
    return _start_part(RESTORE.restore_mesh, event)


@step(RESTORE.restore_search)
def restore_search(event: dict[str, Any]) -> PartCreated:
    """Start restoring the search index's snapshot into new indices."""
    return _start_part(RESTORE.restore_search, event)


@step(RESTORE.wait_restore)
def wait_restore(event: dict[str, Any]) -> RestoreChecked:
    """Are the restored database and volumes available yet (bounded)?"""
    request = parse(StatusEvent, event, RESTORE.wait_restore.label)
    return restore.check(request.plan, request.created)


@step(RESTORE.attach_home)
def attach_home(event: dict[str, Any]) -> Attached:
    """Attach the restored volumes to the stopped target instance."""
    request = parse(StatusEvent, event, RESTORE.attach_home.label)
    # What restore-home created (EbsRestorer.start()), handed back by the state machine.
    return restore.attach(request.plan, cast("EbsCreated", request.created["home"]))


@step(RESTORE.mount_home)
def mount_home(event: dict[str, Any]) -> Mounted:
    """Mount the restored home on the target instance through SSM Run Command."""
    request = parse(MountEvent, event, RESTORE.mount_home.label)
    return restore.mount(request.plan, cast("Attached", request.attach))  # attach-home's result


@step(RESTORE.finish)
def finish(event: dict[str, Any]) -> RestoreSummary | DrillRestoreSummary:
    """Hand the restored resources over, announce them and the next manual steps."""
    return restore.finish(parse(StateEvent, event, RESTORE.finish.label).state)


@step(RESTORE.handle_failure)
def handle_failure(event: dict[str, Any]) -> RestoreFailureHandled:
    """Remove what this execution created (unless kept), notify once."""
    request = parse(StateEvent, event, RESTORE.handle_failure.label)
    return restore.handle_failure(request.state, request.failure, request.execution)
