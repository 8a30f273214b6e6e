"""Bitbucket's answers, untrusted: read and bounded (functions.clients.bitbucket), then checked here before anything
is taken from them, and what they become (a lock, a backup task, the maintenance state; and the credentials sent).
Apart from the client so that a step that only names these types does not import requests at its cold start.

Checked: the content type, where a redirect pointed (told without its query), and JSON that must be
JSON and no deeper than MAX_JSON_DEPTH (Bitbucket's maintenance answers are a few hundred bytes, four levels deep).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from functions.errors import BitbucketBadResponse
from functions.observability import redact, register_secret

MAX_JSON_DEPTH = 32


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


@dataclass(frozen=True)
class Answer:
    """Bitbucket's answer, read and bounded: what the client works with after a request."""

    status: int
    content_type: str
    body: bytes


def content_type(headers: Any) -> str:
    return str(headers.get("Content-Type", "")).split(";")[0].strip().lower()


def location(headers: Any) -> str:
    """Where a redirect pointed, for a person to read: scheme, host and path only. The query and any user:password@
    are dropped (a token may be in them), and so is anything unprintable."""
    raw = str(headers.get("Location") or "")
    if not raw:
        return "nowhere (no Location header)"
    try:
        parts = urlsplit(raw.strip())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "an unreadable Location"
    shown = (f"{parts.scheme}://{host}{port}" if host else "") + parts.path
    shown = re.sub(r"[^\x21-\x7e]", "", shown)[:200] or "/"
    return redact(shown) + (" (query not shown)" if parts.query else "")


def parse_json(step: str, answer: Answer, invalid: str | None = None) -> Any:
    """The body's JSON; a body that is not JSON is a bad answer described by `invalid` (default: its type)."""

    def bad() -> BitbucketBadResponse:
        what = invalid or answer.content_type or "no content type"
        return BitbucketBadResponse(
            f"{step}: HTTP {answer.status} with a body that is not JSON ({what})"
            + ("" if invalid else "; a proxy or load balancer may have answered")
        )

    try:
        text = answer.body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad() from None
    depth = nesting(text)
    if depth > MAX_JSON_DEPTH:
        raise BitbucketBadResponse(
            f"{step}: HTTP {answer.status} with JSON nested {depth if depth <= 1000 else 'over 1000'} levels deep "
            f"(at most {MAX_JSON_DEPTH} are accepted); this is not Bitbucket's answer"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise bad() from None


_SPECIAL = re.compile(r'[\[\]{}"\\]')


def nesting(text: str) -> int:
    """How deep arrays and objects nest, strings skipped: one linear pass over the special characters only (a
    regular expression for whole strings backtracks quadratically on hostile input). Stops past 1000."""
    depth = deepest = 0
    in_string = False
    escaped_at = -1  # the position a backslash inside a string escapes
    for found in _SPECIAL.finditer(text):
        char, at = found.group(), found.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > 1000:
                    break
        elif char in "]}":
            depth -= 1
    return deepest


def check_success_body(step: str, answer: Answer) -> None:
    """Bitbucket's maintenance API answers JSON or nothing. A 2xx with an HTML page or broken JSON comes from
    something in between (a proxy, a login page) and means the request did not reach Bitbucket as intended."""
    text = answer.body.strip()
    if not text:
        return
    if answer.content_type == "text/html" or text.startswith(b"<"):
        raise BitbucketBadResponse(
            f"{step}: HTTP {answer.status} with a body that is not JSON (text/html); "
            "a proxy or load balancer may have answered"
        )
    parse_json(step, answer, invalid="truncated or invalid")
