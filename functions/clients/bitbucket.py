"""Bitbucket Server / Data Center maintenance API client (see shared/reference/bitbucket-maintenance-api.md).

Everything Bitbucket (or whatever answers in its place) sends is untrusted: status, redirects, size and shape.

- Retries are urllib3's `Retry`, mounted on the session. Idempotent calls (poll, progress, unlock, cancel, status,
  version, repository) are retried on connection errors, lost answers, 5xx and 429 with a bounded exponential
  back-off. The lock and the start of the backup are never retried blindly (a retried lock cannot get the first
  token back): only when nothing reached Bitbucket (the connection could not be made) or its rate limiter refused
  them (429). 4xx is never retried.
- Bitbucket Data Center's rate limiter answers 429 with Retry-After: honoured up to `max_retry_after` seconds; a
  longer wait is an error that names it (Step Functions retries the step later).
- Redirects are never followed: the maintenance token travels in a header and in the query, and must not reach
  another origin; a DELETE turned into a GET by a redirect would look like a successful unlock. Any 3xx is an
  error naming the status and where it pointed (without its query).
- A body is read up to `max_body_bytes` (1 MiB); larger, or JSON nested deeper than `MAX_JSON_DEPTH`, is a bad
  answer. Bitbucket's maintenance answers are a few hundred bytes, four levels deep.

Error texts name the step and the HTTP status, never a URL with its query (tokens travel in the query string).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from functions.clients.bitbucket_answers import (
    Answer,
    BackupTask,
    Credentials,
    Lock,
    MaintenanceState,
    check_success_body,
    content_type,
    location,
    parse_json,
)
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
MAX_BODY_BYTES = 1024 * 1024
# Bounds of the waits between attempts (the Lambdas that call Bitbucket run for at most a minute or two).
MAX_BACKOFF_SECONDS = 8.0
MAX_RETRY_AFTER_SECONDS = 10.0
# Methods retried on a lost answer or a 5xx. POST is among them for progress and cancel, which repeat harmlessly;
# the lock and the start of the backup (POST too) use a policy that retries none.
RETRIED_METHODS = frozenset({"GET", "HEAD", "DELETE", "POST"})
TOO_MANY_REQUESTS = 429


class _Retry(Retry):
    """urllib3's Retry with two changes. A 429 is retried whatever the method: Bitbucket's rate limiter refused the
    request before acting on it. A Retry-After longer than `max_retry_after`, or one that cannot be read, is not
    waited for: the answer goes back to the client, which reports it (urllib3 would sleep as long as told, or raise
    on a header it cannot parse)."""

    def __init__(self, *args: Any, max_retry_after: float = MAX_RETRY_AFTER_SECONDS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_retry_after = max_retry_after

    def new(self, **kw: Any) -> _Retry:
        kw.setdefault("max_retry_after", self.max_retry_after)
        return super().new(**kw)

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == TOO_MANY_REQUESTS:
            return bool(self.total)
        return super().is_retry(method, status_code, has_retry_after)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> _Retry:
        if response is not None:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if wait is not None and wait > self.max_retry_after:
                # Exhaust this policy: urllib3 then hands the answer back instead of sleeping.
                return Retry.increment(self.new(total=0), method, url, response, error, _pool, _stacktrace)
        after = super().increment(method, url, response, error, _pool, _stacktrace)
        why = f"HTTP {response.status}" if response is not None else type(error).__name__ if error else "?"
        logger.warning(f"Bitbucket {method} {urlsplit(url or '').path}: {why}; retrying")  # the path: no query
        return after

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        return None if wait is None or wait < 0 else wait  # unreadable: the usual back-off instead


def retry_after_seconds(header: str | None) -> float | None:
    """Retry-After in seconds (a number or an HTTP date); -1 when present but unreadable; None when absent."""
    if header is None:
        return None
    text = header.strip()
    if re.fullmatch(r"[0-9]{1,12}", text):
        return float(text)
    try:
        return max(0.0, Retry().parse_retry_after(text))
    except Exception:  # urllib3 raises InvalidHeader; a hostile header must not crash the step
        return -1.0


def read_bounded(response: requests.Response, limit: int, too_big: Exception) -> bytes:
    """A streamed answer's body, refused (`too_big`) as soon as it is larger than `limit`: by its Content-Length, or
    while it is read, before it is all in memory. A connection that breaks off raises requests' own error."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


class _NoRedirects(requests.Session):
    """Never follows a redirect, and never prepares one either: with allow_redirects=False requests still works out
    the next request, reading the whole body of the 3xx to do so. The client reports a 3xx itself."""

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


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
        max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Called once after a 401: the secret may have been rotated since the credentials were cached.
        self._refresh = refresh
        self._timeout = timeout
        self._retries = retries
        self._max_retry_after = max_retry_after
        self._max_body = max_body_bytes
        common = {
            "total": retries,
            "backoff_factor": backoff,
            "backoff_max": MAX_BACKOFF_SECONDS,
            "respect_retry_after_header": True,
            "raise_on_status": False,  # the last answer comes back and is reported with its status
            "redirect": False,
            "max_retry_after": max_retry_after,
        }
        self._sessions = {
            True: self._session_with(
                _Retry(allowed_methods=RETRIED_METHODS, status_forcelist=(500, 502, 503, 504), **common), verify
            ),
            # The lock and the start (POST, not in allowed_methods; an empty set would mean every method): only a
            # connection that could not be made (nothing was sent) and a 429 are retried.
            False: self._session_with(
                _Retry(allowed_methods=frozenset({"GET"}), status_forcelist=(), **common), verify
            ),
        }
        self._session = self._sessions[True]
        self._use(credentials)

    @staticmethod
    def _session_with(retry: Retry, verify: bool | str) -> requests.Session:
        session = _NoRedirects()
        session.verify = verify
        session.trust_env = False  # no proxy or .netrc from the environment: the config says where to connect
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update({"Accept": "application/json", "Content-Type": "application/json"})
        return session

    def _use(self, credentials: Credentials) -> None:
        for session in self._sessions.values():
            session.headers.pop("Authorization", None)
            session.auth = None
            if credentials.token:
                session.headers["Authorization"] = f"Bearer {credentials.token}"
            else:
                session.auth = (credentials.username or "", credentials.password or "")

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
            if error.status is not None and 300 <= error.status < 400 and self._maybe_locked():
                raise self._not_confirmed(error) from None
            raise
        except (BitbucketUnavailable, BitbucketBadResponse) as error:
            # The request may have taken effect although its answer was lost or mangled: then the token is
            # unknown and the lock must be reported as unconfirmed (unlock by hand), not as a plain failure.
            if self._maybe_locked():
                raise self._not_confirmed(error) from None
            raise
        register_secret(token)
        owner = body.get("owner")
        return Lock(unlock_token=token, owner=str(owner.get("name", "")) if isinstance(owner, dict) else "")

    @staticmethod
    def _not_confirmed(error: BackupError) -> LockNotConfirmed:
        return LockNotConfirmed(
            f"lock: {str(error).removeprefix('lock: ')}; Bitbucket is now in maintenance mode but the "
            "unlock token is unknown, so it must be unlocked by hand (see README, Troubleshooting)"
        )

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
    ) -> Answer:
        try:
            response = self._sessions[retry].request(
                method,
                self.base_url + path,
                params=params,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,  # never: the token would travel to wherever Location points
                stream=True,  # the body is read below, up to a bound
            )
        except requests.RequestException as error:
            raise BitbucketUnavailable(f"{step}: {self._failure(error)}") from None
        with response:
            status = response.status_code
            attempts = _attempts(response)
            if 300 <= status < 400:
                raise BitbucketRequestFailed(
                    f"{step}: Bitbucket answered HTTP {status}, a redirect to {location(response.headers)}, which "
                    "is never followed (the maintenance token would go with it): check base_url and the proxy "
                    "in front of Bitbucket",
                    status,
                )
            if status == 401 and self._refresh is not None:
                refresh, self._refresh = self._refresh, None  # once: a second 401 is a real refusal
                self._use(refresh())
                logger.info(f"{step}: credentials refused; read the secret again and retrying once")
                return self._send(step, method, path, params=params, headers=headers, retry=retry)
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if status in (TOO_MANY_REQUESTS, 503) and wait is not None and wait > self._max_retry_after:
                raise BitbucketUnavailable(
                    f"{step}: Bitbucket answered HTTP {status} and asked to wait {wait:.0f} s (Retry-After), "
                    f"longer than the {self._max_retry_after:g} s a step waits; "
                    + (
                        "its rate limiter is busy: exempt the backup user from rate limiting"
                        if status == 429
                        else "it is unavailable"
                    )
                )
            if status == TOO_MANY_REQUESTS:
                raise BitbucketUnavailable(
                    f"{step}: Bitbucket's rate limiter refused the request (HTTP 429) after {_times(attempts)}; "
                    "exempt the backup user from rate limiting"
                )
            if 400 <= status < 500:
                raise BitbucketRequestFailed(
                    f"{step}: Bitbucket answered HTTP {status}{_hint(status)}",
                    status,
                )
            if status >= 500:
                raise BitbucketUnavailable(f"{step}: HTTP {status} after {_times(attempts)}")
            if status < 200:
                raise BitbucketBadResponse(f"{step}: Bitbucket answered HTTP {status}, which is not an answer")
            answer = Answer(status, content_type(response.headers), self._read(step, response))
        check_success_body(step, answer)
        return answer

    def _read(self, step: str, response: requests.Response) -> bytes:
        """The body, up to the bound: a larger one is refused before it is all in memory."""
        too_big = BitbucketBadResponse(
            f"{step}: HTTP {response.status_code} with a body larger than {self._max_body:,} bytes; "
            "Bitbucket's answers are small, so something else answered"
        )
        try:
            return read_bounded(response, self._max_body, too_big)
        except requests.RequestException as error:
            raise BitbucketUnavailable(f"{step}: the answer broke off ({self._failure(error)})") from None

    def _failure(self, error: requests.RequestException) -> str:
        """What went wrong, in words: the exception texts carry the URL with its query (the token)."""
        exhausted = None
        seen: set[int] = set()
        cause: BaseException | None = error
        timed_out = isinstance(error, requests.Timeout)
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            if isinstance(cause, MaxRetryError):
                exhausted = cause
                timed_out = timed_out or isinstance(cause.reason, (ReadTimeoutError, ConnectTimeoutError))
            timed_out = timed_out or isinstance(cause, (ReadTimeoutError, ConnectTimeoutError))
            nxt = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
            cause = nxt or cause.__cause__ or cause.__context__
        what = f"no answer within {self._timeout:g} s" if timed_out else f"connection failed ({_reason(error)})"
        if exhausted is not None and self._retries:
            what += f" after {_times(self._retries + 1)}"
        return what

    @staticmethod
    def _json(step: str, answer: Answer) -> dict[str, Any]:
        body = parse_json(step, answer)
        if not isinstance(body, dict):
            raise BitbucketBadResponse(f"{step}: HTTP {answer.status} with JSON that is not an object")
        return body


def _attempts(response: requests.Response) -> int:
    retries = getattr(response.raw, "retries", None)
    return 1 + len(retries.history) if isinstance(retries, Retry) else 1


def _times(attempts: int) -> str:
    return f"{attempts} attempt{'s' * (attempts > 1)}"


def _reason(error: requests.RequestException) -> str:
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
