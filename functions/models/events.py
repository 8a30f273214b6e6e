"""What the state machine hands each Lambda. Handlers parse these and nothing else."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions.errors import InvalidInput
from functions.models.config import InstanceConfig

BACKUP_ID = re.compile(r"^[a-z][a-z0-9-]*-\d{8}-\d{6}$")


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ExecutionInput(_Event):
    """What a schedule or an operator passes: {"instance": "prod"}."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    instance: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9-]*$")


class PrepareEvent(_Event):
    input: dict[str, Any]
    execution: str
    start_time: str


class RunContext(_Event):
    """Carried through the state machine by every step; holds nothing secret."""

    instance: str
    backup_id: str = Field(pattern=BACKUP_ID.pattern)
    execution: str
    started_at: float
    config: InstanceConfig
    # Read in validate; written into the archives' manifests (the copy-type strategies).
    bitbucket_version: str | None = None


class StepEvent(_Event):
    run: RunContext


class PartEvent(StepEvent):
    part: str = Field(pattern=r"^(home|database)$")


class HostProgressEvent(StepEvent):
    """The commands a host step started and what finished so far (see workflow.check_host)."""

    progress: dict[str, Any]


class FailureEvent(_Event):
    input: dict[str, Any] = Field(default_factory=dict)
    run: RunContext | None = None
    failure: dict[str, Any] = Field(default_factory=dict)


T = TypeVar("T", bound=BaseModel)


def parse(model: type[T], event: Any, step: str) -> T:
    try:
        return model.model_validate(event)
    except ValidationError as error:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in error.errors()[:5])
        raise InvalidInput(f"{step}: invalid input: {fields}") from None
