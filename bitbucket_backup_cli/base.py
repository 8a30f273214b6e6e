"""The command line's exit codes, its error, and the names it shares with the stack."""

from __future__ import annotations

OK, FAILED, USAGE, NOT_FOUND, AWS_ERROR, INTERRUPTED = 0, 1, 2, 3, 4, 130
DEFAULT_STACK = "BitbucketDiyBackup"
BACKUP, RESTORE, DRILL = "backup", "restore", "drill"
OUTPUT_KEYS = {BACKUP: "BackupStateMachine", RESTORE: "RestoreStateMachine", DRILL: "DrillStateMachine"}
# What `status --state` takes: the executions' statuses, and SKIPPED (succeeded without doing anything).
STATES = ("RUNNING", "SUCCEEDED", "SKIPPED", "FAILED", "TIMED_OUT", "ABORTED")
# A backup id: the instance name, the date and the time (functions/models/events.py).
BACKUP_ID = r"^[a-z][a-z0-9-]*-\d{8}-\d{6}$"
# The stack's output naming its archive bucket, and the bucket's construct id (stacks/backup_stack.py), which
# CloudFormation puts in the bucket's name after the stack's: "<stack>-archives<hash>-<random>".
ARCHIVE_OUTPUT, ARCHIVE_CONSTRUCT = "ArchiveBucket", "Archives"
# The log group the hosts report their long copies' progress to, named the same way: "<stack>-HostProgress<hash>-…".
HOST_PROGRESS_OUTPUT, HOST_PROGRESS_CONSTRUCT = "HostProgressLogGroup", "HostProgress"
NOT_FOUND_CODES = {"ExecutionDoesNotExist", "StateMachineDoesNotExist", "ParameterNotFound", "InvalidArn"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class CliError(Exception):
    """Ends the command with one line on stderr and this exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
