"""What the restore drill's steps hand each other. Nothing secret: credentials stay in Secrets Manager."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from functions.models.config import DrillConfig, InstanceConfig


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DrillPlan(_Event):
    """What the plan step chose: the backup, and the restore input with throw-away targets."""

    instance: str
    backup_id: str
    execution: str
    started_at: float
    config: InstanceConfig
    # The restore state machine's input ({"instance", "backup_id", "target", "keep_on_failure", "drill": true}).
    restore: dict[str, Any]

    @property
    def drill(self) -> DrillConfig:
        assert self.config.drill is not None, "plan() refuses instances without a drill"
        return self.config.drill


class PlanEvent(_Event):
    input: dict[str, Any]
    execution: str


class RestoredEvent(_Event):
    plan: DrillPlan
    # The restore execution's output (its summary, with the drill's part plans and what it created).
    restored: dict[str, Any]


class CheckEvent(_Event):
    plan: DrillPlan
    check: dict[str, Any]


class FinishEvent(_Event):
    state: dict[str, Any] = Field(default_factory=dict)
    failure: dict[str, Any] = Field(default_factory=dict)
