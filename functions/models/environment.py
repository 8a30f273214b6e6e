"""The environment the stack gives each function: every variable's name (stacks/backup_stack.py and the workflow
constructs set them by these names) and every read, typed, in one place. A required variable that is missing fails
the step with its name (a function deployed by another version of the stack)."""

from __future__ import annotations

import os

RUNS_TABLE = "RUNS_TABLE"
TOPIC_ARN = "TOPIC_ARN"
CONFIG_PARAMETER_PREFIX = "CONFIG_PARAMETER_PREFIX"
ARCHIVE_BUCKET = "ARCHIVE_BUCKET"  # only where an instance archives (rsync, pg_dump)
DEPLOYMENT_ID = "DEPLOYMENT_ID"  # this deployment's id, on every artifact it makes
EXECUTION_TIMEOUT = "BACKUP_EXECUTION_TIMEOUT_SECONDS"  # the backup state machine's timeout
DRILL_MACHINE = "DRILL_RESTORE_STATE_MACHINE"  # the restore state machine's name when the drill runs it
HOST_DOCUMENT_PREFIX = "HOST_DOCUMENT_PREFIX"  # the stack's SSM documents
HOST_PROGRESS_LOG_GROUP = "HOST_PROGRESS_LOG_GROUP"  # where the hosts' long copies report progress (with archives)
SECRET_CACHE_SECONDS = "SECRET_CACHE_SECONDS"  # how long a Bitbucket secret is cached (default 300)
REGION = "AWS_REGION"  # set by Lambda
# The role Amazon OpenSearch Service assumes to write the search snapshots' S3 repository (only with such a domain).
SEARCH_SNAPSHOT_ROLE = "SEARCH_SNAPSHOT_ROLE_ARN"


def runs_table() -> str:
    return os.environ[RUNS_TABLE]


def runs_table_for_messages() -> str:
    """The run table's name for a message that must not fail itself: blank when unset."""
    return os.environ.get(RUNS_TABLE, "")


def topic_arn() -> str:
    return os.environ[TOPIC_ARN]


def config_prefix() -> str:
    return os.environ[CONFIG_PARAMETER_PREFIX].rstrip("/")


def archive_bucket() -> str:
    return os.environ.get(ARCHIVE_BUCKET, "")


def search_snapshot_role() -> str:
    return os.environ.get(SEARCH_SNAPSHOT_ROLE, "")


def deployment_id() -> str:
    return os.environ.get(DEPLOYMENT_ID, "")


def execution_timeout() -> str:
    return os.environ.get(EXECUTION_TIMEOUT, "")


def drill_machine() -> str:
    return os.environ.get(DRILL_MACHINE, "")


def started_by_drill(execution: str) -> bool:
    """Whether `execution` (an execution ARN, from the state machine's context) belongs to the drill's restore state
    machine: arn:aws:states:<region>:<account>:execution:<state machine name>:<execution name>."""
    machine = drill_machine()
    fields = execution.split(":")
    return bool(machine) and len(fields) == 8 and fields[5] == "execution" and fields[6] == machine


def host_document_prefix() -> str:
    return os.environ.get(HOST_DOCUMENT_PREFIX, "")


def host_progress_log_group() -> str:
    return os.environ.get(HOST_PROGRESS_LOG_GROUP, "")


def secret_cache_seconds() -> int:
    return int(os.environ.get(SECRET_CACHE_SECONDS, "300"))


def region() -> str:
    return os.environ.get(REGION, "")
