"""Bitbucket Server / Data Center maintenance API client (see shared/reference/bitbucket-maintenance-api.md).

Retry policy, per call: idempotent calls (poll, progress, unlock, cancel, status) are retried here on 5xx and
connection errors with exponential back-off; the lock and the start of the backup are never retried blindly,
because a retried lock cannot get the first token back. 4xx is never retried. Error texts name the step and
the HTTP status, never a URL with its query (tokens travel in the query string).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from functions.errors import (
    AlreadyLocked,
    BackupError,
    BitbucketBadResponse,
    BitbucketRequestFailed,
    BitbucketUnavailable,
    LockNotConfirmed,
)
from functions.observability import logger, register_secret

TOKEN_HEADER = "X-Atlassian-Maintenance-Token"


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        register_secret(self.password)
        register_secret(self.token)

    def __repr__(self) -> str:  # never print the secret, even in a debugger or a traceback
        return f"Credentials(username={self.username!r}, password=***, token=***)"


@dataclass(frozen=True)
class Lock:
    unlock_token: str
    owner: str


@dataclass(frozen=True)
class BackupTask:
    id: str
    cancel_token: str
    state: str


@dataclass(frozen=True)
class MaintenanceState:
    db_state: str
    scm_state: str
    task_state: str | None
    task_message: str | None
    percentage: int | None

    @property
    def drained(self) -> bool:
        return self.db_state == "DRAINED" and self.scm_state == "DRAINED"


class BitbucketClient:
    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 1.0,
        verify: bool | str = True,
        refresh: Callable[[], Credentials] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Called once after a 401: the secret may have been rotated since the credentials were cached.
        self._refresh = refresh
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._session = requests.Session()
        self._session.verify = verify
        self._session.headers.update({"Accept": "application/json", "Content-Type": "application/json"})
        self._use(credentials)

    def _use(self, credentials: Credentials) -> None:
        self._session.headers.pop("Authorization", None)
        self._session.auth = None
        if credentials.token:
            self._session.headers["Authorization"] = f"Bearer {credentials.token}"
        else:
            self._session.auth = (credentials.username or "", credentials.password or "")

    # --- the maintenance sequence -------------------------------------------------------------------

    def lock(self) -> Lock:
        try:
            body = self._json("lock", self._send("lock", "POST", "/mvc/maintenance/lock", retry=False))
            token = body.get("unlockToken")
            if not isinstance(token, str) or not token:
                raise BitbucketBadResponse("lock: the answer has no unlockToken")
        except BitbucketRequestFailed as error:
            if error.status == 409:
                raise AlreadyLocked(
                    "lock: Bitbucket is already locked by someone else (HTTP 409); their lock was left alone", 409
                ) from None
            raise
        except (BitbucketUnavailable, BitbucketBadResponse) as error:
            # The request may have taken effect although its answer was lost or mangled: then the token is
            # unknown and the lock must be reported as unconfirmed (unlock by hand), not as a plain failure.
            if self._maybe_locked():
                raise LockNotConfirmed(
                    f"lock: {str(error).removeprefix('lock: ')}; Bitbucket is now in maintenance mode but the "
                    "unlock token is unknown, so it must be unlocked by hand (see README, Troubleshooting)"
                ) from None
            raise
        register_secret(token)
        owner = body.get("owner")
        return Lock(unlock_token=token, owner=str(owner.get("name", "")) if isinstance(owner, dict) else "")

    def start_backup(self, lock: Lock) -> BackupTask:
        response = self._send(
            "start-backup",
            "POST",
            "/mvc/admin/backups",
            params={"external": "true"},
            headers={TOKEN_HEADER: lock.unlock_token},
            retry=False,
        )
        body = self._json("start-backup", response)
        cancel_token = body.get("cancelToken")
        task_id = body.get("id")
        if not isinstance(cancel_token, str) or not cancel_token or not isinstance(task_id, str):
            raise BitbucketBadResponse("start-backup: the answer has no task id or cancelToken")
        register_secret(cancel_token)
        return BackupTask(id=task_id, cancel_token=cancel_token, state=str(body.get("state", "RUNNING")))

    def maintenance(self, lock: Lock | None = None, step: str = "poll") -> MaintenanceState:
        headers = {TOKEN_HEADER: lock.unlock_token} if lock else None
        body = self._json(step, self._send(step, "GET", "/mvc/maintenance", headers=headers))
        task = body.get("task") if isinstance(body.get("task"), dict) else None
        db_state, scm_state = body.get("db-state"), body.get("scm-state")
        if not isinstance(db_state, str) or not isinstance(scm_state, str):
            raise BitbucketBadResponse(f"{step}: the answer has no db-state / scm-state")
        progress = task.get("progress") if task and isinstance(task.get("progress"), dict) else {}
        percentage = progress.get("percentage")
        return MaintenanceState(
            db_state=db_state,
            scm_state=scm_state,
            task_state=str(task.get("state")) if task else None,
            task_message=str(progress.get("message")) if progress.get("message") else None,
            percentage=percentage if isinstance(percentage, int) else None,
        )

    def progress(self, lock: Lock, percentage: int) -> None:
        if not 0 <= percentage <= 100:
            raise ValueError(f"percentage {percentage} is outside 0..100")
        self._send(
            "progress",
            "POST",
            "/mvc/admin/backups/progress/client",
            params={"token": lock.unlock_token, "percentage": str(percentage)},
        )

    def unlock(self, lock: Lock) -> None:
        try:
            self._send("unlock", "DELETE", "/mvc/maintenance/lock", params={"token": lock.unlock_token})
        except (BitbucketRequestFailed, BitbucketUnavailable) as error:
            if isinstance(error, BitbucketRequestFailed) and error.status != 409:
                raise
            # An earlier attempt whose answer was lost may have unlocked already (a repeat then answers 409):
            # if Bitbucket is out of maintenance mode, the unlock is done.
            try:
                state = self.status()
            except BackupError:
                raise error from None
            if state == "MAINTENANCE":
                raise
            logger.info("unlock: Bitbucket is already out of maintenance mode")

    def cancel(self, cancel_token: str) -> None:
        self._send("cancel", "POST", "/mvc/maintenance", params={"token": cancel_token})

    def status(self) -> str:
        body = self._json("status", self._send("status", "GET", "/status"))
        return str(body.get("state", "UNKNOWN"))

    def version(self, step: str = "version") -> str:
        body = self._json(step, self._send(step, "GET", "/rest/api/1.0/application-properties"))
        version = body.get("version")
        if not isinstance(version, str):
            raise BitbucketBadResponse(f"{step}: application-properties has no version")
        return version

    def repository_id(self, project: str, slug: str, step: str = "validate") -> int:
        """The id of a repository (its directory under shared/data/repositories), from its project key and slug."""
        path = f"/rest/api/1.0/projects/{quote(project, safe='~')}/repos/{quote(slug, safe='')}"
        try:
            body = self._json(step, self._send(step, "GET", path))
        except BitbucketRequestFailed as error:
            if error.status == 404:
                raise BitbucketBadResponse(f"{step}: no repository {project}/{slug} in Bitbucket") from None
            raise
        repo_id = body.get("id")
        if not isinstance(repo_id, int) or isinstance(repo_id, bool):
            raise BitbucketBadResponse(f"{step}: the answer for repository {project}/{slug} has no numeric id")
        return repo_id

    # --- plumbing ---------------------------------------------------------------------------------------

    def _maybe_locked(self) -> bool:
        """After a failed lock request: is Bitbucket in maintenance mode now? A request that timed out may
        still take effect a moment later, so look for as long as one request may take."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                if self.status() == "MAINTENANCE":
                    return True
            except BackupError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.25, self._timeout / 4))

    def _send(
        self,
        step: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        retry: bool = True,
    ) -> requests.Response:
        attempts = 1 + (self._retries if retry else 0)
        last = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self._backoff * 2 ** (attempt - 1))
            try:
                response = self._session.request(
                    method, self.base_url + path, params=params, headers=headers, timeout=self._timeout
                )
            except requests.Timeout:
                last = f"no answer within {self._timeout:g} s"
            except requests.ConnectionError as error:
                # The exception text carries the URL with its query; keep only the kind of failure.
                last = f"connection failed ({_reason(error)})"
            else:
                if response.status_code < 400:
                    _check_success_body(step, response)
                    return response
                if response.status_code == 401 and self._refresh is not None:
                    refresh, self._refresh = self._refresh, None  # once: a second 401 is a real refusal
                    self._use(refresh())
                    logger.info(f"{step}: credentials refused; read the secret again and retrying once")
                    return self._send(step, method, path, params=params, headers=headers, retry=retry)
                if response.status_code < 500:
                    raise BitbucketRequestFailed(
                        f"{step}: Bitbucket answered HTTP {response.status_code}{_hint(response.status_code)}",
                        response.status_code,
                    )
                last = f"HTTP {response.status_code}"
            logger.warning(f"{step}: {last}", extra={"attempt": attempt + 1, "of": attempts})
        raise BitbucketUnavailable(f"{step}: {last} after {attempts} attempt{'s' * (attempts > 1)}")

    @staticmethod
    def _json(step: str, response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type").split(";")[0]
            raise BitbucketBadResponse(
                f"{step}: HTTP {response.status_code} with a body that is not JSON ({kind}); "
                "a proxy or load balancer may have answered"
            ) from None
        if not isinstance(body, dict):
            raise BitbucketBadResponse(f"{step}: HTTP {response.status_code} with JSON that is not an object")
        return body


def _check_success_body(step: str, response: requests.Response) -> None:
    """Bitbucket's maintenance API answers JSON or nothing. A 2xx with an HTML page or broken JSON comes from
    something in between (a proxy, a login page) and means the request did not reach Bitbucket as intended."""
    kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    text = response.text.strip()
    if not text:
        return
    if kind == "text/html" or text.startswith("<"):
        raise BitbucketBadResponse(
            f"{step}: HTTP {response.status_code} with a body that is not JSON (text/html); "
            "a proxy or load balancer may have answered"
        )
    try:
        response.json()
    except ValueError:
        raise BitbucketBadResponse(
            f"{step}: HTTP {response.status_code} with a body that is not JSON (truncated or invalid)"
        ) from None


def _reason(error: requests.ConnectionError) -> str:
    text = str(error)
    for marker in (
        "Connection refused",
        "Connection reset",
        "RemoteDisconnected",
        "Name or service not known",
        "timed out",
        "Connection aborted",
        "CERTIFICATE_VERIFY_FAILED",
    ):
        if marker in text:
            return marker
    return type(error).__name__


def _hint(status: int) -> str:
    return {
        401: " (credentials rejected: check the secret's username and password)",
        403: " (the user is not a system administrator)",
        404: " (not found: check base_url and the Bitbucket version)",
        409: " (conflict: locked by someone else, or a wrong token)",
    }.get(status, "")
