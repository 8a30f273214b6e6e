"""Errors the workflow raises. Their class names are the `Error` names Step Functions Retry and Catch match on,
so they are part of the state machine's contract: rename one and the definition must follow."""

from __future__ import annotations


class BackupError(Exception):
    """Base of every expected failure; the message says what happened without any secret in it."""


class InvalidInput(BackupError):
    """The execution input or a step's input does not parse."""


class ConfigInvalid(BackupError):
    """The instance's stored configuration is missing or wrong."""


class UnknownInstance(BackupError):
    """No configuration exists for the named instance."""


class PreflightFailed(BackupError):
    """A check made before the lock failed (secret, volumes, database, Bitbucket)."""


class BackupInProgress(BackupError):
    """Another execution of this tool is backing up the same instance."""


class BitbucketUnavailable(BackupError):
    """5xx or connection error after the client's own retries: worth a later retry for idempotent calls."""


class BitbucketRequestFailed(BackupError):
    """Bitbucket answered 4xx: not retried, the message names the step and the status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BitbucketBadResponse(BackupError):
    """Bitbucket (or a proxy in front of it) answered something that is not the documented JSON."""


class AlreadyLocked(BitbucketRequestFailed):
    """Someone else holds the maintenance lock; their lock is never touched."""


class LockNotConfirmed(BackupError):
    """The lock request may or may not have taken effect (timeout or dropped connection)."""


class BackupCancelled(BackupError):
    """The backup task ended while we waited (for example "Cancel backup" pressed in Bitbucket's UI)."""


class DrainTimeout(BackupError):
    """Bitbucket did not reach DRAINED within the configured time."""


class SnapshotFailed(BackupError):
    """A snapshot could not be created or ended in the error state."""


class SnapshotTimeout(BackupError):
    """Snapshots did not complete within the configured time."""


class CopyFailed(BackupError):
    """A disaster-recovery copy could not be started, ended in error or did not complete in time."""


class AwsRateLimited(BackupError):
    """AWS refused a call for its rate limits; Step Functions retries with back-off."""


class HostCommandFailed(BackupError):
    """An SSM Run Command step on a host failed, timed out or was cancelled."""


class RunDiscarded(BackupError):
    """A copy step finished after its run had already failed (Step Functions does not stop a Lambda still running
    when another branch fails): what it made was removed again, so that nothing is left behind the failure path."""


class RestoreRefused(BackupError):
    """A restore was refused before anything was created: the message names what is wrong (unknown or incomplete
    backup, another instance's backup, a target name in use, a target instance that is not stopped)."""


class RestoreFailed(BackupError):
    """A restore step failed after it started creating resources; the failure path removes what it created."""


class RestoreTimeout(BackupError):
    """The restored database or volumes did not become available within the configured time."""


class TargetNotReady(BackupError):
    """The target instance is still starting (or its SSM agent not yet online): Step Functions retries."""


class SearchUnavailable(BackupError):
    """The search cluster could not be reached, or answered 5xx, after the client's own retries."""


class SearchRequestFailed(BackupError):
    """The search cluster refused a request (4xx) or answered something that is not its documented JSON."""

    def __init__(self, message: str, status: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind  # the server's error type (snapshot_missing_exception ...), when it said one
