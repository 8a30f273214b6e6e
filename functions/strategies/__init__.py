"""Storage strategies: one module per way of copying a part (the DIY scripts' disk-*.sh / database-*.sh), and one
beside it per way of restoring it (*_restore.py).

Each caller sees the small interface it needs: a Catalog (the part's artifacts, found by the catalog tags, re-tagged,
locked, pruned, copied to other regions), a SnapshotCopy or a HostCopy (how the backup copies the part, see
parts_for), a Restorer (how a restore makes new resources from it, see restorers_for) and, for volumes, a
VolumeRestorer that also attaches and mounts them.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from botocore.exceptions import ClientError

from functions.clients.aws import client, error_code, target_client
from functions.errors import AwsRateLimited, ConfigInvalid, CopyFailed, RestoreRefused
from functions.models import environment
from functions.models.config import CopyTarget, InstanceConfig

# Types only (TypedDicts cost a few ms to create; the results are plain dicts at run time; the restore's models are
# built only by the restore's functions).
if TYPE_CHECKING:
    from functions.models.restore import RestoreTarget
    from functions.models.restore_plans import Attached, EbsCreated, EbsPlan, Mounted
    from functions.models.results import HostCommand

TOOL_TAG = "bitbucket-backup:tool"
TOOL_VALUE = "bitbucket-diy-backup-aws"
INSTANCE_TAG = "bitbucket-backup:instance"
BACKUP_ID_TAG = "bitbucket-backup:backup-id"
PART_TAG = "bitbucket-backup:part"
STATUS_TAG = "bitbucket-backup:status"
# Which deployment (stack) made an artifact: two deployments may back up instances of the same name (a second one in
# the first one's DR region, say); each lists, prunes and cleans up only its own artifacts, and IAM enforces it.
DEPLOYMENT_TAG = "bitbucket-backup:deployment"

IN_PROGRESS, COMPLETE, FAILED = "in-progress", "complete", "failed"

# A disaster-recovery copy carries the catalog tags of its original plus where it was copied from: the id of the
# original (which also makes starting a copy idempotent) and its region.
COPY_OF_TAG = "bitbucket-backup:copy-of"
SOURCE_REGION_TAG = "bitbucket-backup:source-region"
# Refusals for rate or concurrency limits, on any of the services the copies use: retried by Step Functions.
COPY_RATE_LIMITS = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ResourceLimitExceeded",  # EC2: too many snapshot copies in progress to one destination region
    "SlowDown",
}

# What a restore creates (a DB instance or cluster, volumes) carries the catalog tags too, with its own statuses,
# plus the ARN of the restore execution that made it: the failure path removes exactly that execution's resources,
# and only while they are still `restoring` (IAM allows deleting nothing else).
RESTORE_TAG = "bitbucket-backup:restore-execution"
RESTORE_TARGET_TAG = "bitbucket-backup:restore-target"
RESTORING, RESTORED, RESTORE_FAILED = "restoring", "restored", "restore-failed"
# The identifiers of restored DB instances and clusters start with this: IAM lets the restore's roles create, tag and
# delete DB instances and clusters under it only, so a production database can never be tagged or deleted by them.
RESTORED_PREFIX = "restored-"


def deployment_id_for(account: str, region: str, stack_name: str) -> str:
    """A deployment's id: stable across updates (and a re-creation of the stack), unique per account and region."""
    return f"{account}/{region}/{stack_name}"


_deployment: ContextVar[str | None] = ContextVar("deployment_id", default=None)


def deployment_id() -> str:
    """This deployment's id: the stack passes it in the functions' environment (never in an event); the operator
    command line sets it for its thread with acting_for()."""
    value = _deployment.get() or environment.deployment_id()
    if not value:
        raise ConfigInvalid(
            f"this deployment's id ({environment.DEPLOYMENT_ID}, set by the stack) is missing: without it the catalog "
            "cannot tell this deployment's backups from another's, so nothing is listed, tagged or deleted"
        )
    return value


_archive_bucket: ContextVar[str | None] = ContextVar("archive_bucket", default=None)


def deployment_archive_bucket() -> str:
    """This deployment's archive bucket, "" when it has none: the stack passes it in the functions' environment; the
    operator command line sets it for its thread with acting_for() (from the stack's outputs)."""
    return _archive_bucket.get() or environment.archive_bucket()


@contextmanager
def acting_for(deployment: str, archive_bucket: str | None = None) -> Iterator[None]:
    """Within this block, in this thread, the catalog works on `deployment`'s artifacts (and its archives are in
    `archive_bucket`)."""
    token = _deployment.set(deployment)
    bucket = _archive_bucket.set(archive_bucket)
    try:
        yield
    finally:
        _archive_bucket.reset(bucket)
        _deployment.reset(token)


def catalog_tags(instance: str, backup_id: str, part: str, status: str = IN_PROGRESS) -> dict[str, str]:
    return {
        TOOL_TAG: TOOL_VALUE,
        DEPLOYMENT_TAG: deployment_id(),
        INSTANCE_TAG: instance,
        BACKUP_ID_TAG: backup_id,
        PART_TAG: part,
        STATUS_TAG: status,
        "Name": f"{backup_id}-{part}",
    }


def copy_tags(original: Artifact, instance: str, source_region: str) -> dict[str, str]:
    """The original's catalog tags (status in-progress until finalize) and its origin."""
    return catalog_tags(instance, original.backup_id, original.part) | {
        COPY_OF_TAG: original.id,
        SOURCE_REGION_TAG: source_region,
    }


def copy_details(tags: dict[str, str]) -> dict[str, str]:
    """What an artifact listing adds for a copy (nothing for an original)."""
    if COPY_OF_TAG not in tags:
        return {}
    return {"copy_of": tags[COPY_OF_TAG], "source_region": tags.get(SOURCE_REGION_TAG, "")}


def copy_refused(error: ClientError, what: str, original: Artifact, target: CopyTarget) -> Exception:
    """The exception a failed copy call becomes: rate limits are retried, anything else fails the run."""
    code = error_code(error)
    if code in COPY_RATE_LIMITS:
        return AwsRateLimited(f"copy-regions: {what} of {original.id} to {target.label} refused for a limit ({code})")
    return CopyFailed(f"copy-regions: {what} of {original.id} to {target.label} failed: {code}")


def restore_tags(instance: str, backup_id: str, part: str, execution: str, name: str) -> dict[str, str]:
    return catalog_tags(instance, backup_id, part, RESTORING) | {RESTORE_TAG: execution, "Name": name}


def made_by(tags: dict[str, str], instance: str, execution: str) -> bool:
    """Created by this restore execution and not yet handed over (status still `restoring`)."""
    return is_ours(tags, instance) and tags.get(RESTORE_TAG) == execution and tags.get(STATUS_TAG) == RESTORING


def is_ours(tags: dict[str, str], instance: str) -> bool:
    """Only resources with this tool's marker, this deployment's id and this instance's name are ever touched."""
    return (
        tags.get(TOOL_TAG) == TOOL_VALUE
        and tags.get(DEPLOYMENT_TAG) == deployment_id()
        and tags.get(INSTANCE_TAG) == instance
    )


@dataclass(frozen=True)
class Artifact:
    kind: str  # ebs-snapshot | rds-snapshot | rds-cluster-snapshot | s3-archive
    id: str
    part: str
    backup_id: str
    state: str  # normalised: pending | completed | error
    status: str  # the catalog status tag
    size_gb: float | None = None  # snapshots: the volume or allocated size; archives: the object size
    created: str | None = None
    details: dict[str, str] = field(default_factory=dict)
    # What the last restore drill found: "verified YYYY-MM-DD" or "drill failed YYYY-MM-DD" (see verification()).
    verified: str | None = None
    percent: int | None = None  # a snapshot's completion as AWS reports it (progress lines only, not cataloged)

    def summary(self) -> dict[str, object]:
        return ({"verified": self.verified} if self.verified else {}) | {
            "kind": self.kind,
            "id": self.id,
            "part": self.part,
            "state": self.state,
            "status": self.status,
            "size_gb": self.size_gb,
            **self.details,
        }


VERIFIED_TAG = "bitbucket-backup:verified"
VERIFY_FAILED_TAG = "bitbucket-backup:verify-failed"


def percent_of(value: object) -> int | None:
    """EC2's Progress ("45%") or RDS's PercentProgress (45) as 0..100, None when absent or not a percentage."""
    text = str(value).strip().removesuffix("%") if isinstance(value, str | int) else ""
    return int(text) if text.isdigit() and int(text) <= 100 else None


def verification(tags: dict[str, str]) -> str | None:
    """The restore drill's verdict recorded on an artifact's tags (the newer one if both are there)."""
    found = (
        [
            (tags[VERIFIED_TAG], "verified"),
        ]
        if tags.get(VERIFIED_TAG)
        else []
    )
    if tags.get(VERIFY_FAILED_TAG):
        found.append((tags[VERIFY_FAILED_TAG], "drill failed"))
    if not found:
        return None
    day, verdict = max(found)
    return f"{verdict} {day}"


class Catalog(ABC):
    """One part's artifacts, wherever they are (the originals here, the copies in a copy target, see at()): listed,
    tagged, locked, deleted and copied to another region. Every strategy is one; what it copies with is its
    SnapshotCopy or HostCopy side, and what restores it is its Restorer (see parts_for and restorers_for)."""

    part: str
    # Copied to the copy targets (disaster-recovery copies); the search index's snapshot is not (it lives in the
    # cluster's own repository).
    copied: bool = True

    def __init__(self, instance: InstanceConfig) -> None:
        self.instance = instance
        # Where this object lists, re-tags and deletes: None for the originals (the stack's region and account),
        # a copy target for the disaster-recovery copies there (see at()).
        self.target: CopyTarget | None = None

    def at(self, target: CopyTarget) -> Self:
        """This strategy working on the copies in `target` (its region, and its account through its role)."""
        bound = copy.copy(self)
        bound.target = target
        return bound

    def aws(self, service: str) -> Any:
        """A client where this strategy works: the function's own region, or the copy target."""
        return client(service) if self.target is None else target_client(service, self.target)

    @property
    def where(self) -> str:
        return self.target.label if self.target else "the source region"

    @abstractmethod
    def preflight(self) -> dict[str, object]:
        """Checks made while Bitbucket is live; raises PreflightFailed. Returns facts for the run log."""

    @abstractmethod
    def artifacts(self, backup_id: str | None = None) -> list[Artifact]:
        """This instance's artifacts of this strategy (of one backup, or all), found by the catalog tags."""

    @abstractmethod
    def tag(self, artifact: Artifact, tags: dict[str, str]) -> None:
        """Adds (or overwrites) tags on one of this tool's artifacts."""

    def set_status(self, artifact: Artifact, status: str) -> None:
        self.tag(artifact, {STATUS_TAG: status})

    @abstractmethod
    def delete(self, artifact: Artifact) -> None: ...

    def held(self, artifact: Artifact) -> str | None:
        """Why nothing may delete this artifact yet (EBS Snapshot Lock, S3 Object Lock), or None."""
        return None

    def lock(self, artifact: Artifact, mode: str, days: int) -> str | None:
        """Immutable backups: protects a complete artifact from deletion for `days` in `mode` (governance |
        compliance); returns what was done, or None when this kind of artifact has no lock (RDS, Aurora). Raises
        ClientError."""
        return None

    # --- disaster-recovery copies: the same catalog in a copy target -------------------------------------------------

    def copy_to(self, original: Artifact, source_region: str) -> str:
        """On a strategy bound to a target: start copying `original` there with copy_tags(); a copy already made is
        found by its tags and not made again. Returns the copy's id. Raises AwsRateLimited (retried) or CopyFailed."""
        target = self.target
        assert target is not None, "copy_to works on a strategy bound to a copy target (see at())"
        made = self.copy_of(original)
        if made is not None:
            return made.id  # a retried invocation
        return self.start_copy(original, target, copy_tags(original, self.instance.name, source_region), source_region)

    @abstractmethod
    def start_copy(self, original: Artifact, target: CopyTarget, tags: dict[str, str], source_region: str) -> str:
        """Starts one copy (sharing the source with the target's account first when that is another one)."""

    def unshare(self, original: Artifact, target: CopyTarget) -> bool:
        """Removes the share of `original` with a cross-account target's account that start_copy added (least
        exposure once the copy is complete). Idempotent; an original already gone counts as unshared. Returns whether
        this kind of artifact is shared at all (archives are not: the target's role reads them through the bucket
        policy). Raises ClientError."""
        return False

    def copy_of(self, original: Artifact) -> Artifact | None:
        """The copy of `original` in this strategy's target, if one was started."""
        for found in self.artifacts(original.backup_id):
            if found.details.get("copy_of") == original.id:
                return found
        return None


class SnapshotCopy(Catalog):
    """A part copied by a snapshot (EBS, RDS, Aurora): consistent once backup() returns; waited for after the unlock."""

    @abstractmethod
    def backup(self, backup_id: str) -> list[Artifact]:
        """Under the lock: start the copy; returns as soon as the copy is consistent (snapshot pending)."""


class HostCopy(Catalog):
    """A part copied on its host through Run Command (rsync, pg_dump, mysqldump) and archived to S3 after the unlock:
    each method starts the host commands and returns them, for the state machine to check."""

    @property
    @abstractmethod
    def instance_id(self) -> str:
        """The EC2 instance the copy runs on."""

    @abstractmethod
    def prepare(self, backup_id: str) -> list[HostCommand]:
        """While Bitbucket is live (install the host script, a first pass)."""

    @abstractmethod
    def copy(self, backup_id: str) -> list[HostCommand]:
        """Under the lock."""

    @abstractmethod
    def archive(self, backup_id: str, bitbucket_version: str | None = None) -> list[HostCommand]:
        """After the unlock: archive the copy on the host and upload it with the catalog tags."""

    def discard_on_host(self, backup_id: str) -> list[str]:
        """The failure path: removes what this run left on the host that no later run would (a snapshot); one line
        per action. Nothing by default."""
        return []


# A restorer's plan of its part and what its start() created (functions/models/restore_plans.py): each restorer
# declares its own; a caller that holds any restorer (restorer_for) passes on what the state machine handed it.
PlanT = TypeVar("PlanT", bound=Mapping[str, Any])
CreatedT = TypeVar("CreatedT", bound=Mapping[str, Any])


class Restorer(ABC, Generic[PlanT, CreatedT]):
    """Restores one part of a backup as NEW resources (beside its strategy's backup code, in *_restore.py). `plan`
    is what check() returned (JSON, carried by the state machine); `created` what start() did."""

    part: str
    # The fields of the restore target (target.home / target.database) this restorer understands; validate refuses
    # the others, so that a volume option given for an archive (or the reverse) is not silently ignored.
    target_fields: frozenset[str] = frozenset()

    def __init__(self, instance: InstanceConfig) -> None:
        self.instance = instance

    @abstractmethod
    def check(self, artifacts: list[Artifact], target: RestoreTarget) -> PlanT:
        """Checks the backup's artifacts of this part and the target; raises RestoreRefused, touches nothing.
        Returns the resolved plan of this part (names, classes, volumes), which later steps follow."""

    @abstractmethod
    def start(self, plan: PlanT, execution: str) -> CreatedT:
        """Starts creating the restored resources, each tagged with restore_tags(); idempotent on a retry."""

    @abstractmethod
    def progress(self, plan: PlanT, created: CreatedT) -> RestoreProgress:
        """Whether what start() created is ready; raises RestoreFailed if it can never be."""

    @abstractmethod
    def complete(self, plan: PlanT, created: CreatedT) -> None:
        """Hands the restored resources over: status `restored` (from then on the tool never deletes them)."""

    @abstractmethod
    def cleanup(self, plan: PlanT, execution: str, keep: bool, state: dict[str, Any]) -> list[str]:
        """After a failure: delete what this execution created and still holds `restoring` (or, with keep, tag
        it `restore-failed`). Never raises for a single resource; returns one line per action for the notice."""


class VolumeRestorer(Restorer[PlanT, CreatedT]):
    """A home restored as volumes, which can also be attached to a host and mounted there (EBS)."""

    @abstractmethod
    def attach(self, plan: PlanT, created: CreatedT, execution: str) -> Attached:
        """Puts the restored volumes on the target host."""

    @abstractmethod
    def mount(self, plan: PlanT, attach: Attached) -> Mounted:
        """Mounts what attach() attached at the configured mount points."""


@dataclass(frozen=True)
class RestoreProgress:
    ready: bool
    pending: list[str]
    # What the operator needs to know about the restored part (endpoint, volume ids), for output and notice.
    result: Mapping[str, Any] = field(default_factory=dict)  # restore_plans' *Restored, by strategy


@dataclass(frozen=True)
class Parts:
    """An instance's parts, each under the interface its callers need: in exactly one of `snapshots` and `hosts` (by
    part name), as the config's strategy says; every one is a Catalog."""

    snapshots: dict[str, SnapshotCopy]
    hosts: dict[str, HostCopy]
    order: tuple[str, ...]  # the configuration's (InstanceConfig.parts)

    @property
    def catalogs(self) -> list[Catalog]:
        """Every part's catalog, in the configuration's order: the home, the database, the Mesh nodes."""
        found: dict[str, Catalog] = {**self.snapshots, **self.hosts}
        return [found[part] for part in self.order if part in found]


def parts_for(instance: InstanceConfig) -> Parts:
    # Imported here so that a handler pays only for the strategies its instance uses.
    from functions.strategies import amazon_ebs, amazon_rds, host_copy

    snapshots: dict[str, SnapshotCopy] = {}
    hosts: dict[str, HostCopy] = {}
    # The shared home and each Mesh node's home: the same strategies, one part each.
    for part, home in instance.homes.items():
        if home.strategy == "amazon-ebs":
            snapshots[part] = amazon_ebs.EbsStrategy(instance, part)
        else:
            hosts[part] = host_copy.RsyncStrategy(instance, part)
    if instance.database.strategy == "postgresql":
        hosts["database"] = host_copy.PostgresStrategy(instance)
    elif instance.database.strategy == "mysql":
        hosts["database"] = host_copy.MysqlStrategy(instance)
    elif instance.database.strategy == "amazon-rds":
        snapshots["database"] = amazon_rds.RdsStrategy(instance)
    elif instance.database.strategy == "amazon-aurora":
        snapshots["database"] = amazon_rds.AuroraStrategy(instance)
    if instance.search_index is not None:
        from functions.strategies import search_snapshot

        snapshots["search"] = search_snapshot.SearchSnapshotStrategy(instance)
    return Parts(snapshots, hosts, tuple(instance.parts))


def strategies_for(instance: InstanceConfig) -> list[Catalog]:
    """Every part's catalog, the home first."""
    return parts_for(instance).catalogs


def strategy_for(instance: InstanceConfig, part: str) -> Catalog:
    for strategy in strategies_for(instance):
        if strategy.part == part:
            return strategy
    raise ValueError(f"instance '{instance.name}' has no '{part}' part to back up")


def restorers_for(instance: InstanceConfig) -> dict[str, Restorer[Any, Any]]:
    """Each part's restorer, by part name, in the configuration's order: the home, the database, the Mesh nodes."""
    from functions.strategies import amazon_ebs_restore, amazon_rds_restore, host_copy_restore

    found: dict[str, Restorer[Any, Any]] = {}
    for part, home in instance.homes.items():  # the shared home and each Mesh node's
        if home.strategy == "amazon-ebs":
            found[part] = amazon_ebs_restore.EbsRestorer(instance, part)
        else:
            found[part] = host_copy_restore.RsyncRestorer(instance, part)
    if instance.database.strategy == "postgresql":
        found["database"] = host_copy_restore.PostgresRestorer(instance)
    elif instance.database.strategy == "mysql":
        found["database"] = host_copy_restore.MysqlRestorer(instance)
    elif instance.database.strategy == "amazon-rds":
        found["database"] = amazon_rds_restore.RdsRestorer(instance)
    elif instance.database.strategy == "amazon-aurora":
        found["database"] = amazon_rds_restore.AuroraRestorer(instance)
    if instance.search_index is not None:
        from functions.strategies import search_restore

        found["search"] = search_restore.SearchRestorer(instance)
    return {part: found[part] for part in instance.parts if part in found}


def restorer_for(instance: InstanceConfig, part: str) -> Restorer[Any, Any]:
    found = restorers_for(instance).get(part)
    if found is None:
        raise ValueError(f"instance '{instance.name}' has no '{part}' part to restore")
    return found


def volume_restorer(instance: InstanceConfig, step: str) -> VolumeRestorer[EbsPlan, EbsCreated]:
    """The home's restorer, when its home is restored as volumes that can be attached (EBS)."""
    from functions.strategies import amazon_ebs_restore

    if instance.home.strategy != "amazon-ebs":
        raise RestoreRefused(f"{step}: the home of {instance.name} is not restored as volumes: nothing to attach")
    return amazon_ebs_restore.EbsRestorer(instance)
