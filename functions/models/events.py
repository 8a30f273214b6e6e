"""What the state machine hands each Lambda. Handlers parse these and nothing else.

No event carries configuration: every step loads its instance's configuration from the copy the stack deployed
(functions.trusted_config), by the instance name and the parameter version the validate step read. A step event is
strict, so a crafted `config` (or any field that would say where to connect, what to run or what to delete) is
refused, not silently ignored.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from functions import trusted_config
from functions.errors import InvalidInput
from functions.models.base import Strict
from functions.models.config import InstanceConfig, TimingConfig
from functions.models.part_config import MESH_PART, MESH_PART_MAX, RsyncHomeConfig

BACKUP_ID = re.compile(r"^[a-z][a-z0-9-]*-\d{8}-\d{6}$")
INSTANCE = r"^[a-z][a-z0-9-]*$"


class ExecutionInput(Strict):
    """What a schedule or an operator passes: {"instance": "prod"}."""

    instance: str = Field(min_length=1, max_length=40, pattern=INSTANCE)


class PrepareEvent(Strict):
    input: dict[str, Any]
    execution: str
    start_time: str


class FlowTiming(Strict):
    poll_interval_seconds: int
    host_poll_interval_seconds: int
    snapshot_poll_interval_seconds: int
    copy_poll_interval_seconds: int


class FlowPart(Strict):
    strategy: str


class RunFlow(Strict):
    """What the state machine's Choice and Wait states read (the validate step's result). No handler reads it: a
    step decides from the deployed configuration."""

    zero_downtime: bool
    home: FlowPart
    database: FlowPart
    # The Mesh nodes' parts (mesh-<name>), copied by a Map state: one item each.
    mesh: list[str] = Field(default_factory=list)
    search: FlowPart = FlowPart(strategy="none")
    timing: FlowTiming

    @classmethod
    def of(cls, config: InstanceConfig) -> RunFlow:
        timing: TimingConfig = config.timing
        return cls(
            zero_downtime=config.zero_downtime,
            home=FlowPart(strategy=config.home.strategy),
            # A database inside the home's snapshot (postgresql-fslevel) has nothing to copy: its branch is skipped.
            database=FlowPart(strategy=config.database.strategy if "database" in config.parts else "none"),
            mesh=config.mesh_parts,
            search=FlowPart(strategy=config.search.strategy),
            timing=FlowTiming(
                poll_interval_seconds=timing.poll_interval_seconds,
                host_poll_interval_seconds=timing.host_poll_interval_seconds,
                snapshot_poll_interval_seconds=timing.snapshot_poll_interval_seconds,
                copy_poll_interval_seconds=timing.copy_poll_interval_seconds,
            ),
        )


class RunContext(Strict):
    """Carried through the state machine by every step: who and which run, never where or what; nothing secret."""

    instance: str = Field(min_length=1, max_length=40, pattern=INSTANCE)
    backup_id: str = Field(pattern=BACKUP_ID.pattern)
    execution: str
    started_at: float
    # The version of the instance's SSM parameter that the validate step read: later steps load exactly that one.
    config_version: int = Field(ge=1)
    flow: RunFlow
    # Read in validate; written into the archives' manifests (the copy-type strategies).
    bitbucket_version: str | None = Field(default=None, max_length=100)
    # home.exclude_repos resolved to repository ids by the validate step (Bitbucket answers REST calls only while
    # live), one per configured entry; checked against the configuration (see `config`).
    exclude_repo_ids: list[int] | None = None

    @property
    def config(self) -> InstanceConfig:
        config, _ = trusted_config.load(self.instance, self.config_version, step="configuration")
        home = config.home
        if self.exclude_repo_ids is None or not isinstance(home, RsyncHomeConfig):
            return config
        ids = self.exclude_repo_ids
        configured = home.exclude_repos
        # A resolved id may stand in for a configured PROJECT/slug only; a configured id must stay itself.
        if len(ids) != len(configured) or any(
            id_ < 1 or (isinstance(c, int) and c != id_) for c, id_ in zip(configured, ids, strict=True)
        ):
            raise InvalidInput("configuration: run.exclude_repo_ids does not match the instance's home.exclude_repos")
        return config.model_copy(update={"home": home.model_copy(update={"exclude_repos": list(ids)})})


class StepEvent(Strict):
    run: RunContext


class PartEvent(StepEvent):
    # A Mesh node's part, or `mesh` for all of them at once (their progress report, after the Map state).
    part: str = Field(max_length=MESH_PART_MAX, pattern=rf"^(home|database|mesh|search|{MESH_PART})$")


class PartProgressEvent(PartEvent):
    """A part's copy, called again with what it returned while its host command still ran (see backup.wait_host)."""

    progress: dict[str, Any] | None = None


class FinalizeEvent(StepEvent):
    """Finalize, with what the unlock recorded (its times, for the summary)."""

    unlocked: dict[str, Any] | None = None


class HostProgressEvent(StepEvent):
    """The commands a host step started and what finished so far (see backup.check_host)."""

    progress: dict[str, Any]


class UnlockEvent(Strict):
    """What `bitbucket-backup unlock` sends the backup's safety-net function: the instance's name, nothing else."""

    instance: str = Field(min_length=1, max_length=40, pattern=INSTANCE)


class FailureEvent(Strict):
    input: dict[str, Any] = Field(default_factory=dict)
    run: RunContext | None = None
    failure: dict[str, Any] = Field(default_factory=dict)


T = TypeVar("T", bound=BaseModel)


def parse(model: type[T], event: Any, step: str) -> T:
    try:
        return model.model_validate(event)
    except ValidationError as error:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()[:5]
        )
        raise InvalidInput(f"{step}: invalid input: {fields}") from None
