"""What the restore state machine is started with, and what its steps hand each other.

The execution input is strict (an unknown field is refused: a typo in a target must not be silently ignored);
the plan that the validate step builds carries everything later steps need, nothing secret.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from functions import trusted_config
from functions.models.base import Strict
from functions.models.config import InstanceConfig
from functions.models.part_config import EC2_INSTANCE_ID, MESH_NODE_NAME, MESH_PART, MESH_PART_MAX, MESH_PART_PREFIX

# RDS: a letter, then letters, digits and single hyphens, no trailing hyphen, at most 63 characters.
DB_IDENTIFIER = r"^[A-Za-z](-?[A-Za-z0-9])*$"
SECURITY_GROUP = r"^sg-[0-9a-f]{8,17}$"


class DatabaseTarget(Strict):
    """Where the database is restored to: always NEW identifiers. Anything not given is taken from the original
    instance (or cluster) if it still exists."""

    # RDS: the new DB instance. Aurora: the new cluster and its writer instance.
    instance_id: str | None = Field(default=None, max_length=63, pattern=DB_IDENTIFIER)
    cluster_id: str | None = Field(default=None, max_length=63, pattern=DB_IDENTIFIER)
    writer_instance_id: str | None = Field(default=None, max_length=63, pattern=DB_IDENTIFIER)
    instance_class: str | None = Field(default=None, pattern=r"^db\.[a-z0-9-]+\.[a-z0-9]+$")
    subnet_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9 ._-]{1,255}$")
    security_group_ids: list[Annotated[str, Field(pattern=SECURITY_GROUP)]] | None = Field(default=None, min_length=1)
    parameter_group: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9.-]{0,254}$")
    # Self-managed PostgreSQL (an archive): the NEW database, created by pg_restore through SSM on `host_instance_id`
    # (default: the host the backup dumped on), on the server `host`:`port` (default: the backed-up one).
    dbname: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")
    host_instance_id: str | None = Field(default=None, pattern=EC2_INSTANCE_ID.pattern)
    host: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]+$")
    port: int | None = Field(default=None, ge=1, le=65535)


class HomeTarget(Strict):
    """Where the home volumes are restored to: new volumes in one availability zone, optionally attached to a
    STOPPED instance at the original device names (and then mounted through SSM, which starts the instance)."""

    availability_zone: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")
    volume_type: Literal["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"] | None = None
    iops: int | None = Field(default=None, ge=100, le=256000)
    kms_key_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9:/_.-]{1,2048}$")
    attach_to_instance_id: str | None = Field(default=None, pattern=EC2_INSTANCE_ID.pattern)
    mount: bool = False
    # An archive (rsync strategy): extracted into `path`, an EMPTY or missing directory on the host `instance_id`
    # (default: the host the backup copied from), owned by `owner` (default: the instance's configured owner).
    path: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$")
    instance_id: str | None = Field(default=None, pattern=EC2_INSTANCE_ID.pattern)
    owner: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")

    @model_validator(mode="after")
    def _consistent(self) -> HomeTarget:
        if self.mount and not self.attach_to_instance_id:
            raise ValueError("mount needs attach_to_instance_id")
        if not self.availability_zone and not self.attach_to_instance_id and not self.path:
            raise ValueError(
                "availability_zone is required unless attach_to_instance_id is given (volumes), or path (archives)"
            )
        return self


class SearchTarget(Strict):
    """The search index restored as NEW indices: each index of the snapshot under `index_prefix` + its name
    (default `restored-<backup id>-`), never over a live index, without its aliases."""

    index_prefix: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")


class RestoreTarget(Strict):
    database: DatabaseTarget | None = None
    home: HomeTarget | None = None
    # Mesh nodes by name: each node's home restored as its own NEW volumes or into its own directory (a node's
    # volumes are not attached by the restore: attach_to_instance_id and mount are the shared home's).
    mesh: dict[Annotated[str, Field(max_length=24, pattern=rf"^{MESH_NODE_NAME}$")], HomeTarget] | None = Field(
        default=None, max_length=20
    )
    search: SearchTarget | None = None

    @model_validator(mode="after")
    def _something(self) -> RestoreTarget:
        if self.database is None and self.home is None and not self.mesh and self.search is None:
            raise ValueError(
                "names neither a database, a home, a Mesh node nor a search index target: there is nothing to restore"
            )
        return self

    def of(self, part: str) -> DatabaseTarget | HomeTarget | SearchTarget | None:
        if part.startswith(MESH_PART_PREFIX):
            return (self.mesh or {}).get(part.removeprefix(MESH_PART_PREFIX))
        return {"database": self.database, "home": self.home, "search": self.search}.get(part)

    @property
    def mesh_parts(self) -> list[str]:
        return [MESH_PART_PREFIX + name for name in sorted(self.mesh or {})]


def target_label(part: str) -> str:
    """How the execution input names a part's target: target.home, target.database, target.mesh.<name>."""
    return (
        f"target.mesh.{part.removeprefix(MESH_PART_PREFIX)}" if part.startswith(MESH_PART_PREFIX) else f"target.{part}"
    )


class RestoreInput(Strict):
    """{"instance": "prod", "backup_id": "prod-20261123-082818", "target": {...}, "keep_on_failure": false}"""

    instance: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9-]*$")
    # Checked by the validate step, so that a malformed id is refused with a message that says so.
    backup_id: str = Field(min_length=1, max_length=128)
    target: RestoreTarget
    keep_on_failure: bool = False
    # No `drill` here: only the drill's own restore state machine runs a restore as a drill (its definition says so
    # to the validate step); an execution input cannot.


class PlanFlow(Strict):
    """What the state machine's Wait state reads; no step reads it."""

    restore_poll_interval_seconds: int


class RestorePlan(Strict):
    """What the validate step checked and resolved; later steps work from this and from the deployed configuration
    (by instance name and version), which the plan never carries."""

    instance: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9-]*$")
    backup_id: str = Field(pattern=r"^[a-z][a-z0-9-]*-\d{8}-\d{6}$")
    execution: str  # the execution ARN: every resource the restore creates is tagged with it
    started_at: float
    config_version: int = Field(ge=1)
    flow: PlanFlow
    target: RestoreTarget
    keep_on_failure: bool = False
    drill: bool = False
    # Per part ("database", "home"): what the strategy resolved (snapshot ids, names, classes, volumes ...).
    parts: dict[str, dict[str, Any]]
    restore_database: bool
    restore_home: bool
    # The Mesh nodes' parts restored (mesh-<name>), one item each of the restore's Map state.
    mesh: list[str] = Field(default_factory=list)
    restore_search: bool = False
    attach: bool
    mount: bool

    @property
    def config(self) -> InstanceConfig:
        return trusted_config.load(self.instance, self.config_version, step="configuration")[0]


class ValidateEvent(Strict):
    input: dict[str, Any]
    execution: str
    start_time: str
    # A constant in the drill's restore state machine's definition (stacks/constructs/restore_workflow.py), never
    # from the execution input; the validate step also checks that its execution is one of that state machine's.
    drill: bool = False


class PlanEvent(Strict):
    plan: RestorePlan


class PartEvent(PlanEvent):
    part: str = Field(max_length=MESH_PART_MAX, pattern=rf"^(home|database|search|{MESH_PART})$")


class StatusEvent(PlanEvent):
    # Each part's restorer's start() result, or {"skipped": true} for a part not restored; `mesh`: the Mesh nodes'
    # Map state's results, a list of {"part": …, "created": …} (see functions.restore.created_by_part).
    created: dict[str, Any]


class MountEvent(PlanEvent):
    attach: dict[str, Any]


class StateEvent(Strict):
    """The whole execution state (finish and failure steps read whatever earlier steps left in it)."""

    state: dict[str, Any] = Field(default_factory=dict)
    failure: dict[str, Any] = Field(default_factory=dict)
    # The execution's ARN from the state machine's context (the failure path: a drill's restore that failed before
    # its plan existed is known by its state machine).
    execution: str = ""
