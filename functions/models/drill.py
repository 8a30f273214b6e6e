"""What the restore drill's steps hand each other. Nothing secret (credentials stay in Secrets Manager) and no
configuration: each step loads it from the deployed copy by instance name and version."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from functions import trusted_config
from functions.models.base import Strict
from functions.models.config import DrillConfig, InstanceConfig


class DrillFlow(Strict):
    """What the state machine's Wait state reads; no step reads it."""

    host_poll_interval_seconds: int


class DrillPlan(Strict):
    """What the plan step chose: the backup, and the restore input with throw-away targets."""

    instance: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9-]*$")
    backup_id: str = Field(pattern=r"^[a-z][a-z0-9-]*-\d{8}-\d{6}$")
    execution: str
    started_at: float
    config_version: int = Field(ge=1)
    flow: DrillFlow
    # The drill's restore state machine's input ({"instance", "backup_id", "target", "keep_on_failure"}); that
    # state machine validates it as any restore input.
    restore: dict[str, Any]

    @property
    def config(self) -> InstanceConfig:
        return trusted_config.load(self.instance, self.config_version, step="configuration")[0]

    @property
    def drill(self) -> DrillConfig:
        drill = self.config.drill
        assert drill is not None, "plan() refuses instances without a drill"
        return drill


class PlanEvent(Strict):
    input: dict[str, Any]
    execution: str


class RestoredEvent(Strict):
    plan: DrillPlan
    # The restore execution's output (its summary, with the drill's part plans and what it created).
    restored: dict[str, Any]


class CheckEvent(Strict):
    plan: DrillPlan
    check: dict[str, Any]


class FinishEvent(Strict):
    state: dict[str, Any] = Field(default_factory=dict)
    failure: dict[str, Any] = Field(default_factory=dict)
