"""One EventBridge Scheduler schedule per instance that has one, starting the backup with {"instance": name}."""

from __future__ import annotations

from aws_cdk import TimeZone
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.models.config import InstanceConfig


class Schedules(Construct):
    def __init__(
        self, scope: Construct, id: str, *, instances: list[InstanceConfig], state_machine: sfn.IStateMachine
    ) -> None:
        super().__init__(scope, id)
        self.schedules = [
            scheduler.Schedule(
                self,
                f"Backup-{instance.name}",
                schedule=scheduler.ScheduleExpression.expression(
                    instance.schedule, TimeZone.of(instance.schedule_timezone)
                ),
                target=targets.StepFunctionsStartExecution(
                    state_machine, input=scheduler.ScheduleTargetInput.from_object({"instance": instance.name})
                ),
                description=f"Bitbucket DIY backup of '{instance.name}'",
            )
            for instance in instances
            if instance.schedule
        ]
