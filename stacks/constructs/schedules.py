"""One EventBridge Scheduler schedule per instance that has one, starting the backup with {"instance": name}; and one
per instance with a restore drill, starting the drill state machine the same way.

A fleet often gives every instance the same schedule. Started in the same minute, fifty backups would call
CreateSnapshots and CreateDBSnapshot at once and meet the snapshot APIs' rate limits, so `plan` staggers instances
that share a cron expression (and time zone) over the hour of that expression: at most MAX_STARTS_PER_MINUTE start
in any minute. The order is by name, so the plan is deterministic; an explicit `schedule_offset_minutes` takes its
minute first. Shared rate(…) expressions, and cron expressions whose minute is not one number, get a flexible time
window instead (Scheduler spreads those starts at random within it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aws_cdk import Duration, TimeZone
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.models.config import InstanceConfig
from functions.models.schedule import longest_gap_hours, plain_minute, with_minute

MAX_STARTS_PER_MINUTE = 2
MAX_FLEXIBLE_WINDOW_MINUTES = 15


@dataclass(frozen=True)
class Slot:
    expression: str
    timezone: str
    flexible_minutes: int = 0  # 0: start at the expression's time exactly


def plan(instances: list[InstanceConfig]) -> dict[str, Slot]:
    """The schedule of every scheduled instance of the deployment, staggered where several share one expression."""
    groups: dict[tuple[str, str], list[InstanceConfig]] = {}
    for instance in instances:
        if instance.schedule:
            groups.setdefault((instance.schedule, instance.schedule_timezone), []).append(instance)
    slots: dict[str, Slot] = {}
    for (expression, timezone), members in groups.items():
        minute = plain_minute(expression)
        if minute is not None:
            slots |= _stagger(expression, timezone, minute, sorted(members, key=lambda i: i.name))
        elif len(members) > 1:
            gap_minutes = int((longest_gap_hours(expression) or 1) * 60)
            window = max(1, min(MAX_FLEXIBLE_WINDOW_MINUTES, gap_minutes // 2))
            slots |= {i.name: Slot(expression, timezone, window) for i in members}
        else:
            slots[members[0].name] = Slot(expression, timezone)
    return slots


def _stagger(expression: str, timezone: str, minute: int, members: list[InstanceConfig]) -> dict[str, Slot]:
    per_minute = max(MAX_STARTS_PER_MINUTE, math.ceil(len(members) / 60))
    taken = [0] * 60
    offsets: dict[str, int] = {}
    for instance in members:
        if instance.schedule_offset_minutes is not None:
            offsets[instance.name] = instance.schedule_offset_minutes
            taken[instance.schedule_offset_minutes] += 1
    for instance in members:
        if instance.name not in offsets:
            offset = next(o for o in range(60) if taken[o] < per_minute)
            offsets[instance.name] = offset
            taken[offset] += 1
    return {name: Slot(with_minute(expression, minute + offset), timezone) for name, offset in offsets.items()}


class Schedules(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        instances: list[InstanceConfig],
        state_machine: sfn.IStateMachine,
        slots: dict[str, Slot] | None = None,
        drill_state_machine: sfn.IStateMachine | None = None,
    ) -> None:
        super().__init__(scope, id)
        slots = slots if slots is not None else plan(instances)
        self.schedules = [
            _start(self, f"Backup-{i.name}", slots[i.name], state_machine, i.name, backup_description(i.name))
            for i in instances
            if i.name in slots
        ]
        # The restore drills (one per instance that has one), each on its own expression: one drill a day or week
        # restores one backup, which does not meet the snapshot APIs' rate limits.
        self.drills = [
            _start(
                self,
                f"Drill-{i.name}",
                Slot(i.drill.schedule, i.schedule_timezone),
                drill_state_machine,
                i.name,
                f"Bitbucket DIY restore drill of '{i.name}'",
            )
            for i in instances
            if i.drill and drill_state_machine is not None
        ]


def backup_description(instance: str) -> str:
    return f"Bitbucket DIY backup of '{instance}'"


def _start(
    scope: Construct, id: str, slot: Slot, state_machine: sfn.IStateMachine, instance: str, description: str
) -> scheduler.Schedule:
    return scheduler.Schedule(
        scope,
        id,
        schedule=scheduler.ScheduleExpression.expression(slot.expression, TimeZone.of(slot.timezone)),
        target=targets.StepFunctionsStartExecution(
            state_machine, input=scheduler.ScheduleTargetInput.from_object({"instance": instance})
        ),
        time_window=(
            scheduler.TimeWindow.flexible(Duration.minutes(slot.flexible_minutes))
            if slot.flexible_minutes
            else scheduler.TimeWindow.off()
        ),
        description=description,
    )
