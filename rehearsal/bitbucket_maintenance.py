"""The Bitbucket maintenance model behind the simulator (rehearsal/bitbucket_simulator.py): the lock and its token,
the backup task, the drain, progress and the event log, and what each endpoint does to them, as
/work/shared/reference/bitbucket-maintenance-api.md describes. The simulator adds the HTTP server, the faults and
the tests' controls."""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

MAINTENANCE_TOKEN_HEADER = "X-Atlassian-Maintenance-Token"

# A strict integer: int() would also accept " 5", "+5" and "5_0", which a real server may not.
_PERCENTAGE_RE = re.compile(r"^[0-9]{1,3}$")


def hint(token: str | None) -> str | None:
    """A short, non-secret prefix: events must never carry a whole token."""
    return None if token is None else token[:6] + "..."


def same(a: str | None, b: str | None) -> bool:
    # Constant-time like the real thing; None never matches anything.
    return a is not None and b is not None and hmac.compare_digest(a.encode(), b.encode())


def build_number(version: str) -> str:
    # Bitbucket's scheme: 8.19.1 -> "8019001".
    parts = [int(p) if p.isdigit() else 0 for p in [*version.split("."), "0", "0"][:3]]
    return str(parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2])


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload).encode(), "application/json")


def error_response(status: int, message: str, exception: str | None = None) -> Response:
    # Bitbucket's REST error shape.
    return json_response(status, {"errors": [{"context": None, "message": message, "exceptionName": exception}]})


class Maintenance:
    """One Bitbucket instance's maintenance state, changed only under its lock."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        drain_seconds: float | None,
        version: str,
        tokens: set[str] | None,
        non_admin: tuple[str, str] | None,
        repositories: dict[str, int] | None,
    ) -> None:
        self._username = username
        self._password = password
        self._drain_seconds = drain_seconds
        self._version = version
        self._tokens: frozenset[str] = frozenset(tokens or ())
        self._non_admin = non_admin
        # "PROJECT/slug" -> repository id, answered by the repository endpoint.
        self._repositories = dict(repositories or {})

        self._lock = threading.RLock()
        self._locked = False
        self._unlock_token: str | None = None
        self._lock_owner: str | None = None
        self._task: dict[str, Any] | None = None
        self._task_started_at = 0.0
        self._drained_recorded = False
        # The task belongs to the current maintenance window; after unlock, polls no longer show it.
        self._task_in_window = False
        self._progress_history: list[int] = []
        self._events: list[tuple[float, str, dict[str, Any]]] = []
        # Every token handed out, so tests can search logs and messages for any of them.
        self._issued: list[str] = []

    def _issue(self) -> str:
        token = secrets.token_hex(20)
        self._issued.append(token)
        return token

    # ------------------------------------------------------------ state changes
    # All of these run with self._lock held.

    def _event(self, name: str, at: float | None = None, **details: Any) -> None:
        self._events.append((time.monotonic() if at is None else at, name, details))

    def _drained_at(self) -> float | None:
        if self._drain_seconds is None:
            return None
        return self._task_started_at + self._drain_seconds

    def _advance(self) -> None:
        """Apply time-based transitions (draining -> DRAINED) lazily, stamped with when they happened."""
        task = self._task
        if task is None or task["state"] != "RUNNING" or self._drained_recorded:
            return
        drained_at = self._drained_at()
        if drained_at is not None and time.monotonic() >= drained_at:
            self._drained_recorded = True
            if not self._progress_history:
                task["progress"] = {"message": "Waiting for the external backup to start", "percentage": 10}
            self._event("drained", at=drained_at, task=hint(task["id"]))

    def _latch_states(self) -> tuple[str, str]:
        task = self._task
        if task is None or not self._task_in_window or task["state"] != "RUNNING":
            return "AVAILABLE", "AVAILABLE"
        if self._drained_recorded:
            return "DRAINED", "DRAINED"
        return "DRAINING", "DRAINING"

    def _take_lock(self, owner: str) -> str:
        token = secrets.token_hex(20)
        self._issued.append(token)
        self._locked, self._unlock_token, self._lock_owner = True, token, owner
        self._task_in_window = False  # a task from an earlier window is not part of this one
        self._event("locked", owner=owner, token=hint(token))
        return token

    def _release_lock(self) -> None:
        if self._task is not None and self._task["state"] == "RUNNING":
            self._end_task("CANCELLED", "Backup cancelled: maintenance mode ended", by="unlock")
        owner = self._lock_owner
        self._locked, self._unlock_token, self._lock_owner = False, None, None
        self._task_in_window = False
        self._event("unlocked", owner=owner)

    def _end_task(self, state: str, message: str, *, by: str) -> None:
        task = self._task
        assert task is not None
        task["state"] = state
        task["progress"] = {"message": message, "percentage": task["progress"]["percentage"]}
        name = {"CANCELLED": "cancelled", "FAILED": "failed", "COMPLETED": "completed"}[state]
        self._event(name, task=hint(task["id"]), by=by)

    # ------------------------------------------------------------------ actions

    def _authenticate(self, handler: BaseHTTPRequestHandler) -> tuple[str, bool] | None:
        """(user name, is admin), or None when the credentials are missing or wrong."""
        header = handler.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            # Personal access tokens belong to the admin user.
            return (self._username, True) if any(same(value, t) for t in self._tokens) else None
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            return None
        if same(user, self._username) and same(password, self._password):
            return user, True
        other = self._non_admin
        if other is not None and same(user, other[0]) and same(password, other[1]):
            return user, False
        return None

    def _perform(self, endpoint: str, handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> Response:
        if endpoint == "status":
            with self._lock:
                return json_response(200, {"state": "MAINTENANCE" if self._locked else "RUNNING"})

        auth = self._authenticate(handler)
        if auth is None:
            with self._lock:
                self._event("auth-failed", endpoint=endpoint)
            resp = error_response(
                401,
                "Authentication failed. Please check your credentials and try again.",
                "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException",
            )
            resp.headers["WWW-Authenticate"] = 'Basic realm="Atlassian Bitbucket"'
            return resp
        if endpoint == "properties":
            return json_response(
                200,
                {
                    "version": self._version,
                    "buildNumber": build_number(self._version),
                    "buildDate": "1700000000000",
                    "displayName": "Bitbucket",
                },
            )
        if endpoint == "repository":
            name = query["_repository"][0]
            if name not in self._repositories:
                return error_response(
                    404,
                    f"Repository {name} does not exist.",
                    "com.atlassian.bitbucket.repository.NoSuchRepositoryException",
                )
            project, slug = name.split("/", 1)
            return json_response(200, {"id": self._repositories[name], "slug": slug, "project": {"key": project}})
        user, is_admin = auth
        if not is_admin:
            with self._lock:
                self._event("forbidden", endpoint=endpoint, user=user)
            return error_response(
                403,
                "You are not permitted to access this resource",
                "com.atlassian.bitbucket.AuthorisationException",
            )

        def param(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        with self._lock:
            self._advance()
            if endpoint == "lock":
                return self._do_lock(user)
            if endpoint == "unlock":
                return self._do_unlock(param("token"))
            if endpoint == "start":
                return self._do_start(param("external"), handler.headers.get(MAINTENANCE_TOKEN_HEADER))
            if endpoint == "poll":
                return self._do_poll()
            if endpoint == "progress":
                return self._do_progress(param("token"), param("percentage"))
            if endpoint == "cancel":
                return self._do_cancel(param("token"))
        raise AssertionError(f"unhandled endpoint {endpoint}")

    def _do_lock(self, user: str) -> Response:
        if self._locked:
            self._event("lock-refused", requested_by=user, owner=self._lock_owner)
            return error_response(409, f"Bitbucket is already locked for maintenance by {self._lock_owner}")
        token = self._take_lock(user)
        return json_response(202, {"unlockToken": token, "owner": {"displayName": user, "name": user}})

    def _do_unlock(self, token: str | None) -> Response:
        if not self._locked or not same(token, self._unlock_token):
            reason = "not locked" if not self._locked else "wrong token"
            self._event("unlock-refused", reason=reason)
            return error_response(409, f"Cannot unlock: {reason}")
        self._release_lock()
        return Response(202)

    def _do_start(self, external: str | None, token: str | None) -> Response:
        if external != "true":
            # Only the external (DIY) backup is simulated; the built-in one takes no part here.
            self._event("start-refused", reason="external=true missing")
            return error_response(400, "Only external backups are supported: add ?external=true")
        if not self._locked or not same(token, self._unlock_token):
            reason = "not locked" if not self._locked else "wrong or missing maintenance token"
            self._event("start-refused", reason=reason)
            return error_response(409, f"Cannot start a backup: {reason}")
        if self._task is not None and self._task["state"] == "RUNNING":
            self._event("start-refused", reason="a backup is already running")
            return error_response(409, "A backup is already running")
        self._task = {
            "id": secrets.token_hex(20),
            "cancelToken": self._issue(),
            "state": "RUNNING",
            "progress": {"message": "Closing connections to the current database", "percentage": 5},
            "type": "BACKUP",
        }
        self._task_started_at = time.monotonic()
        self._drained_recorded = False
        self._task_in_window = True
        self._progress_history = []
        self._event("backup-started", at=self._task_started_at, task=hint(self._task["id"]))
        if self._drain_seconds is not None and self._drain_seconds <= 0:
            self._advance()
        return json_response(202, copy.deepcopy(self._task))

    def _do_poll(self) -> Response:
        db_state, scm_state = self._latch_states()
        payload: dict[str, Any] = {"db-state": db_state, "scm-state": scm_state}
        if self._task is not None and self._task_in_window:
            payload = {"task": {k: v for k, v in self._task.items() if k != "cancelToken"}, **payload}
        return json_response(200, payload)

    def _do_progress(self, token: str | None, percentage: str | None) -> Response:
        if not self._locked or not same(token, self._unlock_token):
            self._event("progress-refused", reason="wrong token" if self._locked else "not locked")
            return error_response(409, "Invalid maintenance token")
        if percentage is None or not _PERCENTAGE_RE.match(percentage) or int(percentage) > 100:
            self._event("progress-refused", reason="invalid percentage", percentage=percentage)
            return error_response(400, f"percentage must be an integer between 0 and 100, got {percentage!r}")
        task = self._task
        if task is None or not self._task_in_window or task["state"] != "RUNNING":
            self._event("progress-refused", reason="no running backup")
            return error_response(409, "No backup is running")
        if self._latch_states() != ("DRAINED", "DRAINED"):
            self._event("progress-refused", reason="not drained yet")
            return error_response(409, "The database and SCM are not drained yet")
        value = int(percentage)
        self._progress_history.append(value)
        # The UI shows 10 % for Bitbucket's own preparation and 90 % for the external backup.
        task["progress"] = {"message": "Backing up (external)", "percentage": 10 + value * 90 // 100}
        self._event("progress", percentage=value)
        if value == 100:
            self._end_task("COMPLETED", "Backup complete", by="client")
        return Response(202)

    def _do_cancel(self, token: str | None) -> Response:
        task = self._task
        if task is None or not same(token, task["cancelToken"]):
            self._event("cancel-refused", reason="wrong cancel token")
            return error_response(409, "Invalid cancel token")
        if task["state"] != "RUNNING":
            self._event("cancel-refused", reason=f"task is {task['state']}")
            return error_response(409, f"The backup is not running ({task['state']})")
        self._end_task("CANCELLED", "Backup cancelled", by="client")
        return Response(202)
