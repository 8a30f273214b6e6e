"""A Bitbucket Server / Data Center maintenance-API simulator, served over real HTTP.

It follows /work/shared/reference/bitbucket-maintenance-api.md: lock, start an external backup, wait for
DRAINED, report progress, unlock, cancel. Tests drive it from the outside (``lock_by_other``,
``cancel_from_ui``, ``fail_task``) and inject faults per endpoint (error statuses, raw bodies from a
proxy, dropped connections, delays, redirects to another origin, the rate limiter's 429 with Retry-After),
then inspect the observable state and the event log. ``RedirectTarget`` is that other origin: a second
server on 127.0.0.1 that records what arrives there (a token must never).

Run it by hand with ``python -m rehearsal.bitbucket_simulator --port 7990``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from rehearsal.bitbucket_maintenance import (
    Maintenance,
    Response,
    error_response,
)
from rehearsal.loopback_server import Simulator, SimulatorHandler
from rehearsal.redirect_target import ArrivedRequest, RedirectTarget

__all__ = ["ENDPOINTS", "ArrivedRequest", "BitbucketSimulator", "RedirectTarget", "main"]


# (method, path) -> endpoint name used by inject(); the query string is checked by each action.
_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/mvc/maintenance/lock"): "lock",
    ("DELETE", "/mvc/maintenance/lock"): "unlock",
    ("POST", "/mvc/admin/backups"): "start",
    ("GET", "/mvc/maintenance"): "poll",
    ("POST", "/mvc/admin/backups/progress/client"): "progress",
    ("POST", "/mvc/maintenance"): "cancel",
    ("GET", "/status"): "status",
    ("GET", "/rest/api/1.0/application-properties"): "properties",
}
# GET /rest/api/1.0/projects/{key}/repos/{slug}: the one route with path parameters.
_REPOSITORY_RE = re.compile(r"^/rest/api/1\.0/projects/([^/]+)/repos/([^/]+)$")
ENDPOINTS: frozenset[str] = frozenset([*_ROUTES.values(), "repository"])
_KNOWN_PATHS: frozenset[str] = frozenset(path for _, path in _ROUTES)
# Success status of each endpoint; a body-only fault answers with it so the client sees "success".
_SUCCESS_STATUS: dict[str, int] = {
    "lock": 202,
    "unlock": 202,
    "start": 202,
    "poll": 200,
    "progress": 202,
    "cancel": 202,
    "status": 200,
    "properties": 200,
    "repository": 200,
}


@dataclass
class _Fault:
    status: int | None
    body: str | None
    delay: float
    drop: bool
    times: int | None  # remaining uses; None = until reset_faults()
    before: Callable[[], None] | None
    after_action: bool
    # Answer with a redirect to this origin (the request's path and query appended, as a proxy would).
    redirect_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def replaces_response(self) -> bool:
        return self.drop or self.status is not None or self.body is not None or self.redirect_to is not None


class _Handler(SimulatorHandler):
    server_version = "BitbucketSimulator/1.0"


class BitbucketSimulator(Maintenance, Simulator[_Fault]):
    """A Bitbucket maintenance-API server on a real socket; see the module docstring."""

    name = "simulator"
    handler = _Handler

    def __init__(
        self,
        username: str = "admin",
        password: str = "admin",
        *,
        drain_seconds: float | None = 0.2,
        version: str = "8.19.1",
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: set[str] | None = None,
        non_admin: tuple[str, str] | None = None,
        repositories: dict[str, int] | None = None,
    ) -> None:
        super().__init__(
            username,
            password,
            drain_seconds=drain_seconds,
            version=version,
            tokens=tokens,
            non_admin=non_admin,
            repositories=repositories,
        )
        Simulator.__init__(self, host, port)
        self._requests: list[tuple[str, str, int]] = []

    # ----------------------------------------------------------- observable state

    @property
    def locked(self) -> bool:
        with self._lock:
            return self._locked

    @property
    def unlock_token(self) -> str | None:
        with self._lock:
            return self._unlock_token

    @property
    def lock_owner(self) -> str | None:
        with self._lock:
            return self._lock_owner

    @property
    def task(self) -> dict[str, Any] | None:
        """The latest backup task (including cancelToken); kept after unlock until the next start."""
        with self._lock:
            self._advance()
            return copy.deepcopy(self._task)

    @property
    def progress_history(self) -> list[int]:
        with self._lock:
            return list(self._progress_history)

    @property
    def events(self) -> list[tuple[float, str, dict[str, Any]]]:
        with self._lock:
            self._advance()
            return [(t, name, dict(details)) for t, name, details in self._events]

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request; status 0 means the connection was dropped."""
        with self._lock:
            return list(self._requests)

    @property
    def issued_secrets(self) -> list[str]:
        """Every unlock and cancel token issued, plus the passwords: what must never leak anywhere."""
        with self._lock:
            return [*self._issued, self._password]

    def event_names(self) -> list[str]:
        """Just the names from ``events``, in order: what most assertions need."""
        return [name for _, name, _ in self.events]

    # ------------------------------------------------------------ test controls

    def add_repository(self, name: str, repo_id: int) -> None:
        """A repository the REST API knows: "PROJECT/slug" -> id (its directory under shared/data/repositories)."""
        with self._lock:
            self._repositories[name] = repo_id

    def lock_by_other(self, owner: str = "someone-else") -> None:
        """Lock the instance for another holder whose token our client never learns."""
        with self._lock:
            self._advance()
            if self._locked:
                raise RuntimeError(f"already locked by {self._lock_owner}")
            self._take_lock(owner)

    def unlock_by_other(self) -> None:
        """Release a lock taken with lock_by_other (the other holder finished)."""
        with self._lock:
            self._advance()
            if not self._locked:
                raise RuntimeError("not locked")
            self._release_lock()

    def cancel_from_ui(self) -> None:
        """An admin pressed "Cancel backup": the task ends, latches are released, the lock stays."""
        with self._lock:
            self._advance()
            if self._task is None or self._task["state"] != "RUNNING":
                raise RuntimeError("no running backup task to cancel")
            self._end_task("CANCELLED", "Backup cancelled", by="ui")

    def fail_task(self, message: str = "Backup failed") -> None:
        """The server gives up on the backup on its own: task FAILED, latches released, lock stays."""
        with self._lock:
            self._advance()
            if self._task is None or self._task["state"] != "RUNNING":
                raise RuntimeError("no running backup task to fail")
            self._end_task("FAILED", message, by="server")

    def inject(
        self,
        endpoint: str,
        *,
        status: int | None = None,
        body: str | None = None,
        delay: float = 0.0,
        drop: bool = False,
        times: int | None = 1,
        before: Callable[[], None] | None = None,
        after_action: bool = False,
        redirect_to: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Queue a fault for the next ``times`` requests to ``endpoint`` (None = until reset_faults).

        Faults on one endpoint apply in the order injected. ``before`` runs first, then ``delay``.
        ``status``/``body``/``drop``/``redirect_to`` replace the answer and skip the real action, unless
        ``after_action`` is set: then the action is performed first and its answer replaced.
        ``redirect_to`` (an http origin on 127.0.0.1) answers 302 (or ``status``, a 3xx) with a Location on
        that origin carrying the request's path and query. ``headers`` are added to the answer
        (``Retry-After``, for example).
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(ENDPOINTS)}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if delay < 0:
            raise ValueError("delay must be >= 0")
        if drop and (status is not None or body is not None):
            raise ValueError("drop sends no response, so status/body make no sense with it")
        if status is not None and not 100 <= status <= 599:
            raise ValueError(f"invalid HTTP status {status}")
        if redirect_to is not None:
            if drop or body is not None or (status is not None and not 300 <= status <= 399):
                raise ValueError("redirect_to answers a 3xx redirect; drop, body and a non-3xx status make no sense")
            origin = urlsplit(redirect_to)
            # Tests must never send anything off this machine.
            if origin.scheme != "http" or not (origin.hostname or "").startswith("127."):
                raise ValueError(f"redirect_to must be an http://127.x.x.x origin, got {redirect_to!r}")
        fault = _Fault(status, body, delay, drop, times, before, after_action, redirect_to, dict(headers or {}))
        self._queue_fault(endpoint, fault)

    def rate_limit(self, endpoint: str, retry_after: int | str | None = 1, *, times: int | None = 1) -> None:
        """Bitbucket Data Center's rate limiter: 429 Too Many Requests with Retry-After (seconds) for the next
        ``times`` requests to ``endpoint``; the request is refused before anything is done."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        body = json.dumps(
            {"errors": [{"context": None, "message": "Rate limit exceeded, try again later", "exceptionName": None}]}
        )
        self.inject(endpoint, status=429, body=body, headers=headers, times=times)

    # ------------------------------------------------------------------- HTTP

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        # Read the request body even though no endpoint uses it, so keep-alive stays in sync.
        length_header = handler.headers.get("Content-Length") or "0"
        length = int(length_header) if length_header.isdigit() else 0
        if length > 0:
            handler.rfile.read(length)

        endpoint = _ROUTES.get((method, path))
        repository = _REPOSITORY_RE.match(path) if method == "GET" else None
        if repository:
            endpoint = "repository"
            query = {**query, "_repository": [f"{unquote(repository[1])}/{unquote(repository[2])}"]}
        if endpoint is None:
            if path in _KNOWN_PATHS:
                allowed = ", ".join(sorted(m for m, p in _ROUTES if p == path))
                resp = error_response(405, f"Method {method} is not allowed on {path}")
                resp.headers["Allow"] = allowed
            else:
                not_found = "com.atlassian.bitbucket.NoSuchResourceException"
                resp = error_response(404, f"No resource at {path}", not_found)
            self._send(handler, method, path, resp)
            return

        fault = self._take_fault(endpoint)
        resp = error_response(500, "Simulator error: no response produced")
        try:
            if fault is None:
                resp = self._perform(endpoint, handler, query)
            else:
                if fault.before is not None:
                    fault.before()
                with self._lock:
                    self._event("fault", endpoint=endpoint, kind=self._fault_kind(fault))
                if fault.after_action:
                    resp = self._perform(endpoint, handler, query)
                    self._stopping.wait(fault.delay)
                else:
                    self._stopping.wait(fault.delay)
                    if not fault.replaces_response:
                        resp = self._perform(endpoint, handler, query)
                if fault.drop:
                    self._drop(handler, method, path)
                    return
                if fault.replaces_response:
                    resp = self._fault_response(endpoint, fault, handler.path)
                resp.headers.update(fault.headers)
        except Exception as exc:  # a bug here or in a test's before hook must surface, not hang the client
            with self._lock:
                self._event("internal-error", endpoint=endpoint, error=repr(exc))
            resp = error_response(500, f"Simulator error: {exc!r}")
        self._send(handler, method, path, resp)

    @staticmethod
    def _fault_kind(fault: _Fault) -> str:
        flags = {
            "drop": fault.drop,
            "status": fault.status is not None,
            "body": fault.body is not None,
            "delay": fault.delay > 0,
            "after_action": fault.after_action,
            "redirect": fault.redirect_to is not None,
            "headers": bool(fault.headers),
        }
        return "+".join(name for name, on in flags.items() if on) or "before"

    @staticmethod
    def _fault_response(endpoint: str, fault: _Fault, request_path: str) -> Response:
        if fault.redirect_to is not None:
            resp = Response(fault.status or 302)
            resp.headers["Location"] = fault.redirect_to.rstrip("/") + request_path
            return resp
        status = fault.status if fault.status is not None else _SUCCESS_STATUS[endpoint]
        if fault.body is None:
            if status >= 400:
                return error_response(status, f"Injected fault: HTTP {status}")
            return Response(status)
        # A raw body: HTML from a proxy, truncated JSON, ... labelled the way a proxy would.
        looks_html = fault.body.lstrip().startswith("<")
        content_type = "text/html; charset=utf-8" if looks_html else "application/json"
        return Response(status, fault.body.encode(), content_type)

    def _drop(self, handler: BaseHTTPRequestHandler, method: str, path: str) -> None:
        with self._lock:
            self._requests.append((method, path, 0))
        handler.close_connection = True
        # Close now, with nothing written: the client sees the connection end without a response.
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, handler: BaseHTTPRequestHandler, method: str, path: str, resp: Response) -> None:
        with self._lock:
            self._requests.append((method, path, resp.status))
        try:
            handler.send_response(resp.status)
            if resp.content_type is not None:
                handler.send_header("Content-Type", resp.content_type)
            for name, value in resp.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(resp.body)))
            handler.end_headers()
            handler.wfile.write(resp.body)
        except OSError:
            handler.close_connection = True  # the client gave up (e.g. timed out during a delay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rehearsal.bitbucket_simulator",
        description="Run the Bitbucket maintenance-API simulator in the foreground until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7990)
    parser.add_argument(
        "--drain-seconds", type=float, default=2.0, help="seconds until DRAINED; negative = never drains"
    )
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--version", default="8.19.1", help="Bitbucket version to report")
    parser.add_argument("--token", action="append", default=[], help="accepted access token (repeatable)")
    args = parser.parse_args(argv)

    drain: float | None = None if args.drain_seconds < 0 else args.drain_seconds
    sim = BitbucketSimulator(
        args.username,
        args.password,
        drain_seconds=drain,
        version=args.version,
        host=args.host,
        port=args.port,
        tokens=set(args.token),
    )
    try:
        with sim:
            print(f"Bitbucket simulator listening on {sim.url}; Ctrl-C to stop", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("Bitbucket simulator stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
