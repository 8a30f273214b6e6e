"""The command line's exit codes, its error, and the names it shares with the stack."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


OK, FAILED, USAGE, NOT_FOUND, AWS_ERROR, INTERRUPTED = 0, 1, 2, 3, 4, 130
DEFAULT_STACK = "BitbucketDiyBackup"
BACKUP, RESTORE = "backup", "restore"
OUTPUT_KEYS = {BACKUP: "BackupStateMachine", RESTORE: "RestoreStateMachine"}
# The stack's output naming its archive bucket, and the bucket's construct id (stacks/backup_stack.py), which
# CloudFormation puts in the bucket's name after the stack's: "<stack>-archives<hash>-<random>".
ARCHIVE_OUTPUT, ARCHIVE_CONSTRUCT = "ArchiveBucket", "Archives"
NOT_FOUND_CODES = {"ExecutionDoesNotExist", "StateMachineDoesNotExist", "ParameterNotFound", "InvalidArn"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class CliError(Exception):
    """Ends the command with one line on stderr and this exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
