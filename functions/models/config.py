"""The configuration an administrator writes in cdk.json, validated at synth time and read by the Lambdas.

The same models serve both sides so that a config that synthesizes is a config the functions accept.
Nothing here is secret: credentials live in Secrets Manager and only the secret's name or ARN is configured.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from functions.models.base import Strict
from functions.models.part_config import (
    ABS_PATH,
    COPY_STRATEGIES,
    EC2_INSTANCE_ID,
    IN_HOME_STRATEGIES,
    SEARCH_PART,
    ZERO_DOWNTIME_STRATEGIES,
    CopiedHomeConfig,
    DatabaseConfig,
    EbsHomeConfig,
    FsLevelDatabaseConfig,
    HomeConfig,
    MeshNodeConfig,
    NetworkConfig,
    NoHomeConfig,
    NoSearchConfig,
    RsyncHomeConfig,
    SearchConfig,
    SearchIndexConfig,
)
from functions.models.schedule import longest_gap_hours, plain_minute, schedule_problem, timezone_problem

# RDS snapshot identifiers are built from the instance name, so the name must be a valid prefix of one.
INSTANCE_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
SCHEDULE = re.compile(r"^(cron\(.+\)|rate\(\d+ (minute|minutes|hour|hours|day|days)\)|at\(.+\))$")


def repeated(values: list[str]) -> list[str]:
    """The values listed more than once, sorted."""
    return sorted({v for v in values if values.count(v) > 1})


class ArchiveConfig(Strict):
    """Where the copy-type strategies (rsync, postgresql) write the archive on the host before uploading it.
    How many are kept follows keep_backups."""

    # A directory on the host with room for one compressed archive (it is removed after the upload).
    work_path: str = Field(default="/var/lib/bitbucket-diy-backup/archive", pattern=ABS_PATH)
    compressor: Literal["auto", "gzip", "zstd"] = "auto"
    command_timeout_seconds: int = Field(default=4 * 3600, ge=30, le=48 * 3600)


class DrillDatabaseConfig(Strict):
    """RDS/Aurora: how the drill logs in to the restored copy (a restore keeps the original's master credentials)."""

    secret: str = Field(pattern=r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$")
    user: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")
    dbname: str = Field(default="bitbucket", pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


class DrillConfig(Strict):
    """The scheduled restore drill: restore the newest complete backup into throw-away resources, check them on a
    small drill host through SSM (the database answers and has Bitbucket's tables, a sample of the repositories
    passes git fsck), tag the backup verified (or verify-failed), tear everything down."""

    schedule: str
    # The host that runs the checks (SSM agent, psql, git, the AWS CLI); archives are restored onto it. Required when
    # anything is checked on a host: a rsync home, a postgresql database, or an RDS/Aurora one with `database`.
    host_instance_id: str | None = Field(default=None, pattern=EC2_INSTANCE_ID.pattern)
    sample_repositories: int = Field(default=5, ge=0, le=1000)
    work_path: str = Field(default="/var/lib/bitbucket-diy-backup/drill", pattern=ABS_PATH)
    keep_on_failure: bool = False
    database: DrillDatabaseConfig | None = None
    # Tables the restored database must have: Bitbucket's projects, repositories and users (adjust to your version's
    # schema if it differs; the drill's failure message names the missing ones).
    tables: list[Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]] = Field(
        default_factory=lambda: ["project", "repository", "sta_normal_user"], min_length=1
    )
    command_timeout_seconds: int = Field(default=3600, ge=30, le=48 * 3600)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, schedule: str) -> str:
        if not SCHEDULE.match(schedule) or schedule.startswith("at("):
            raise ValueError(f"'{schedule}' is not an EventBridge Scheduler cron(…) or rate(…)")
        problem = schedule_problem(schedule)
        if problem:
            raise ValueError(f"'{schedule}': {problem}")
        return schedule


class RestoreConfig(Strict):
    """Where a restore may write. An archive (rsync home) is extracted only into a directory strictly below one of
    `allowed_roots` (a drill also below its drill.work_path); none by default: a manual archive restore needs one."""

    allowed_roots: list[Annotated[str, Field(pattern=ABS_PATH)]] = Field(default_factory=list, max_length=20)

    @field_validator("allowed_roots")
    @classmethod
    def _plain(cls, roots: list[str]) -> list[str]:
        for root in roots:
            if "//" in root or any(part in (".", "..") for part in root.split("/")):
                raise ValueError(f"'{root}' must be a plain absolute path (no '.', '..' or '//')")
            if root.count("/") < 2:
                raise ValueError(f"'{root}' is a top-level directory: name a directory below it (e.g. /srv/restore)")
        return roots


REGION = r"^[a-z]{2}(-[a-z]+)+-\d$"
KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):key/[A-Za-z0-9-]+$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(?P<account>\d{12}):role/[A-Za-z0-9+=,.@_/-]{1,512}$")
BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


class CopyTarget(Strict):
    """A disaster-recovery copy of every backup in another region (and optionally another account).

    - kms_key_id: the destination's KMS key (a key ARN in `region`; aliases are refused because IAM grants are on
      keys). EBS copies are always encrypted (with this key, else the destination's default EBS key); RDS/Aurora
      copies use it when the source is encrypted, which a cross-region copy requires: it is therefore required
      when the database is on RDS or Aurora.
    - account_id + role_arn: the copies are made by that role in that account (after sharing the source with the
      account), so the destination account owns them; the role's trust policy must allow this stack's functions.
    - archive_bucket: the S3 bucket in `region` the archives of rsync/postgresql parts are copied to (required then).
    - keep_backups: how many complete copies are kept there; the instance's keep_backups when not given.
    """

    region: str = Field(pattern=REGION)
    kms_key_id: str | None = None
    account_id: str | None = Field(default=None, pattern=r"^\d{12}$")
    role_arn: str | None = None
    archive_bucket: str | None = Field(default=None, pattern=BUCKET)
    keep_backups: int | None = Field(default=None, ge=0, le=1000)

    @model_validator(mode="after")
    def _consistent(self) -> CopyTarget:
        if (self.account_id is None) != (self.role_arn is None):
            raise ValueError(f"copy to {self.region}: account_id and role_arn go together (cross-account copies)")
        if self.role_arn is not None:
            role = ROLE_ARN.match(self.role_arn)
            if not role:
                raise ValueError(f"copy to {self.region}: role_arn '{self.role_arn}' is not an IAM role ARN")
            if role["account"] != self.account_id:
                raise ValueError(f"copy to {self.region}: role_arn is not in account_id {self.account_id}")
        if self.kms_key_id is not None:
            key = KMS_KEY_ARN.match(self.kms_key_id)
            if not key:
                raise ValueError(
                    f"copy to {self.region}: kms_key_id '{self.kms_key_id}' is not a KMS key ARN "
                    "(arn:aws:kms:REGION:ACCOUNT:key/ID; aliases are not accepted)"
                )
            if key["region"] != self.region:
                raise ValueError(f"copy to {self.region}: kms_key_id is a key of {key['region']}, not {self.region}")
            if self.account_id and key["account"] != self.account_id:
                raise ValueError(f"copy to {self.region}: kms_key_id is not a key of account {self.account_id}")
        return self

    @property
    def label(self) -> str:
        """`eu-central-1` or `eu-central-1/210987654321`: how messages and the catalog name this destination."""
        return self.region + (f"/{self.account_id}" if self.account_id else "")


# The drain-poll function's timeout is 90 s; a slice leaves it room to answer.
DRAIN_SLICE_MAX_SECONDS = 80

# Step Functions keeps at most 25,000 history events per execution; one poll round costs about ten.
MAX_POLL_ROUNDS = 2000


def _rounds(timeout: float, interval: float) -> float:
    # A zero interval still takes a few hundred milliseconds per round (one Lambda invocation).
    return timeout / max(interval, 0.25)


class TimingConfig(Strict):
    """Intervals and bounds of the workflow. Tests and the rehearsal shrink them; defaults suit production."""

    # Under the lock every wait ends within a fraction of a second: the drain state and the locked host copies
    # (rsync's locked pass, pg_dump) are checked every few tenths of a second inside the invocation.
    drain_poll_interval_seconds: float = Field(default=0.2, ge=0.05, le=10)
    # One invocation checks the drain state for at most this long (and less than its Lambda timeout), then the
    # state machine waits poll_interval_seconds and invokes it again.
    drain_poll_slice_seconds: int = Field(default=60, ge=1, le=DRAIN_SLICE_MAX_SECONDS)
    poll_interval_seconds: int = Field(default=0, ge=0, le=300)
    drain_timeout_seconds: int = Field(default=600, ge=1, le=7200)
    locked_host_poll_interval_seconds: float = Field(default=0.2, ge=0.05, le=10)
    snapshot_poll_interval_seconds: int = Field(default=30, ge=0, le=3600)
    snapshot_timeout_seconds: int = Field(default=4 * 3600, ge=1, le=86400)
    http_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    http_retries: int = Field(default=3, ge=0, le=10)
    http_backoff_seconds: float = Field(default=1.0, ge=0, le=60)
    # The restore state machine: how often it checks the restored database and volumes, and for how long.
    restore_poll_interval_seconds: int = Field(default=30, ge=0, le=3600)
    restore_timeout_seconds: int = Field(default=4 * 3600, ge=1, le=86400)
    # How often the state machine checks an SSM Run Command before the lock (rsync's first pass) and after the
    # unlock (archive); under the lock, locked_host_poll_interval_seconds applies.
    host_poll_interval_seconds: int = Field(default=15, ge=0, le=600)
    # Disaster-recovery copies to other regions: the first copy of a volume is a full one and may take hours.
    copy_poll_interval_seconds: int = Field(default=60, ge=0, le=3600)
    copy_timeout_seconds: int = Field(default=12 * 3600, ge=1, le=2 * 86400)

    @model_validator(mode="after")
    def _history_fits(self) -> TimingConfig:
        for name, timeout, interval in (
            ("drain", self.drain_timeout_seconds, self.drain_poll_slice_seconds + self.poll_interval_seconds),
            ("snapshot", self.snapshot_timeout_seconds, self.snapshot_poll_interval_seconds),
            ("restore", self.restore_timeout_seconds, self.restore_poll_interval_seconds),
            ("copy", self.copy_timeout_seconds, self.copy_poll_interval_seconds),
        ):
            if _rounds(timeout, interval) > MAX_POLL_ROUNDS:
                raise ValueError(
                    f"{name} timeout / poll interval allows more than {MAX_POLL_ROUNDS} polls, which could "
                    "exceed Step Functions' 25,000-event history: raise the interval or lower the timeout"
                )
        return self

    @property
    def longest_run_seconds(self) -> int:
        return self.drain_timeout_seconds + self.snapshot_timeout_seconds


class ImmutableConfig(Strict):
    """Immutable backups: once a backup is complete its EBS snapshots are locked (EBS Snapshot Lock) and its archives
    retained (S3 Object Lock), in the originals' region and in every copy target, for `days` (default: keep_backups
    times the longest gap of the schedule, so a backup stays locked for as long as retention would keep it).
    compliance: nobody can delete or unlock them before then, not even the account's root user; governance: users
    with explicit permission can. RDS and Aurora snapshots have no lock: copy them to another account."""

    mode: Literal["governance", "compliance"] = "compliance"
    days: int | None = Field(default=None, ge=1, le=36500)


class InstanceConfig(Strict):
    """One Bitbucket instance: where it is, how to log in, how to copy it, when, and how many to keep."""

    name: str = Field(min_length=1, max_length=40)
    base_url: str
    # Secrets Manager secret (name or ARN) holding {"username": …, "password": …} or {"token": …}.
    credentials_secret: str = Field(min_length=1)
    network: NetworkConfig | None = None
    home: HomeConfig
    database: DatabaseConfig
    # Data Center 8+: the Mesh nodes whose homes are copied under the same lock (see MeshNodeConfig).
    mesh_nodes: list[MeshNodeConfig] = Field(default_factory=list, max_length=20)
    # The search index (OpenSearch / Elasticsearch): a snapshot started under the lock, waited for after the unlock.
    search: SearchConfig = NoSearchConfig(strategy="none")
    # Data Center 4.8+: no lock and no drain; only atomic snapshot strategies (checked below and at run time).
    zero_downtime: bool = False
    schedule: str | None = None
    schedule_timezone: str = "UTC"
    keep_backups: int = Field(default=7, ge=0, le=1000)
    timing: TimingConfig = TimingConfig()
    archive: ArchiveConfig = ArchiveConfig()
    notification_emails: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]] = Field(
        default_factory=list
    )
    notify_on_success: bool = False
    verify_tls: bool = True
    # Path of a CA bundle inside the Lambda asset, for a Bitbucket behind a private CA.
    ca_bundle: str | None = None
    # The only way to accept an http:// base_url or verify_tls false: the password and the maintenance tokens then
    # cross the network readable (or to whoever impersonates Bitbucket). Test systems only; every run warns.
    insecure_connection_allowed_for_testing: bool = False
    # Disaster-recovery copies of every backup, made after the unlock (see CopyTarget).
    copies: list[CopyTarget] = Field(default_factory=list, max_length=5)
    # Monitoring: alarm when the newest complete backup is older than this (0 = no staleness alarm); default from
    # the schedule (see staleness_limit_hours). A fixed minute offset of the schedule (default: staggered by the stack).
    max_backup_age_hours: int | None = Field(default=None, ge=0, le=24 * 366)
    schedule_offset_minutes: int | None = Field(default=None, ge=0, le=59)
    # The scheduled restore drill (see DrillConfig); none by default.
    drill: DrillConfig | None = None
    # Where restores may write (see RestoreConfig).
    restore: RestoreConfig = RestoreConfig()
    # Immutable backups (see ImmutableConfig); off by default, recommended for production.
    immutable: ImmutableConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not INSTANCE_NAME.match(name):
            raise ValueError(f"'{name}' must be lower-case letters, digits and single hyphens, starting with a letter")
        return name

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", url):
            raise ValueError(f"'{url}' is not an http(s) URL without query or fragment")
        return url.rstrip("/")

    @field_validator("zero_downtime")
    @classmethod
    def _atomic_copies(cls, zero_downtime: bool, info: ValidationInfo) -> bool:
        if not zero_downtime:
            return zero_downtime
        refused = [
            f"{part}.strategy '{config.strategy}'"
            for part, allowed in ZERO_DOWNTIME_STRATEGIES.items()
            if (config := info.data.get(part)) is not None and config.strategy not in allowed
        ]
        if refused:
            raise ValueError(
                f"is true but {' and '.join(refused)} cannot copy without the lock (not an atomic snapshot); "
                "zero downtime needs home 'amazon-ebs' and database 'amazon-rds' or 'amazon-aurora' (or 'none')"
            )
        return zero_downtime

    @field_validator("schedule_timezone")
    @classmethod
    def _schedule_timezone(cls, name: str) -> str:
        problem = timezone_problem(name)
        if problem:
            raise ValueError(f"'{name}' {problem}")
        return name

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, schedule: str | None) -> str | None:
        if schedule is not None and not SCHEDULE.match(schedule):
            raise ValueError(f"'{schedule}' is not an EventBridge Scheduler cron(…), rate(…) or at(…)")
        problem = schedule_problem(schedule) if schedule else None
        if problem:
            raise ValueError(f"'{schedule}': {problem}")
        return schedule

    @model_validator(mode="after")
    def _secure_connection(self) -> InstanceConfig:
        if self.insecure_connection_allowed_for_testing:
            return self
        if self.base_url.lower().startswith("http://"):
            raise ValueError(
                f"base_url '{self.base_url}' is plain http: the Bitbucket password and the maintenance tokens would "
                "cross the network unencrypted. Use https://, or, for a test system only, set "
                "insecure_connection_allowed_for_testing: true"
            )
        if self.search_index and self.search_index.endpoint.lower().startswith("http://"):
            raise ValueError(
                f"search.endpoint '{self.search_index.endpoint}' is plain http: the search cluster's credentials (or "
                "signed requests) would cross the network unencrypted. Use https://, or, for a test system only, set "
                "insecure_connection_allowed_for_testing: true"
            )
        if not self.verify_tls:
            raise ValueError(
                "verify_tls is false: anyone between the functions and Bitbucket could pose as Bitbucket and "
                "collect the password. For a private CA set ca_bundle instead, or, for a test system only, set "
                "insecure_connection_allowed_for_testing: true"
            )
        return self

    @property
    def connection_warning(self) -> str | None:
        """Said in every run's log and notifications while the connection to Bitbucket is insecure."""
        problems = [
            problem
            for problem, insecure in (
                ("plain http (unencrypted)", self.base_url.lower().startswith("http://")),
                (
                    "plain http to the search cluster",
                    bool(self.search_index and self.search_index.endpoint.lower().startswith("http://")),
                ),
                ("TLS certificates not verified", not self.verify_tls),
            )
            if insecure
        ]
        if not problems:
            return None
        return (
            f"INSECURE connection to Bitbucket ({', '.join(problems)}), allowed by "
            "insecure_connection_allowed_for_testing: the password and the maintenance tokens can be read or "
            "captured on the network. Never use this for a production instance"
        )

    @property
    def parts(self) -> list[str]:
        """The parts a backup of this instance consists of, in a stable order: the home, the database, the nodes, the
        search index."""
        copied = (("home", self.home), ("database", self.database))
        own = [p for p, s in copied if s.strategy != "none" and s.strategy not in IN_HOME_STRATEGIES]
        search = [SEARCH_PART] if self.search_index else []
        return own + [node.part for node in self.mesh_nodes] + search

    @property
    def search_index(self) -> SearchIndexConfig | None:
        """The search index's snapshot settings, None when it is not backed up."""
        return None if isinstance(self.search, NoSearchConfig) else self.search

    @property
    def mesh_parts(self) -> list[str]:
        return [node.part for node in self.mesh_nodes]

    @property
    def homes(self) -> dict[str, CopiedHomeConfig]:
        """Every home that is copied, by part: the shared home (unless none) and each Mesh node's."""
        shared: dict[str, CopiedHomeConfig] = {}
        if not isinstance(self.home, NoHomeConfig):
            shared["home"] = self.home
        return shared | {node.part: node.home for node in self.mesh_nodes}

    def home_of(self, part: str) -> CopiedHomeConfig:
        """The home configuration of `part` ("home" or a Mesh node's `mesh-<name>`)."""
        found = self.homes.get(part)
        if found is None:
            raise ValueError(f"instance '{self.name}' has no home part '{part}'")
        return found

    @model_validator(mode="after")
    def _mesh_nodes(self) -> InstanceConfig:
        dupes = repeated([node.name for node in self.mesh_nodes])
        if dupes:
            raise ValueError(f"mesh_nodes: {', '.join(dupes)} is listed twice")
        shared = repeated([h.instance_id for h in self.homes.values()])
        if shared:
            raise ValueError(
                f"mesh_nodes: EC2 instance {', '.join(shared)} holds more than one home: each Mesh node is a host of "
                "its own"
            )
        if self.zero_downtime:
            copied = [n.name for n in self.mesh_nodes if not isinstance(n.home, EbsHomeConfig)]
            if copied:
                raise ValueError(
                    f"zero_downtime is true but Mesh node {', '.join(copied)} is copied by rsync, which needs the lock"
                )
        return self

    @property
    def parts_text(self) -> str:
        """The parts as a person reads them: `home, database`, or `home (with the database: ...)`."""
        if isinstance(self.database, FsLevelDatabaseConfig):
            return f"home, with PostgreSQL's data directory {self.database.data_directory} in its snapshot"
        return ", ".join(self.parts)

    @model_validator(mode="after")
    def _database_in_the_home(self) -> InstanceConfig:
        """postgresql-fslevel: one snapshot must hold the data directory and the home at the same moment."""
        database = self.database
        if not isinstance(database, FsLevelDatabaseConfig):
            return self
        data = database.data_directory.rstrip("/")

        def under(root: str) -> bool:
            root = root.rstrip("/")
            return data == root or data.startswith(root + "/")

        home = self.home
        if isinstance(home, EbsHomeConfig) and any(under(m) for m in home.mount_points):
            return self
        if isinstance(home, RsyncHomeConfig) and home.snapshot and under(home.home_path):
            return self
        raise ValueError(
            f"database.strategy postgresql-fslevel: the data directory {database.data_directory} must lie under a "
            "mount point of an amazon-ebs home (home.mount_points) or in the home_path of an rsync home with "
            "snapshot btrfs: only then does one snapshot hold the database and the home at the same moment"
        )

    @model_validator(mode="after")
    def _something_to_copy(self) -> InstanceConfig:
        if not self.parts:
            raise ValueError("home and database are both 'none': there is nothing to back up")
        return self

    @model_validator(mode="after")
    def _monitoring(self) -> InstanceConfig:
        gap = longest_gap_hours(self.schedule) if self.schedule else None
        if self.max_backup_age_hours and gap and self.max_backup_age_hours < gap:
            raise ValueError(
                f"max_backup_age_hours {self.max_backup_age_hours} is shorter than the {gap:g} h between two runs of "
                f"the schedule: the staleness alarm would fire between two healthy backups"
            )
        if self.schedule_offset_minutes is not None and (not self.schedule or plain_minute(self.schedule) is None):
            raise ValueError("schedule_offset_minutes needs a cron(…) schedule whose minute field is one number")
        return self

    @property
    def staleness_limit_hours(self) -> int | None:
        """Alarm when the newest complete backup is older than this; None: no staleness alarm. Default: twice the
        longest gap between scheduled runs, and at least that gap plus the longest possible run plus an hour (a
        backup counts from its start); none for manual-only and one-time (at) schedules."""
        if self.max_backup_age_hours is not None:
            return self.max_backup_age_hours or None
        gap = longest_gap_hours(self.schedule) if self.schedule else None
        if gap is None:
            return None
        longest_run = self.timing.longest_run_seconds / 3600
        return math.ceil(max(2 * gap, gap + longest_run + 1))

    @property
    def uses_archive(self) -> bool:
        return (
            any(isinstance(h, RsyncHomeConfig) for h in self.homes.values())
            or self.database.strategy in COPY_STRATEGIES
            # The search snapshots' catalog entries (and an Amazon OpenSearch domain's S3 repository) live there.
            or self.search_index is not None
        )

    @model_validator(mode="after")
    def _copies(self) -> InstanceConfig:
        dupes = repeated([c.label for c in self.copies])
        if dupes:
            raise ValueError(f"copies: {', '.join(dupes)} is listed twice")
        for target in self.copies:
            if self.uses_archive and not target.archive_bucket:
                raise ValueError(
                    f"copies: {target.label}: archive_bucket (a bucket in {target.region}) is required, "
                    "this instance's rsync/postgresql parts are archived to S3"
                )
            if self.database.strategy in ("amazon-rds", "amazon-aurora") and not target.kms_key_id:
                raise ValueError(
                    f"copies: {target.label}: kms_key_id (a key in {target.region}) is required, a cross-region "
                    "copy of an encrypted RDS/Aurora snapshot needs a key of the destination region"
                )
        return self

    @model_validator(mode="after")
    def _drill(self) -> InstanceConfig:
        drill = self.drill
        if drill is None:
            return self
        if drill.database is not None and self.database.strategy not in ("amazon-rds", "amazon-aurora"):
            raise ValueError(
                f"drill.database applies to amazon-rds and amazon-aurora only; the drill checks a "
                f"{self.database.strategy} database with the instance's own settings"
            )
        needs_host = [
            what
            for what, needed in (
                ("the rsync home (git fsck)", self.home.strategy == "rsync"),
                ("the rsync Mesh nodes (git fsck)", any(isinstance(n.home, RsyncHomeConfig) for n in self.mesh_nodes)),
                ("the dumped database (tables)", self.database.strategy in COPY_STRATEGIES),
                ("the restored database (drill.database)", drill.database is not None),
            )
            if needed
        ]
        if needs_host and drill.host_instance_id is None:
            raise ValueError(f"drill.host_instance_id is required to check {' and '.join(needs_host)}")
        return self

    @model_validator(mode="after")
    def _lock_days(self) -> InstanceConfig:
        if self.immutable is not None and self.immutable.days is None and self.lock_days is None:
            raise ValueError(
                "immutable: days is required here: the lock's length is derived from keep_backups and the schedule, "
                "and this instance has "
                + ("keep_backups 0 (keep all)" if self.keep_backups == 0 else "no recurring schedule")
            )
        return self

    @property
    def lock_days(self) -> int | None:
        """How long a complete backup stays locked: immutable.days, else keep_backups times the schedule's longest
        gap (when the backup would be pruned), in whole days; None when not immutable (or not derivable)."""
        if self.immutable is None:
            return None
        if self.immutable.days is not None:
            return self.immutable.days
        gap = longest_gap_hours(self.schedule) if self.schedule else None
        if gap is None or self.keep_backups == 0:
            return None
        return max(1, math.ceil(self.keep_backups * gap / 24))

    def keep_copies(self, target: CopyTarget) -> int:
        return self.keep_backups if target.keep_backups is None else target.keep_backups

    @property
    def longest_run_seconds(self) -> int:
        """Drain, snapshot and (with copies) copy waits: bounds the execution and the run guard."""
        timing = self.timing
        return timing.longest_run_seconds + (timing.copy_timeout_seconds if self.copies else 0)


class ArchiveObjectLock(Strict):
    """S3 Object Lock on the archive bucket: every archive version is kept at least `days` (GOVERNANCE: privileged
    users may lift it; COMPLIANCE: nobody can, not even the account root). Pruning skips archives still locked."""

    mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"
    days: int = Field(ge=1, le=3650)


class ProjectConfig(Strict):
    """The `bitbucket-backup` object in cdk.json's context."""

    instances: list[InstanceConfig] = Field(min_length=1)
    notification_emails: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]] = Field(
        default_factory=list
    )
    # Lambda bundling: "local" pip-installs the dependencies (needs PyPI), "none" ships sources only.
    bundling: Literal["local", "none"] = "local"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The archive bucket (rsync / postgresql strategies) is always versioned; optionally also object-locked. Object
    # Lock can only be chosen when the bucket is created (a later change needs a new bucket).
    archive_object_lock: ArchiveObjectLock | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> ProjectConfig:
        dupes = repeated([i.name for i in self.instances])
        if dupes:
            raise ValueError(f"instance names must be unique; repeated: {', '.join(dupes)}")
        return self


class ConfigError(Exception):
    """A configuration that cannot work; the message names the instance and the field."""


def _where(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    parts = list(loc)
    prefix = ""
    if len(parts) >= 2 and parts[0] == "instances" and isinstance(parts[1], int):
        instances = raw.get("instances") or []
        index = parts[1]
        name = instances[index].get("name") if index < len(instances) and isinstance(instances[index], dict) else None
        prefix = f"instance '{name}'" if name else f"instances[{index}]"
        parts = parts[2:]
    # Discriminated unions add the chosen strategy to the location; it is noise to a reader.
    field = ".".join(
        str(p)
        for p in parts
        if p not in ("amazon-ebs", "amazon-rds", "amazon-aurora", *COPY_STRATEGIES, *IN_HOME_STRATEGIES, "none")
    )
    return f"{prefix}: {field}" if prefix and field else prefix or field or "config"


def format_validation_error(error: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required"
        elif item["type"] == "extra_forbidden":
            message = "is not a known field"
        loc = tuple(item["loc"])
        if item["type"] == "union_tag_invalid":
            ctx = item.get("ctx", {})
            loc, message = (*loc, "strategy"), f"'{ctx.get('tag')}' is not one of {ctx.get('expected_tags')}"
        elif item["type"] == "union_tag_not_found":
            loc, message = (*loc, "strategy"), "is required"
        lines.append(f"{_where(loc, raw)} {message}")
    return "\n".join(lines)


def parse_project_config(raw: Any) -> ProjectConfig:
    if not isinstance(raw, dict):
        raise ConfigError("cdk.json context 'bitbucket-backup' must be an object with an 'instances' list")
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, raw)) from None


def parse_instance_config(raw: Any) -> InstanceConfig:
    try:
        return InstanceConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, raw if isinstance(raw, dict) else {})) from None
