"""An OpenSearch snapshot-API simulator, served over real HTTP on 127.0.0.1.

No OpenSearch server can run here, so the product's snapshot and restore code is tested against this one: it
answers as OpenSearch 2.17 does (its routes, its parameter and body checks, its error shapes and messages, taken
from the server's source) for the snapshot/restore API and the few index APIs a restore needs (recovery, cat
indices, delete index, get alias). It comes in two flavours:

* ``auth="basic"``: a self-managed cluster behind the security plugin (HTTP basic auth, 401 ``Unauthorized``);
* ``auth="sigv4"``: an Amazon OpenSearch Service domain: every request must carry a valid AWS Signature V4 for
  service ``es`` (verified by recomputing it with botocore), is authorized per ``es:ESHttp*`` action, and an ``s3``
  repository needs a ``role_arn`` the caller may pass.

Snapshots keep a copy of their indices' documents and aliases, so a restore brings back what was there at snapshot
time. Time moves on its own (``snapshot_seconds``, ``restore_seconds``), faults are injected per endpoint as in the
Bitbucket simulator, and every request is recorded.

Run it by hand with ``python -m rehearsal.search_simulator --port 9200``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import datetime as dt
import functools
import hashlib
import hmac
import json
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import PurePosixPath
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from rehearsal.loopback_server import Simulator, SimulatorHandler
from rehearsal.redirect_target import RedirectTarget

__all__ = ["ENDPOINTS", "TEST_SECRET", "RedirectTarget", "SearchSimulator", "java_replace_all", "main"]

# The secret every access key signs with unless the test passes its own secret_for.
TEST_SECRET = "simulator-test-secret-access-key"

_VERSION = "2.17.0"
# OpenSearch flips bit 27 of its version ids (2.17.0 = 2170099) to tell itself apart from legacy Elasticsearch.
_VERSION_ID = 2170099 ^ 0x08000000
_JSON = "application/json; charset=UTF-8"
_TEXT = "text/plain; charset=UTF-8"
# org.opensearch.core.common.Strings.INVALID_FILENAME_CHARS, printed in the order of its Java HashSet.
_INVALID_FILENAME_CHARS = '\\/*?"<>| ,'
_INVALID_FILENAME_TEXT = '[ , ", *, \\, <, |, ,, >, /, ?]'
_METADATA_MAX_BYTES = 1024
_MAX_INDEX_NAME_BYTES = 255
_CLOCK_SKEW = dt.timedelta(minutes=5)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access "
    "Key and signing method. Consult the service documentation for details."
)
_OPEN_INDEX_EXISTS = (
    "because an open index with same name already exists in the cluster. Either close or delete the existing index "
    "or restore the index under a different name by providing a rename pattern and replacement name"
)
_BOOL_ERROR = "Failed to parse value [{}] as only [true] or [false] are allowed."
_TIME_RE = re.compile(r"^(-1|0|[0-9]+(\.[0-9]+)?(nanos|micros|ms|s|m|h|d))$")
_EXPAND_WILDCARDS = frozenset({"open", "closed", "hidden", "none", "all"})
# Settings a restore may not change or drop (RestoreService's USER_UNMODIFIABLE / USER_UNREMOVABLE_SETTINGS).
_UNMODIFIABLE_SETTINGS = frozenset(
    {"index.number_of_shards", "index.version.created", "index.uuid", "index.creation_date", "index.history.uuid"}
)
_UNREMOVABLE_SETTINGS = _UNMODIFIABLE_SETTINGS | {
    "index.number_of_replicas",
    "index.auto_expand_replicas",
    "index.version.upgraded",
}
# Parameters every REST handler consumes (BaseRestHandler's response params).
_GLOBAL_PARAMS = frozenset({"pretty", "human", "error_trace", "filter_path"})
_MASTER_PARAMS = frozenset({"cluster_manager_timeout", "master_timeout"})
_INDICES_OPTIONS = frozenset({"ignore_unavailable", "allow_no_indices", "expand_wildcards"})
_CAT_COLUMNS = (
    "health",
    "status",
    "index",
    "uuid",
    "pri",
    "rep",
    "docs.count",
    "docs.deleted",
    "store.size",
    "pri.store.size",
)


# --------------------------------------------------------------------------------------------- errors


@dataclass
class _Response:
    status: int
    payload: Any = None  # serialized as JSON unless body is set
    body: bytes | None = None
    content_type: str | None = _JSON
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, pretty: bool) -> bytes:
        if self.body is not None:
            return self.body
        if self.payload is None:
            return b""
        if pretty:  # the server's pretty printer: two spaces and " : "
            return (json.dumps(self.payload, indent=2, separators=(",", " : ")) + "\n").encode()
        return json.dumps(self.payload, separators=(",", ":")).encode()


class _ApiError(Exception):
    """An answer other than success, raised from deep inside an action."""

    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


def _cause(type_: str, reason: str, caused_by: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    cause: dict[str, Any] = {"type": type_, "reason": reason, **extra}
    if caused_by is not None:
        cause["caused_by"] = caused_by
    return cause


def _error(
    status: int,
    type_: str,
    reason: str,
    *,
    caused_by: dict[str, Any] | None = None,
    root_cause: dict[str, Any] | None = None,
    **extra: Any,
) -> _ApiError:
    """The server's error shape. root_cause is the innermost OpenSearch exception (the wrapper itself for a plain
    Java exception such as IllegalArgumentException), as ElasticsearchException.guessRootCauses picks it."""
    top = _cause(type_, reason, caused_by, **extra)
    root = root_cause if root_cause is not None else {"type": type_, "reason": reason, **extra}
    return _ApiError(_Response(status, {"error": {"root_cause": [root], **top}, "status": status}))


def _simple_error(status: int, message: str) -> _ApiError:
    # RestController's own answers (no handler, wrong method, content type) and get-alias' 404.
    return _ApiError(_Response(status, {"error": message, "status": status}))


def _illegal_argument(reason: str, caused_by: dict[str, Any] | None = None) -> _ApiError:
    return _error(400, "illegal_argument_exception", reason, caused_by=caused_by)


def _index_not_found(name: str, resource_type: str = "index_or_alias") -> _ApiError:
    extra: dict[str, Any] = {"resource.type": resource_type, "resource.id": name, "index_uuid": "_na_", "index": name}
    return _error(404, "index_not_found_exception", f"no such index [{name}]", **extra)


def _invalid_index_name(name: str, description: str) -> _ApiError:
    reason = f"Invalid index name [{name}], {description}"
    return _error(400, "invalid_index_name_exception", reason, index_uuid="_na_", index=name)


def _repository_missing(name: str) -> _ApiError:
    return _error(404, "repository_missing_exception", f"[{name}] missing")


def _snapshot_missing(repository: str, name: str) -> _ApiError:
    return _error(404, "snapshot_missing_exception", f"[{repository}:{name}] is missing")


def _repository_error(name: str, reason: str, *, wrapped: bool = False) -> _ApiError:
    # Whatever a repository's constructor throws reaches the client wrapped in "failed to create repository".
    inner = _cause("repository_exception", f"[{name}] {reason}")
    if not wrapped:
        return _error(500, "repository_exception", inner["reason"])
    return _error(
        500, "repository_exception", f"[{name}] failed to create repository", caused_by=inner, root_cause=inner
    )


def _restore_error(prefix: str, reason: str) -> _ApiError:
    # SnapshotRestoreException does not override status(): 500.
    return _error(500, "snapshot_restore_exception", f"[{prefix}] {reason}")


def _aws_error(message: str, key: str = "message") -> _ApiError:
    # Amazon's front end, not OpenSearch: a flat object, "message" for authentication, "Message" for authorization.
    return _ApiError(_Response(403, {key: message}, content_type="application/json"))


# --------------------------------------------------------------------------------------------- helpers


def _uuid() -> str:
    # The server's base64 UUIDs: 22 URL-safe characters.
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> str:
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _simple_match(pattern: str, name: str) -> bool:
    # org.opensearch.common.regex.Regex.simpleMatch: only "*" is special.
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), name, re.DOTALL) is not None


def _split(value: str) -> list[str]:
    # Strings.splitStringByCommaToArray: trims nothing, drops nothing but the separators.
    return value.split(",") if value else []


def _parse_bool(value: str) -> bool:
    if value == "true":
        return True
    if value == "false":
        return False
    raise ValueError(value)


def _node_bool(value: Any, name: str) -> bool:
    # XContentMapValues.nodeBooleanValue: the value's toString must be exactly "true" or "false".
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    try:
        return _parse_bool(text)
    except ValueError:
        inner = _cause("illegal_argument_exception", _BOOL_ERROR.format(text))
        raise _illegal_argument(f"Could not convert [{name}] to boolean", caused_by=inner) from None


def _settings_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return [_settings_value(item) for item in value]
    if value is None:
        return None
    return str(value)


def _flatten_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Settings as the server keeps them: nested objects become dotted keys, every value a string."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten_settings(value, f"{name}."))
        else:
            flat[name] = _settings_value(value)
    return flat


def _nest_settings(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in sorted(flat.items()):
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _human_bytes(size: int) -> str:
    # ByteSizeValue.toString: one decimal, dropped when it is zero.
    for unit, scale in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)):
        if size >= scale:
            text = f"{size / scale:.1f}"
            return (text[:-2] if text.endswith(".0") else text) + unit
    return f"{size}b"


def _levenshtein_similarity(a: str, b: str) -> float:
    # Lucene's LevenshteinDistance.getDistance: 1 - distance / longest length.
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - previous[-1] / longest


def _java_regex(pattern: str) -> re.Pattern[str]:
    # Java's named groups (?<name>...) are Python's (?P<name>...); look-behinds (?<= (?<! stay as they are.
    python = re.sub(r"\(\?<(?![=!])", "(?P<", pattern)
    try:
        return re.compile(python)
    except re.error as exc:
        raise _error(400, "pattern_syntax_exception", f"{exc.msg} near index {exc.pos}\n{pattern}") from None


def java_replace_all(text: str, pattern: str, replacement: str) -> str:
    """Java's String.replaceAll(pattern, replacement): the rename a restore applies. The replacement follows
    Matcher.appendReplacement: ``$1`` and ``${name}`` are groups, a backslash quotes the next character, and the
    errors are Java's (an unknown group number is an IndexOutOfBoundsException, the rest IllegalArgumentException)."""
    regex = _java_regex(pattern)

    def expand(match: re.Match[str]) -> str:
        out: list[str] = []
        i = 0
        while i < len(replacement):
            char = replacement[i]
            if char == "\\":
                if i + 1 == len(replacement):
                    raise _illegal_argument("character to be escaped is missing")
                out.append(replacement[i + 1])
                i += 2
            elif char == "$":
                i += 1
                if i == len(replacement):
                    raise _illegal_argument("Illegal group reference: group index is missing")
                if replacement[i] == "{":
                    end = replacement.find("}", i)
                    if end < 0:
                        raise _illegal_argument("named capturing group is missing trailing '}'")
                    name = replacement[i + 1 : end]
                    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name):
                        raise _illegal_argument("named capturing group is missing trailing '}'")
                    if name not in regex.groupindex:
                        raise _illegal_argument(f"No group with name {{{name}}}")
                    out.append(match.group(name) or "")
                    i = end + 1
                elif replacement[i].isdigit():
                    number = int(replacement[i])
                    if number > regex.groups:
                        raise _error(500, "index_out_of_bounds_exception", f"No group {number}")
                    i += 1
                    # Further digits belong to the number only while such a group exists.
                    while i < len(replacement) and replacement[i].isdigit():
                        longer = number * 10 + int(replacement[i])
                        if longer > regex.groups:
                            break
                        number = longer
                        i += 1
                    out.append(match.group(number) or "")
                else:
                    raise _illegal_argument("Illegal group reference")
            else:
                out.append(char)
                i += 1
        return "".join(out)

    return regex.sub(expand, text)


def _cat_sort_key(column: str, row: dict[str, Any]) -> tuple[bool, int, str]:
    # Counts sort as numbers, the rest as text; missing values (closed indices) last.
    value = row[column]
    if value is None:
        return (True, 0, "")
    if column in ("pri", "rep", "docs.count", "docs.deleted"):
        return (False, int(value), "")
    return (False, 0, str(value))


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


class _DuplicateField(Exception):
    pass


def _parse_json(raw: bytes) -> Any:
    """Jackson as the server configures it: strict duplicate detection, no NaN, errors as json_parse_exception."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise _DuplicateField(key)
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"Non-standard token '{name}': enable JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS to allow")

    source = "(org.opensearch.core.common.bytes.AbstractBytesReference$MarkSupportingStreamInputWrapper)"
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    except _DuplicateField as exc:
        reason = f"Duplicate field '{exc.args[0]}'\n at [Source: {source}; line: 1, column: 1]"
        raise _error(400, "json_parse_exception", reason) from None
    except UnicodeDecodeError as exc:
        raise _error(400, "json_parse_exception", f"Invalid UTF-8 start byte at offset {exc.start}") from None
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg}\n at [Source: {source}; line: {exc.lineno}, column: {exc.colno}]"
        raise _error(400, "json_parse_exception", reason) from None
    except ValueError as exc:
        raise _error(400, "json_parse_exception", str(exc)) from None


def _validate_index_name(name: str, *, aliases: Iterable[str] = ()) -> None:
    """MetadataCreateIndexService.validateIndexName, in its order."""
    if any(char in name for char in _INVALID_FILENAME_CHARS):
        raise _invalid_index_name(name, f"must not contain the following characters {_INVALID_FILENAME_TEXT}")
    if not name:
        raise _invalid_index_name(name, "must not be empty")
    if "#" in name:
        raise _invalid_index_name(name, "must not contain '#'")
    if ":" in name:
        raise _invalid_index_name(name, "must not contain ':'")
    if name[0] in "_-+":
        raise _invalid_index_name(name, "must not start with '_', '-', or '+'")
    size = len(name.encode())
    if size > _MAX_INDEX_NAME_BYTES:
        raise _invalid_index_name(name, f"index name is too long, ({size} > {_MAX_INDEX_NAME_BYTES})")
    if name in (".", ".."):
        raise _invalid_index_name(name, "must not be '.' or '..'")
    if name.lower() != name:
        raise _invalid_index_name(name, "must be lowercase")
    if name in set(aliases):
        raise _invalid_index_name(name, "already exists as alias")


def _validate_snapshot_name(repository: str, name: str) -> None:
    """SnapshotsService.validate, in its order."""

    def invalid(description: str) -> _ApiError:
        reason = f"[{repository}:{name}] Invalid snapshot name [{name}], {description}"
        return _error(400, "invalid_snapshot_name_exception", reason)

    if not name:
        raise invalid("cannot be empty")
    if " " in name:
        raise invalid("must not contain whitespace")
    if "," in name:
        raise invalid("must not contain ','")
    if "#" in name:
        raise invalid("must not contain '#'")
    if name.startswith("_"):
        raise invalid("must not start with '_'")
    if name.lower() != name:
        raise invalid("must be lowercase")
    if any(char in name for char in _INVALID_FILENAME_CHARS):
        raise invalid(f"must not contain the following characters {_INVALID_FILENAME_TEXT}")


def _validate_repository_name(name: str) -> None:
    """RepositoriesService.validate: no lowercase rule, and a RepositoryException (500)."""
    if not name:
        raise _repository_error(name, "cannot be empty")
    if "#" in name:
        raise _repository_error(name, "must not contain '#'")
    if any(char in name for char in _INVALID_FILENAME_CHARS):
        raise _repository_error(name, f"must not contain the following characters {_INVALID_FILENAME_TEXT}")


# --------------------------------------------------------------------------------------------- state


@dataclass
class _Index:
    name: str
    uuid: str
    documents: list[dict[str, Any]]
    aliases: set[str]
    settings: dict[str, Any]
    created_ms: int
    closed: bool = False
    # {"repository", "snapshot", "snapshot_uuid", "index", "restore_uuid"} once restored from a snapshot.
    restored_from: dict[str, str] | None = None
    recovery_started: float = 0.0  # monotonic
    recovery_started_ms: int = 0
    # A shard a partial restore could not bring back: restored empty.
    recovered_empty: bool = False


@dataclass
class _SnapshotIndex:
    uuid: str
    documents: list[dict[str, Any]]
    aliases: list[str]
    settings: dict[str, Any]


@dataclass
class _Snapshot:
    name: str
    uuid: str
    indices: dict[str, _SnapshotIndex]
    include_global_state: bool
    metadata: dict[str, Any] | None
    started: float  # monotonic
    start_ms: int
    final_state: str
    final_reason: str | None
    failed_indices: list[str]
    state: str = "IN_PROGRESS"
    end_ms: int = 0
    reason: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "IN_PROGRESS"


@dataclass
class _Repository:
    type: str
    settings: dict[str, Any]

    @property
    def storage(self) -> tuple[str, ...]:
        # Where its snapshots live: two repositories on the same place share them, and a repository deleted and
        # registered again finds them there.
        if self.type == "s3":
            return ("s3", str(self.settings.get("bucket", "")), str(self.settings.get("base_path", "")).strip("/"))
        return ("fs", str(PurePosixPath(str(self.settings.get("location", "")))))

    @property
    def readonly(self) -> bool:
        return str(self.settings.get("readonly", "false")) == "true"


@dataclass
class _Restore:
    uuid: str
    repository: str
    snapshot: str
    snapshot_uuid: str
    indices: list[str]
    failed: int
    started: float
    done: bool = False


@dataclass
class _Fault:
    status: int | None
    body: str | None
    delay: float
    drop: bool
    times: int | None  # remaining uses; None = until reset_faults()
    after_action: bool
    redirect_to: str | None
    headers: dict[str, str]
    oversize_bytes: int

    @property
    def replaces_response(self) -> bool:
        return (
            self.drop
            or self.status is not None
            or self.body is not None
            or self.redirect_to is not None
            or self.oversize_bytes > 0
        )


@dataclass
class _Request:
    method: str
    target: str  # path and query as sent
    path: str  # path as sent, without the query
    segments: list[str]
    query: dict[str, str]
    headers: Message
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)
    body_consumed: bool = False
    warnings: list[str] = field(default_factory=list)
    principal: str | None = None  # the access key id of a SigV4 request

    def param(self, name: str) -> str | None:
        self.consumed.add(name)
        return self.query.get(name)


# --------------------------------------------------------------------------------------------- routes

# (path pattern, {method: (endpoint, action method)}); "{x}" is a path parameter. Literal segments win over
# parameters, and the first pattern that has the method serves it, as in the server's PathTrie.
_RouteTable = list[tuple[tuple[str, ...], dict[str, tuple[str, str]]]]
_ROUTES: _RouteTable = [
    ((), {"GET": ("info", "_info"), "HEAD": ("info", "_info")}),
    (("_snapshot",), {"GET": ("repository-get", "_get_repositories")}),
    (("_snapshot", "_status"), {"GET": ("snapshot-status", "_snapshot_status")}),
    (
        ("_snapshot", "{repository}"),
        {
            "GET": ("repository-get", "_get_repositories"),
            "PUT": ("repository-put", "_put_repository"),
            "POST": ("repository-put", "_put_repository"),
            "DELETE": ("repository-delete", "_delete_repository"),
        },
    ),
    (("_snapshot", "{repository}", "_status"), {"GET": ("snapshot-status", "_snapshot_status")}),
    (("_snapshot", "{repository}", "_verify"), {"POST": ("repository-verify", "_verify_repository")}),
    (
        ("_snapshot", "{repository}", "{snapshot}"),
        {
            "GET": ("snapshot-get", "_get_snapshots"),
            "PUT": ("snapshot-create", "_create_snapshot"),
            "POST": ("snapshot-create", "_create_snapshot"),
            "DELETE": ("snapshot-delete", "_delete_snapshots"),
        },
    ),
    (("_snapshot", "{repository}", "{snapshot}", "_status"), {"GET": ("snapshot-status", "_snapshot_status")}),
    (("_snapshot", "{repository}", "{snapshot}", "_restore"), {"POST": ("snapshot-restore", "_restore")}),
    (("_recovery",), {"GET": ("recovery", "_recovery")}),
    (("{index}", "_recovery"), {"GET": ("recovery", "_recovery")}),
    (("_cat", "indices"), {"GET": ("cat-indices", "_cat_indices")}),
    (("_cat", "indices", "{index}"), {"GET": ("cat-indices", "_cat_indices")}),
    (("_alias",), {"GET": ("alias-get", "_get_alias")}),
    (("_alias", "{name}"), {"GET": ("alias-get", "_get_alias")}),
    (
        ("{index}",),
        {
            "GET": ("index-get", "_get_index"),
            "HEAD": ("index-exists", "_get_index"),
            "DELETE": ("index-delete", "_delete_index"),
        },
    ),
]
_ROUTES.sort(key=lambda route: tuple(part.startswith("{") for part in route[0]))
ENDPOINTS: frozenset[str] = frozenset(endpoint for _, methods in _ROUTES for endpoint, _ in methods.values())

# Query parameters each endpoint reads (besides _GLOBAL_PARAMS); anything else is refused as the server does.
_PARAMS: dict[str, frozenset[str]] = {
    "info": frozenset(),
    "repository-get": frozenset({"local"}) | _MASTER_PARAMS,
    "repository-put": frozenset({"verify", "timeout"}) | _MASTER_PARAMS,
    "repository-delete": frozenset({"timeout"}) | _MASTER_PARAMS,
    "repository-verify": frozenset({"timeout"}) | _MASTER_PARAMS,
    "snapshot-create": frozenset({"wait_for_completion"}) | _MASTER_PARAMS,
    "snapshot-get": frozenset({"ignore_unavailable", "verbose"}) | _MASTER_PARAMS,
    "snapshot-status": frozenset({"ignore_unavailable"}) | _MASTER_PARAMS,
    "snapshot-delete": _MASTER_PARAMS,
    "snapshot-restore": frozenset({"wait_for_completion"}) | _MASTER_PARAMS,
    "recovery": frozenset({"detailed", "active_only"}) | _INDICES_OPTIONS,
    "cat-indices": frozenset(
        {"format", "h", "v", "s", "bytes", "time", "health", "pri", "local", "expand_wildcards"}
        | {"include_unloaded_segments"}
    )
    | _MASTER_PARAMS,
    "index-delete": frozenset({"timeout"}) | _MASTER_PARAMS | _INDICES_OPTIONS,
    "index-get": frozenset({"local", "flat_settings", "include_defaults"}) | _MASTER_PARAMS | _INDICES_OPTIONS,
    "index-exists": frozenset({"local", "flat_settings", "include_defaults"}) | _INDICES_OPTIONS,
    "alias-get": frozenset({"local"}) | _INDICES_OPTIONS,
}
_SUCCESS_STATUS = dict.fromkeys(ENDPOINTS, 200)
_ACTIONS = {
    "GET": "ESHttpGet",
    "PUT": "ESHttpPut",
    "POST": "ESHttpPost",
    "DELETE": "ESHttpDelete",
    "HEAD": "ESHttpHead",
    "PATCH": "ESHttpPatch",
}


# --------------------------------------------------------------------------------------------- HTTP plumbing


class _Handler(SimulatorHandler):
    server_version = "SearchSimulator/1.0"


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    # Always read the whole body, so that keep-alive stays in step.
    if (handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = handler.headers.get("Content-Length") or "0"
    return handler.rfile.read(int(length)) if length.isdigit() and int(length) > 0 else b""


# --------------------------------------------------------------------------------------------- the simulator


class SearchSimulator(Simulator[_Fault]):
    """An OpenSearch snapshot-API server on a real socket; see the module docstring."""

    name = "search simulator"
    handler = _Handler

    def __init__(
        self,
        *,
        auth: Literal["basic", "sigv4"] = "basic",
        username: str = "admin",
        password: str = "admin",
        region: str = "us-east-1",
        domain_arn: str = "arn:aws:es:us-east-1:123456789012:domain/bitbucket-search",
        secret_for: Callable[[str], str | None] | None = None,
        allowed: Callable[[str, str, str], bool] | None = None,
        may_pass_role: Callable[[str, str], bool] | None = None,
        path_repo: list[str] | None = None,
        snapshot_seconds: float = 0.05,
        restore_seconds: float = 0.05,
        destructive_requires_name: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if auth not in ("basic", "sigv4"):
            raise ValueError(f"auth must be 'basic' or 'sigv4', got {auth!r}")
        if not host.startswith("127."):
            raise ValueError("the search simulator listens on 127.0.0.0/8 only")
        if snapshot_seconds < 0 or restore_seconds < 0:
            raise ValueError("snapshot_seconds and restore_seconds must be >= 0")
        super().__init__(host, port)
        self._auth = auth
        self._username = username
        self._password = password
        self._region = region
        self._domain_arn = domain_arn
        self._secret_for = secret_for or (lambda _key: TEST_SECRET)
        self._allowed = allowed or (lambda _key, _action, _resource: True)
        self._may_pass_role = may_pass_role or (lambda _key, _role: True)
        self._path_repo = [str(PurePosixPath(path)) for path in (path_repo or [])]
        self._snapshot_seconds = snapshot_seconds
        self._restore_seconds = restore_seconds
        self._destructive_requires_name = destructive_requires_name
        domain = domain_arn.rsplit("/", 1)[-1]
        account = domain_arn.split(":")[4] if domain_arn.count(":") >= 5 else "123456789012"
        self._cluster_name = f"{account}:{domain}" if auth == "sigv4" else domain
        self._node_name = secrets.token_hex(16) if auth == "sigv4" else "opensearch-node1"
        self._node_id = _uuid()
        self._cluster_uuid = _uuid()

        self._lock = threading.RLock()
        self._indices: dict[str, _Index] = {}
        self._repositories: dict[str, _Repository] = {}
        self._storage: dict[tuple[str, ...], dict[str, _Snapshot]] = {}
        self._restores: list[_Restore] = []
        self._next_outcome: tuple[str, str, list[str] | None] | None = None
        self._requests: list[tuple[str, str, int]] = []
        self._events: list[tuple[float, str, dict[str, Any]]] = []
        self._auth_failures = 0

    # ----------------------------------------------------------- observable state

    @property
    def snapshot_seconds(self) -> float:
        """How long a snapshot started from now on stays IN_PROGRESS."""
        return self._snapshot_seconds

    @snapshot_seconds.setter
    def snapshot_seconds(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("snapshot_seconds must be >= 0")
        with self._lock:
            self._snapshot_seconds = seconds

    @property
    def repositories(self) -> dict[str, dict[str, Any]]:
        """name -> {"type", "settings"} (settings as the server returns them: strings)."""
        with self._lock:
            return {name: {"type": r.type, "settings": dict(r.settings)} for name, r in self._repositories.items()}

    def snapshots(self, repository: str) -> list[dict[str, Any]]:
        """The info of every snapshot the repository holds, as GET /_snapshot/{repository}/_all answers it."""
        with self._lock:
            self._advance()
            if repository not in self._repositories:
                raise KeyError(repository)
            return [self._snapshot_info(s) for s in self._sorted(self._snapshots_of(repository).values())]

    def indices(self) -> dict[str, dict[str, Any]]:
        """name -> {"documents", "aliases", "restored_from", "closed", "settings", "recovery_stage"}."""
        with self._lock:
            self._advance()
            return {
                name: {
                    "documents": copy.deepcopy(index.documents),
                    "aliases": sorted(index.aliases),
                    "restored_from": dict(index.restored_from) if index.restored_from else None,
                    "closed": index.closed,
                    "settings": dict(index.settings),
                    "recovery_stage": self._recovery_stage(index),
                }
                for name, index in sorted(self._indices.items())
            }

    def aliases(self) -> dict[str, list[str]]:
        """alias -> the indices it points at (a restore with include_aliases adds the restored copies)."""
        with self._lock:
            return self._alias_map()

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path with query, status) of every request; status 0 means the connection was dropped."""
        with self._lock:
            return list(self._requests)

    @property
    def auth_failures(self) -> int:
        """Requests refused for their credentials, signature or permissions (401 and the 403s of IAM)."""
        with self._lock:
            return self._auth_failures

    @property
    def events(self) -> list[tuple[float, str, dict[str, Any]]]:
        """(monotonic time, name, details) of what happened: snapshots, restores, deletions, alias changes."""
        with self._lock:
            self._advance()
            return [(t, name, dict(details)) for t, name, details in self._events]

    def event_names(self) -> list[str]:
        return [name for _, name, _ in self.events]

    # ------------------------------------------------------------ test controls

    def add_index(
        self,
        name: str,
        documents: list[dict[str, Any]] | None = None,
        aliases: list[str] | None = None,
        *,
        closed: bool = False,
    ) -> None:
        """An index that already exists in the cluster (documents copied)."""
        with self._lock:
            try:
                _validate_index_name(name, aliases=self._alias_map())
            except _ApiError as exc:
                raise ValueError(exc.response.payload["error"]["reason"]) from None
            if name in self._indices:
                raise ValueError(f"index [{name}] already exists")
            for alias in aliases or []:
                if alias in self._indices or alias == name:
                    raise ValueError(f"alias [{alias}] clashes with an index name")
            self._indices[name] = _Index(
                name,
                _uuid(),
                copy.deepcopy(documents or []),
                set(aliases or []),
                {"index.number_of_shards": "1", "index.number_of_replicas": "0"},
                _now_ms(),
                closed=closed,
            )

    def add_documents(self, name: str, documents: list[dict[str, Any]]) -> None:
        """Writes to an existing index (the application keeps writing while a backup runs)."""
        with self._lock:
            if name not in self._indices:
                raise KeyError(name)
            self._indices[name].documents.extend(copy.deepcopy(documents))

    def add_repository(self, name: str, type: str, settings: dict[str, Any]) -> None:
        """A repository an administrator registered beforehand (no request, no checks beyond the type)."""
        if type not in ("s3", "fs"):
            raise ValueError(f"repository type must be 's3' or 'fs', got {type!r}")
        with self._lock:
            self._repositories[name] = _Repository(type, _flatten_settings(settings))
            self._storage.setdefault(self._repositories[name].storage, {})

    def fail_next_snapshot(
        self, state: str = "FAILED", reason: str = "simulated shard failure", *, indices: list[str] | None = None
    ) -> None:
        """The next snapshot started ends in ``state`` (FAILED: every shard failed; PARTIAL: the shards of
        ``indices`` failed, by default the first of its indices) instead of SUCCESS."""
        if state not in ("FAILED", "PARTIAL"):
            raise ValueError("state must be FAILED or PARTIAL")
        with self._lock:
            self._next_outcome = (state, reason, list(indices) if indices is not None else None)

    def inject(
        self,
        endpoint: str,
        *,
        status: int | None = None,
        body: str | None = None,
        delay: float = 0.0,
        drop: bool = False,
        times: int | None = 1,
        redirect_to: str | None = None,
        headers: dict[str, str] | None = None,
        oversize_bytes: int = 0,
        after_action: bool = False,
    ) -> None:
        """Queue a fault for the next ``times`` requests to ``endpoint`` (None = until reset_faults).

        Faults on one endpoint apply in the order injected; they are checked before authentication, as a proxy in
        front of the cluster would answer. ``delay`` comes first. ``status``/``body``/``drop``/``redirect_to``/
        ``oversize_bytes`` replace the answer and skip the real action, unless ``after_action``: then the request is
        served first and only its answer replaced (a snapshot started whose answer was lost). ``redirect_to`` (an
        http origin on 127.0.0.0/8) answers 302 (or ``status``, a 3xx) with a Location on that origin carrying the
        request's path and query. ``oversize_bytes`` answers 200 (or ``status``) with a JSON body of at least that
        many bytes. ``headers`` are added to the answer.
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(ENDPOINTS)}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        if delay < 0 or oversize_bytes < 0:
            raise ValueError("delay and oversize_bytes must be >= 0")
        if drop and (status is not None or body is not None or oversize_bytes):
            raise ValueError("drop sends no response, so status/body/oversize_bytes make no sense with it")
        if body is not None and oversize_bytes:
            raise ValueError("body and oversize_bytes both set the body; pick one")
        if status is not None and not 100 <= status <= 599:
            raise ValueError(f"invalid HTTP status {status}")
        if redirect_to is not None:
            if drop or body is not None or oversize_bytes or (status is not None and not 300 <= status <= 399):
                raise ValueError("redirect_to answers a 3xx redirect; drop, body and a non-3xx status make no sense")
            origin = urlsplit(redirect_to)
            # Tests must never send anything off this machine.
            if origin.scheme != "http" or not (origin.hostname or "").startswith("127."):
                raise ValueError(f"redirect_to must be an http://127.x.x.x origin, got {redirect_to!r}")
        fault = _Fault(status, body, delay, drop, times, after_action, redirect_to, dict(headers or {}), oversize_bytes)
        self._queue_fault(endpoint, fault)

    # ----------------------------------------------------------- state machine
    # Everything below that touches state runs with self._lock held.

    def _event(self, name: str, at: float | None = None, **details: Any) -> None:
        self._events.append((time.monotonic() if at is None else at, name, details))

    def _alias_map(self) -> dict[str, list[str]]:
        aliases: dict[str, list[str]] = {}
        for name, index in sorted(self._indices.items()):
            for alias in index.aliases:
                aliases.setdefault(alias, []).append(name)
        return dict(sorted(aliases.items()))

    def _recovery_done_at(self, index: _Index) -> float:
        return index.recovery_started + self._restore_seconds if index.restored_from else 0.0

    def _recovery_stage(self, index: _Index) -> str:
        if index.restored_from is None or index.recovered_empty:
            return "DONE"
        return "DONE" if time.monotonic() >= self._recovery_done_at(index) else "INDEX"

    def _snapshot_done_at(self, snap: _Snapshot) -> float:
        # A shard still being restored cannot be snapshotted yet: the snapshot waits for it (ShardState.WAITING).
        waits = [self._recovery_done_at(self._indices[n]) for n in snap.indices if n in self._indices]
        return max([snap.started + self._snapshot_seconds, *waits])

    def _advance(self) -> None:
        """Apply the time-based transitions lazily, stamped with when they happened."""
        now = time.monotonic()
        for storage in self._storage.values():
            for snap in storage.values():
                done_at = self._snapshot_done_at(snap)
                if snap.running and now >= done_at:
                    snap.state = snap.final_state
                    snap.reason = snap.final_reason if snap.final_state == "FAILED" else None
                    snap.end_ms = snap.start_ms + round((done_at - snap.started) * 1000)
                    self._event("snapshot-finished", at=done_at, snapshot=snap.name, state=snap.state)
        for restore in self._restores:
            if not restore.done and now >= restore.started + self._restore_seconds:
                restore.done = True
                at = restore.started + self._restore_seconds
                self._event("restore-finished", at=at, snapshot=restore.snapshot, indices=list(restore.indices))
        self._restores = [r for r in self._restores if not r.done]

    def _repository(self, name: str) -> _Repository:
        repository = self._repositories.get(name)
        if repository is None:
            raise _repository_missing(name)
        return repository

    def _snapshots_of(self, repository: str) -> dict[str, _Snapshot]:
        return self._storage.setdefault(self._repositories[repository].storage, {})

    @staticmethod
    def _sorted(snapshots: Iterable[_Snapshot]) -> list[_Snapshot]:
        return sorted(snapshots, key=lambda s: (s.start_ms, s.name))

    def _repository_in_use(self, name: str) -> bool:
        storage = self._repositories[name].storage
        running = any(s.running for s in self._storage.get(storage, {}).values())
        return running or any(r.repository == name for r in self._restores)

    def _snapshot_info(self, snap: _Snapshot, *, verbose: bool = True) -> dict[str, Any]:
        if not verbose and not snap.running:
            # Non-verbose answers come from the repository's index: names and states only.
            return {
                "snapshot": snap.name,
                "uuid": snap.uuid,
                "indices": sorted(snap.indices),
                "data_streams": [],
                "state": snap.state,
            }
        info: dict[str, Any] = {
            "snapshot": snap.name,
            "uuid": snap.uuid,
            "version_id": _VERSION_ID,
            "version": _VERSION,
            "remote_store_index_shallow_copy": False,
            "indices": sorted(snap.indices),
            "data_streams": [],
            "include_global_state": snap.include_global_state,
        }
        if snap.metadata is not None:
            info["metadata"] = copy.deepcopy(snap.metadata)
        info["state"] = snap.state
        if snap.reason is not None:
            info["reason"] = snap.reason
        info["start_time"] = _iso(snap.start_ms)
        info["start_time_in_millis"] = snap.start_ms
        if verbose or snap.end_ms:
            # While it runs the server prints the epoch and zeroes here (SnapshotInfo.toXContent, verbose).
            info["end_time"] = _iso(snap.end_ms)
            info["end_time_in_millis"] = snap.end_ms
            info["duration_in_millis"] = max(0, snap.end_ms - snap.start_ms) if snap.end_ms else 0
        failed = [] if snap.running else snap.failed_indices
        if verbose or failed:
            info["failures"] = [
                {
                    "index": name,
                    "index_uuid": snap.indices[name].uuid,
                    "shard_id": 0,
                    "reason": snap.final_reason,
                    "node_id": self._node_id,
                    "status": "INTERNAL_SERVER_ERROR",
                }
                for name in failed
            ]
        total = 0 if snap.running else len(snap.indices)  # an in-progress entry reports no shards yet
        if verbose or total:
            info["shards"] = {"total": total, "failed": len(failed), "successful": total - len(failed)}
        return info

    def _index_size(self, documents: list[dict[str, Any]]) -> int:
        # Not Lucene's, but stable and growing with the documents.
        return 208 + _json_size(documents)

    def _snapshot_status(self, req: _Request) -> _Response:
        repository = req.params.get("repository")
        names = _split(req.params.get("snapshot", ""))
        ignore_unavailable = self._bool_param(req, "ignore_unavailable", False)
        self._master_timeout(req)
        self._finish(req, "snapshot-status")
        with self._lock:
            self._advance()
            if repository is None:
                chosen = [(n, s) for n in self._repositories for s in self._snapshots_of(n).values() if s.running]
            else:
                self._repository(repository)
                storage = self._snapshots_of(repository)
                if not names:
                    chosen = [(repository, s) for s in storage.values() if s.running]
                else:
                    chosen = []
                    for name in names:  # exact names only: the status API expands no wildcards
                        if name in storage:
                            chosen.append((repository, storage[name]))
                        elif not ignore_unavailable:
                            raise _snapshot_missing(repository, name)
            return _Response(200, {"snapshots": [self._status_of(repo, s) for repo, s in chosen]})

    def _status_of(self, repository: str, snap: _Snapshot) -> dict[str, Any]:
        # TransportSnapshotsStatusAction turns PARTIAL into SUCCESS; a running snapshot is STARTED.
        state = {"IN_PROGRESS": "STARTED", "FAILED": "FAILED"}.get(snap.state, "SUCCESS")
        elapsed = int((time.monotonic() - snap.started) * 1000) if snap.running else max(0, snap.end_ms - snap.start_ms)

        def stats(size: int, files: int) -> dict[str, Any]:
            part = {"file_count": files, "size_in_bytes": size}
            return {
                "incremental": part,
                "total": dict(part),
                "start_time_in_millis": snap.start_ms,
                "time_in_millis": elapsed,
            }

        def shard_counts(stage: str) -> dict[str, int]:
            counts = {"initializing": 0, "started": 0, "finalizing": 0, "done": 0, "failed": 0, "total": 1}
            counts[stage.lower() if stage != "FAILURE" else "failed"] += 1
            return counts

        indices: dict[str, Any] = {}
        totals = {"initializing": 0, "started": 0, "finalizing": 0, "done": 0, "failed": 0, "total": 0}
        size_total = files_total = 0
        for name, content in sorted(snap.indices.items()):
            stage = "STARTED" if snap.running else ("FAILURE" if name in snap.failed_indices else "DONE")
            size, files = self._index_size(content.documents), 1 + len(content.documents)
            counts = shard_counts(stage)
            for key, value in counts.items():
                totals[key] += value
            size_total += size
            files_total += files
            indices[name] = {
                "shards_stats": counts,
                "stats": stats(size, files),
                "shards": {"0": {"stage": stage, "stats": stats(size, files)}},
            }
        return {
            "snapshot": snap.name,
            "repository": repository,
            "uuid": snap.uuid,
            "state": state,
            "include_global_state": snap.include_global_state,
            "shards_stats": totals,
            "stats": stats(size_total, files_total),
            "indices": indices,
        }

    # ------------------------------------------------------------------- HTTP

    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        body = _read_body(handler)
        parts = urlsplit(handler.path)
        req = _Request(
            method=method,
            target=handler.path,
            path=parts.path,
            segments=[unquote(s) for s in parts.path.split("/") if s],
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=handler.headers,
            body=body,
        )
        pretty = "pretty" in req.query and req.query["pretty"] in ("", "true")
        route = self._route(req)
        if isinstance(route, _Response):
            resp = self._authenticate(req) or route
            self._send(handler, req, resp, pretty)
            return
        endpoint, action = route
        fault = self._take_fault(endpoint)
        resp = _error(500, "exception", "Simulator error: no response produced").response
        try:
            if fault is None:
                resp = self._serve(req, action)
            else:
                with self._lock:
                    self._event("fault", endpoint=endpoint)
                if fault.after_action:
                    resp = self._serve(req, action)
                    self._stopping.wait(fault.delay)
                else:
                    self._stopping.wait(fault.delay)
                    if not fault.replaces_response:
                        resp = self._serve(req, action)
                if fault.drop:
                    self._drop(handler, req)
                    return
                if fault.replaces_response:
                    resp = self._fault_response(endpoint, fault, handler.path)
                resp.headers.update(fault.headers)
        except Exception as exc:  # a bug here must surface as an answer, not hang the client
            with self._lock:
                self._event("internal-error", endpoint=endpoint, error=repr(exc))
            resp = _error(500, "exception", f"Simulator error: {exc!r}").response
        self._send(handler, req, resp, pretty)

    def _serve(self, req: _Request, action: str) -> _Response:
        refused = self._authenticate(req)
        if refused is not None:
            return refused
        try:
            self._check_content_type(req)
            handler = cast(Callable[[_Request], _Response], getattr(self, action))
            resp = handler(req)
        except _ApiError as exc:
            resp = exc.response
        for warning in req.warnings:
            resp.headers["Warning"] = warning
        return resp

    def _route(self, req: _Request) -> tuple[str, str] | _Response:
        matched: list[dict[str, tuple[str, str]]] = []
        for pattern, methods in _ROUTES:
            if len(pattern) != len(req.segments):
                continue
            params: dict[str, str] = {}
            for part, segment in zip(pattern, req.segments, strict=True):
                if part.startswith("{"):
                    params[part[1:-1]] = segment
                elif part != segment:
                    break
            else:
                matched.append(methods)
                if req.method in methods:
                    req.params = params
                    return methods[req.method]
        if not matched:
            return _simple_error(400, f"no handler found for uri [{req.target}] and method [{req.method}]").response
        allowed = sorted({m for methods in matched for m in methods})
        if req.method == "OPTIONS":
            return _Response(200, None, content_type=None, headers={"Allow": ",".join(allowed)})
        message = (
            f"Incorrect HTTP method for uri [{req.target}] and method [{req.method}], allowed: [{', '.join(allowed)}]"
        )
        resp = _simple_error(405, message).response
        resp.headers["Allow"] = ",".join(allowed)
        return resp

    @staticmethod
    def _fault_response(endpoint: str, fault: _Fault, request_target: str) -> _Response:
        if fault.redirect_to is not None:
            location = fault.redirect_to.rstrip("/") + request_target
            return _Response(fault.status or 302, None, content_type=None, headers={"Location": location})
        status = fault.status if fault.status is not None else _SUCCESS_STATUS[endpoint]
        if fault.oversize_bytes:
            return _Response(status, {"padding": "x" * fault.oversize_bytes})
        if fault.body is None:
            if status >= 400:
                return _error(status, "simulated_fault_exception", f"Injected fault: HTTP {status}").response
            return _Response(status, {})
        # A raw body (HTML from a proxy, truncated JSON, ...) labelled the way a proxy would.
        looks_html = fault.body.lstrip().startswith("<")
        return _Response(status, body=fault.body.encode(), content_type="text/html" if looks_html else _JSON)

    def _drop(self, handler: BaseHTTPRequestHandler, req: _Request) -> None:
        with self._lock:
            self._requests.append((req.method, req.target, 0))
        handler.close_connection = True
        # Close now, with nothing written: the client sees the connection end without a response.
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, handler: BaseHTTPRequestHandler, req: _Request, resp: _Response, pretty: bool) -> None:
        with self._lock:
            self._requests.append((req.method, req.target, resp.status))
        body = resp.encode(pretty)
        try:
            handler.send_response(resp.status)
            if resp.content_type is not None:
                handler.send_header("Content-Type", resp.content_type)
            for name, value in resp.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if req.method != "HEAD":
                handler.wfile.write(body)
        except OSError:
            handler.close_connection = True  # the client gave up (timed out during a delay, for example)

    # ------------------------------------------------------------------- authentication

    def _authenticate(self, req: _Request) -> _Response | None:
        try:
            if self._auth == "basic":
                self._check_basic(req)
            else:
                req.principal = self._check_sigv4(req)
                self._authorize(req)
        except _ApiError as exc:
            with self._lock:
                self._auth_failures += 1
                self._event("auth-failure", status=exc.response.status)
            return exc.response
        return None

    def _check_basic(self, req: _Request) -> None:
        scheme, _, encoded = (req.headers.get("Authorization") or "").partition(" ")
        user = password = None
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        ok = (
            user is not None
            and password is not None
            and hmac.compare_digest(user.encode(), self._username.encode())
            and hmac.compare_digest(password.encode(), self._password.encode())
        )
        if not ok:
            # The security plugin's answer: plain text, a challenge for the browser.
            headers = {"WWW-Authenticate": 'Basic realm="OpenSearch Security"'}
            raise _ApiError(_Response(401, body=b"Unauthorized", content_type=_TEXT, headers=headers))

    def _check_sigv4(self, req: _Request) -> str:
        """Verify the request's AWS Signature V4 the way the service front end does; answers its access key id."""
        header = req.headers.get("Authorization")
        if header is None:
            # Unsigned requests run as "anonymous", which no identity-based domain policy lets in.
            action = f"es:{_ACTIONS.get(req.method, 'ESHttpGet')}"
            raise _aws_error(f"User: anonymous is not authorized to perform: {action}", key="Message")
        algorithm, _, rest = header.strip().partition(" ")
        fields: dict[str, str] = {}
        for part in rest.split(","):
            key, sep, value = part.strip().partition("=")
            if sep:
                fields[key] = value
        amz_date = req.headers.get("X-Amz-Date")
        problems = [
            f"Authorization header requires '{name}' parameter."
            for name in ("Credential", "Signature", "SignedHeaders")
            if algorithm != "AWS4-HMAC-SHA256" or not fields.get(name)
        ]
        if amz_date is None:
            problems.append("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        if problems:
            raise _aws_error(" ".join([*problems, f"Authorization={header}"]))
        assert amz_date is not None
        try:
            when = dt.datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=dt.UTC)
        except ValueError:
            raise _aws_error(
                f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. See http://en.wikipedia.org/wiki/ISO_8601"
            ) from None
        credential = fields["Credential"]
        scope = credential.split("/")
        if len(scope) != 5:
            raise _aws_error(
                "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
                f"got '{credential}'"
            )
        access_key, date, region, service, terminator = scope
        if terminator != "aws4_request":
            raise _aws_error(
                f"Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'. "
            )
        if date != amz_date[:8]:
            raise _aws_error(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"'{date}' != '{amz_date[:8]}', from '{amz_date}'."
            )
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        if when < now - _CLOCK_SKEW:
            earliest = (now - _CLOCK_SKEW).strftime(_AMZ_DATE)
            raise _aws_error(
                f"Signature expired: {amz_date} is now earlier than {earliest} ({now.strftime(_AMZ_DATE)} - 5 min.)"
            )
        if when > now + _CLOCK_SKEW:
            latest = (now + _CLOCK_SKEW).strftime(_AMZ_DATE)
            now_text = now.strftime(_AMZ_DATE)
            raise _aws_error(
                f"Signature not yet current: {amz_date} is still later than {latest} ({now_text} + 5 min.)"
            )
        if service != "es":
            raise _aws_error("Credential should be scoped to correct service: 'es'. ")
        if region != self._region:
            raise _aws_error(f"Credential should be scoped to a valid region, not '{region}'. ")
        secret = self._secret_for(access_key)
        if secret is None:
            raise _aws_error("The security token included in the request is invalid.")
        signed = fields["SignedHeaders"].split(";")
        if "host" not in signed:
            raise _aws_error("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
        content_sha = req.headers.get("X-Amz-Content-SHA256")
        if content_sha is not None and not hmac.compare_digest(content_sha, hashlib.sha256(req.body).hexdigest()):
            raise _aws_error(_SIGNATURE_MISMATCH)
        expected = self._expected_signature(req, signed, amz_date, Credentials(access_key, secret))
        if not hmac.compare_digest(expected, fields["Signature"]):
            raise _aws_error(_SIGNATURE_MISMATCH)
        return access_key

    def _expected_signature(self, req: _Request, signed: list[str], amz_date: str, credentials: Any) -> str:
        # Rebuild the request botocore would have signed, with exactly the headers the client listed as signed.
        headers = HTTPHeaders()
        for name in signed:
            values = req.headers.get_all(name) or [""]
            for value in values:
                headers[name] = value
        extra = {}
        if "X-Amz-Content-SHA256" in req.headers:
            extra["X-Amz-Content-SHA256"] = req.headers["X-Amz-Content-SHA256"]
        rebuilt = AWSRequest(
            method=req.method, url=f"http://{req.headers.get('Host', '')}{req.target}", data=req.body, headers=extra
        )
        rebuilt.context["timestamp"] = amz_date
        signer = SigV4Auth(credentials, "es", self._region)
        signer.headers_to_sign = lambda _request: headers
        canonical = signer.canonical_request(rebuilt)
        return cast(str, signer.signature(signer.string_to_sign(rebuilt, canonical), rebuilt))

    def _authorize(self, req: _Request) -> None:
        assert req.principal is not None
        action = f"es:{_ACTIONS.get(req.method, 'ESHttpGet')}"
        resource = f"{self._domain_arn}/{unquote(req.path).lstrip('/')}"
        if not self._allowed(req.principal, action, resource):
            message = (
                f"User: {req.principal} is not authorized to perform: {action} "
                f"because no identity-based policy allows the {action} action"
            )
            raise _aws_error(message, key="Message")

    # ------------------------------------------------------------------- request parsing

    @staticmethod
    def _check_content_type(req: _Request) -> None:
        if not req.body:
            return
        values = req.headers.get_all("Content-Type") or []
        if not values:
            raise _simple_error(406, "Content-Type header is missing")
        media = values[0].split(";")[0].strip().lower()
        if media != "application/json":
            raise _simple_error(406, f"Content-Type header [{', '.join(values)}] is not supported")

    @staticmethod
    def _bool_param(req: _Request, name: str, default: bool) -> bool:
        value = req.param(name)
        if value is None:
            return default
        if value == "":  # a bare ?flag turns it on
            return True
        try:
            return _parse_bool(value)
        except ValueError:
            raise _illegal_argument(_BOOL_ERROR.format(value)) from None

    @staticmethod
    def _time_param(req: _Request, name: str) -> None:
        value = req.param(name)
        if value is not None and not _TIME_RE.match(value):
            reason = (
                f"failed to parse setting [{name}] with value [{value}] as a time value: "
                "unit is missing or unrecognized"
            )
            raise _error(400, "parse_exception", reason)

    def _master_timeout(self, req: _Request) -> None:
        self._time_param(req, "cluster_manager_timeout")
        if "master_timeout" in req.query:
            if "cluster_manager_timeout" in req.query:
                raise _illegal_argument(
                    "Please only use one of the request parameters [master_timeout, cluster_manager_timeout]."
                )
            self._time_param(req, "master_timeout")
            req.warnings.append(
                f'299 OpenSearch-{_VERSION}-unknown "Parameter [master_timeout] is deprecated and will be removed in '
                '3.0. To support inclusive language, please use [cluster_manager_timeout] instead."'
            )

    def _indices_options(
        self, req: _Request, *, ignore_unavailable: bool, allow_no_indices: bool, expand: str
    ) -> tuple[bool, bool, frozenset[str]]:
        return (
            self._bool_param(req, "ignore_unavailable", ignore_unavailable),
            self._bool_param(req, "allow_no_indices", allow_no_indices),
            self._expand_wildcards(req.param("expand_wildcards") or expand),
        )

    @staticmethod
    def _expand_wildcards(value: Any) -> frozenset[str]:
        states: set[str] = set()
        for state in value if isinstance(value, list) else str(value).split(","):
            if state not in _EXPAND_WILDCARDS:
                raise _illegal_argument(f"No valid expand wildcard value [{state}]")
            if state == "all":
                states |= {"open", "closed"}
            elif state == "none":
                states.clear()
            elif state != "hidden":  # no index here is hidden
                states.add(state)
        return frozenset(states)

    def _finish(self, req: _Request, endpoint: str) -> None:
        """BaseRestHandler's checks once the request is parsed: unknown parameters, then an unread body."""
        known = _PARAMS[endpoint] | _GLOBAL_PARAMS
        unknown = sorted(set(req.query) - req.consumed - _GLOBAL_PARAMS)
        if unknown:
            texts = []
            for name in unknown:
                scored = sorted(
                    ((_levenshtein_similarity(name, c), c) for c in known if _levenshtein_similarity(name, c) > 0.5),
                    key=lambda pair: (-pair[0], pair[1]),
                )
                text = f"[{name}]"
                if len(scored) == 1:
                    text += f" -> did you mean [{scored[0][1]}]?"
                elif scored:
                    text += f" -> did you mean any of [{', '.join(c for _, c in scored)}]?"
                texts.append(text)
            plural = "s" if len(unknown) > 1 else ""
            raise _illegal_argument(f"request [{req.path}] contains unrecognized parameter{plural}: {', '.join(texts)}")
        if req.body and not req.body_consumed:
            raise _illegal_argument(f"request [{req.method} {req.path}] does not support having a body")

    @staticmethod
    def _json_body(req: _Request, *, required: bool) -> dict[str, Any]:
        if not req.body:
            if required:
                raise _error(400, "parse_exception", "request body is required")
            return {}
        req.body_consumed = True
        value = _parse_json(req.body)
        if not isinstance(value, dict):
            found = "START_ARRAY" if isinstance(value, list) else "VALUE"
            reason = f"[1:1] Failed to parse object: expecting token of type [START_OBJECT] but found [{found}]"
            raise _error(400, "x_content_parse_exception", reason)
        return value

    # ------------------------------------------------------------------- index expressions

    def _resolve(
        self,
        terms: list[str],
        *,
        ignore_unavailable: bool,
        allow_no_indices: bool,
        expand: frozenset[str],
        aliases_allowed: bool = True,
    ) -> list[str]:
        """IndexNameExpressionResolver, for what is modelled: names, aliases, "*" wildcards, "-" exclusions after a
        wildcard, and _all."""
        alias_map = self._alias_map()

        def open_enough(name: str) -> bool:
            return ("closed" if self._indices[name].closed else "open") in expand

        if not terms or terms == ["_all"]:
            return sorted(n for n in self._indices if open_enough(n))
        result: dict[str, None] = {}
        wildcard_seen = False
        for term in terms:
            expression, add = term, True
            if expression.startswith("-") and wildcard_seen:
                expression, add = expression[1:], False
            if "*" in expression:
                wildcard_seen = True
                found = [n for n in self._indices if _simple_match(expression, n) and open_enough(n)]
                for alias, targets in alias_map.items():
                    if _simple_match(expression, alias):
                        found += [n for n in targets if open_enough(n)]
                if not found and not allow_no_indices:
                    raise _index_not_found(expression, "index_expression")
            elif expression in self._indices:
                found = [expression]
            elif expression in alias_map:
                if not aliases_allowed:
                    raise _illegal_argument(
                        f"The provided expression [{expression}] matches an alias, specify the corresponding "
                        "concrete indices instead."
                    )
                found = list(alias_map[expression])
            elif ignore_unavailable:
                continue
            else:
                raise _index_not_found(expression)
            for name in found:
                if add:
                    result[name] = None
                else:
                    result.pop(name, None)
        if not result and not allow_no_indices:
            raise _index_not_found(",".join(terms), "index_expression")
        return sorted(result)

    @staticmethod
    def _filter_snapshot_indices(
        available: list[str], terms: list[str], *, ignore_unavailable: bool, allow_no_indices: bool
    ) -> list[str]:
        """SnapshotUtils.filterIndices: which of a snapshot's indices a restore asked for."""
        if not terms or terms == ["_all"]:
            return sorted(available)
        result: set[str] | None = None
        for position, term in enumerate(terms):
            expression, add = term, True
            if expression in available:
                result = (result or set()) | {expression}
                continue
            if expression.startswith("+"):
                expression = expression[1:]
                if position == 0:
                    result = set()
            elif expression.startswith("-"):
                if position == 0:
                    result = set(available)
                expression, add = expression[1:], False
            if not expression or "*" not in expression:
                if expression not in available:
                    if not ignore_unavailable:
                        raise _index_not_found(expression)
                    if result is None:
                        result = set(available[:position])
                else:
                    result = result if result is not None else set()
                    result = result | {expression} if add else result - {expression}
                continue
            if result is None:
                result = set(available[:position])
            matches = {name for name in available if _simple_match(expression, name)}
            if not matches and not allow_no_indices:
                raise _index_not_found(expression)
            result = result | matches if add else result - matches
        return sorted(result) if result is not None else list(terms)

    # ------------------------------------------------------------------- actions: cluster and repositories

    def _info(self, req: _Request) -> _Response:
        self._finish(req, "info")
        return _Response(
            200,
            {
                "name": self._node_name,
                "cluster_name": self._cluster_name,
                "cluster_uuid": self._cluster_uuid,
                "version": {
                    "distribution": "opensearch",
                    "number": _VERSION,
                    "build_type": "tar",
                    "build_hash": "8586481dc99b1740ca3c7c966aee15ad0fc7b412",
                    "build_date": "2024-09-13T00:52:25.238931484Z",
                    "build_snapshot": False,
                    "lucene_version": "9.11.1",
                    "minimum_wire_compatibility_version": "7.10.0",
                    "minimum_index_compatibility_version": "7.0.0",
                },
                "tagline": "The OpenSearch Project: https://opensearch.org/",
            },
        )

    def _put_repository(self, req: _Request) -> _Response:
        name = req.params["repository"]
        body = self._json_body(req, required=True)
        repo_type: str | None = None
        settings: dict[str, Any] = {}
        for key, value in body.items():  # PutRepositoryRequest.source: other keys are ignored
            if key == "type":
                repo_type = str(value)
            elif key == "settings":
                if not isinstance(value, dict):
                    raise _illegal_argument("Malformed settings section, should include an inner object")
                settings = _flatten_settings(value)
        self._bool_param(req, "verify", True)
        self._time_param(req, "timeout")
        self._master_timeout(req)
        self._finish(req, "repository-put")
        if repo_type is None:
            raise _error(400, "action_request_validation_exception", "Validation Failed: 1: type is missing;")
        _validate_repository_name(name)
        if self._auth == "sigv4":
            self._check_service_repository(req, name, repo_type, settings)
        if repo_type == "s3":
            if "bucket" not in settings:
                raise _repository_error(name, "No bucket defined for s3 repository", wrapped=True)
        elif repo_type == "fs":
            self._check_fs_location(name, settings)
        else:
            raise _repository_error(name, f"repository type [{repo_type}] does not exist")
        with self._lock:
            self._advance()
            if name in self._repositories and self._repository_in_use(name):
                raise _error(
                    500, "illegal_state_exception", "trying to modify or unregister repository that is currently used"
                )
            repository = _Repository(repo_type, settings)
            self._repositories[name] = repository
            self._storage.setdefault(repository.storage, {})
            self._event("repository-registered", repository=name, type=repo_type)
        return _Response(200, {"acknowledged": True})

    def _check_service_repository(self, req: _Request, name: str, repo_type: str, settings: dict[str, Any]) -> None:
        # Amazon OpenSearch Service takes only s3 repositories, reached through a role the caller must pass.
        if repo_type != "s3":
            raise _repository_error(name, f"repository type [{repo_type}] does not exist")
        role_arn = settings.get("role_arn")
        if not role_arn:
            raise _repository_error(name, "role_arn is required")
        assert req.principal is not None
        if not self._may_pass_role(req.principal, str(role_arn)):
            with self._lock:
                self._auth_failures += 1
                self._event("auth-failure", status=403, action="iam:PassRole")
            message = f"User: {req.principal} is not authorized to perform: iam:PassRole on resource: {role_arn}"
            raise _aws_error(message, key="Message")

    def _check_fs_location(self, name: str, settings: dict[str, Any]) -> None:
        location = str(settings.get("location") or "")
        if not location:
            raise _repository_error(name, "missing location", wrapped=True)
        for root in self._path_repo:
            resolved = PurePosixPath(root, location)
            # Environment.resolveRepoFile: the normalized path must lie inside one of path.repo.
            parts: list[str] = []
            for part in resolved.parts:
                if part == "..":
                    if len(parts) > 1:
                        parts.pop()
                elif part != ".":
                    parts.append(part)
            normal = PurePosixPath(*parts)
            if normal == PurePosixPath(root) or PurePosixPath(root) in normal.parents:
                return
        suffix = "" if self._path_repo else " because this setting is empty"
        reason = f"location [{location}] doesn't match any of the locations specified by path.repo{suffix}"
        raise _repository_error(name, reason, wrapped=True)

    def _get_repositories(self, req: _Request) -> _Response:
        names = _split(req.params.get("repository", ""))
        self._bool_param(req, "local", False)
        self._master_timeout(req)
        self._finish(req, "repository-get")
        with self._lock:
            if not names or names == ["_all"]:
                chosen = list(self._repositories)
            else:
                chosen = []
                for name in names:
                    if "*" in name:
                        chosen += [r for r in self._repositories if _simple_match(name, r) and r not in chosen]
                    elif name in self._repositories:
                        chosen.append(name)
                    else:
                        raise _repository_missing(name)
            answer = {
                n: {"type": self._repositories[n].type, "settings": dict(self._repositories[n].settings)}
                for n in chosen
            }
        return _Response(200, answer)

    def _delete_repository(self, req: _Request) -> _Response:
        name = req.params["repository"]
        self._time_param(req, "timeout")
        self._master_timeout(req)
        self._finish(req, "repository-delete")
        with self._lock:
            self._advance()
            matched = [r for r in self._repositories if _simple_match(name, r)]
            if not matched:
                raise _repository_missing(name)
            for repository in matched:
                if self._repository_in_use(repository):
                    raise _error(
                        500,
                        "illegal_state_exception",
                        "trying to modify or unregister repository that is currently used",
                    )
            for repository in matched:  # its snapshots stay where they are stored
                del self._repositories[repository]
                self._event("repository-deleted", repository=repository)
        return _Response(200, {"acknowledged": True})

    def _verify_repository(self, req: _Request) -> _Response:
        name = req.params["repository"]
        self._time_param(req, "timeout")
        self._master_timeout(req)
        self._finish(req, "repository-verify")
        with self._lock:
            self._repository(name)
        return _Response(200, {"nodes": {self._node_id: {"name": self._node_name}}})

    # ------------------------------------------------------------------- actions: snapshots

    def _create_snapshot(self, req: _Request) -> _Response:
        repository_name, name = req.params["repository"], req.params["snapshot"]
        body = self._json_body(req, required=False)
        terms: list[str] = []
        ignore_unavailable, allow_no_indices, expand = False, True, frozenset({"open"})
        include_global_state = True
        metadata: dict[str, Any] | None = None
        for key, value in body.items():
            if key == "indices":
                if isinstance(value, str):
                    terms = _split(value)
                elif isinstance(value, list):
                    terms = [str(v) for v in value]
                else:
                    raise _illegal_argument("malformed indices section, should be an array of strings")
            elif key == "partial":
                _node_bool(value, "partial")
            elif key == "settings":
                if not isinstance(value, dict):
                    raise _illegal_argument("malformed settings section, should indices an inner object")
            elif key == "include_global_state":
                include_global_state = _node_bool(value, "include_global_state")
            elif key == "metadata":
                if value is not None and not isinstance(value, dict):
                    raise _illegal_argument("malformed metadata, should be an object")
                metadata = value
            elif key == "ignore_unavailable":
                ignore_unavailable = _node_bool(value, "ignore_unavailable")
            elif key == "allow_no_indices":
                allow_no_indices = _node_bool(value, "allow_no_indices")
            elif key == "expand_wildcards":
                expand = self._expand_wildcards(value)
            elif key in ("feature_states", "ignore_throttled"):
                pass  # accepted, and meaningless here
            else:
                # Stricter than OpenSearch, which ignores unknown keys here: a misspelt option would silently do
                # nothing there, so it fails loudly here (with the wording of the restore request's check).
                raise _illegal_argument(f"Unknown parameter {key}")
        self._master_timeout(req)
        wait = self._bool_param(req, "wait_for_completion", False)
        self._finish(req, "snapshot-create")
        if metadata is not None and _json_size(metadata) > _METADATA_MAX_BYTES:
            reason = (
                f"Validation Failed: 1: metadata must be smaller than 1024 bytes, but was [{_json_size(metadata)}];"
            )
            raise _error(400, "action_request_validation_exception", reason)
        with self._lock:
            self._advance()
            repository = self._repository(repository_name)
            _validate_snapshot_name(repository_name, name)
            storage = self._snapshots_of(repository_name)
            existing = storage.get(name)
            if existing is not None:
                # ensureSnapshotNameNotRunning, then ensureSnapshotNameAvailableInRepo.
                taken = "is already in-progress" if existing.running else "already exists"
                reason = (
                    f"[{repository_name}:{name}] Invalid snapshot name [{name}], snapshot with the same name {taken}"
                )
                raise _error(400, "invalid_snapshot_name_exception", reason)
            if repository.readonly:
                raise _repository_error(repository_name, "cannot create snapshot in a readonly repository")
            chosen = self._resolve(
                terms, ignore_unavailable=ignore_unavailable, allow_no_indices=allow_no_indices, expand=expand
            )
            final_state, final_reason, failed = "SUCCESS", None, []
            if self._next_outcome is not None:
                final_state, final_reason, wanted = self._next_outcome
                self._next_outcome = None
                if final_state == "FAILED":
                    failed = list(chosen)
                else:
                    failed = [n for n in (wanted if wanted is not None else chosen[:1]) if n in chosen]
            snap = _Snapshot(
                name=name,
                uuid=_uuid(),
                indices={
                    n: _SnapshotIndex(
                        self._indices[n].uuid,
                        copy.deepcopy(self._indices[n].documents),
                        sorted(self._indices[n].aliases),
                        dict(self._indices[n].settings),
                    )
                    for n in chosen
                },
                include_global_state=include_global_state,
                metadata=copy.deepcopy(metadata),
                started=time.monotonic(),
                start_ms=_now_ms(),
                final_state=final_state,
                final_reason=final_reason,
                failed_indices=failed,
            )
            storage[name] = snap
            self._event("snapshot-started", repository=repository_name, snapshot=name, indices=list(chosen))
        if not wait:
            return _Response(200, {"accepted": True})
        while True:
            with self._lock:
                self._advance()
                if not snap.running:
                    return _Response(200, {"snapshot": self._snapshot_info(snap)})
                remaining = self._snapshot_done_at(snap) - time.monotonic()
            if self._stopping.wait(max(0.001, min(remaining, 0.05))):
                return _Response(200, {"snapshot": self._snapshot_info(snap)})

    def _get_snapshots(self, req: _Request) -> _Response:
        repository_name = req.params["repository"]
        names = _split(req.params["snapshot"])
        ignore_unavailable = self._bool_param(req, "ignore_unavailable", False)
        verbose = self._bool_param(req, "verbose", True)
        self._master_timeout(req)
        self._finish(req, "snapshot-get")
        with self._lock:
            self._advance()
            self._repository(repository_name)
            storage = self._snapshots_of(repository_name)
            if names == ["_current"]:
                chosen = [s for s in storage.values() if s.running]
            elif not names or names == ["_all"]:
                chosen = list(storage.values())
            else:
                picked: dict[str, _Snapshot] = {}
                for name in names:
                    if "*" in name:
                        picked.update({n: s for n, s in storage.items() if _simple_match(name, n)})
                    elif name in storage:
                        picked[name] = storage[name]
                    elif not ignore_unavailable:
                        raise _snapshot_missing(repository_name, name)
                chosen = list(picked.values())
            infos = [self._snapshot_info(s, verbose=verbose) for s in self._sorted(chosen)]
        return _Response(200, {"snapshots": infos})

    def _delete_snapshots(self, req: _Request) -> _Response:
        repository_name = req.params["repository"]
        names = _split(req.params["snapshot"])
        self._master_timeout(req)
        self._finish(req, "snapshot-delete")
        with self._lock:
            self._advance()
            repository = self._repository(repository_name)
            storage = self._snapshots_of(repository_name)
            doomed: dict[str, _Snapshot] = {}
            for name in names:
                if "*" in name or name == "_all":
                    doomed.update({n: s for n, s in storage.items() if name == "_all" or _simple_match(name, n)})
                elif name in storage:
                    doomed[name] = storage[name]
                else:
                    raise _snapshot_missing(repository_name, name)
            if doomed and repository.readonly:
                raise _repository_error(repository_name, "cannot delete snapshot from a readonly repository")
            for restore in self._restores:
                if restore.repository == repository_name and restore.snapshot in doomed:
                    snap = doomed[restore.snapshot]
                    raise _error(
                        503,
                        "concurrent_snapshot_execution_exception",
                        f"[{repository_name}:{snap.name}/{snap.uuid}] cannot delete snapshot during a restore in "
                        f"progress in [[{restore.uuid}] [{repository_name}:{snap.name}/{snap.uuid}]]",
                    )
            for name, snap in doomed.items():
                # Deleting a running snapshot aborts it; either way it is gone.
                del storage[name]
                self._event("snapshot-deleted", repository=repository_name, snapshot=name, aborted=snap.running)
        return _Response(200, {"acknowledged": True})

    # ------------------------------------------------------------------- actions: restore

    def _restore(self, req: _Request) -> _Response:
        repository_name, name = req.params["repository"], req.params["snapshot"]
        self._master_timeout(req)
        wait = self._bool_param(req, "wait_for_completion", False)
        body = self._json_body(req, required=False)
        terms: list[str] = []
        ignore_unavailable, allow_no_indices = False, True
        include_aliases, partial = True, False
        rename_pattern: str | None = None
        rename_replacement: str | None = None
        index_settings: dict[str, Any] = {}
        ignore_settings: list[str] = []
        for key, value in body.items():  # RestoreSnapshotRequest.source, in the order the keys came
            if key == "indices":
                if isinstance(value, str):
                    terms = _split(value)
                elif isinstance(value, list):
                    terms = [str(v) for v in value]
                else:
                    raise _illegal_argument("malformed indices section, should be an array of strings")
            elif key == "partial":
                partial = _node_bool(value, "partial")
            elif key == "settings":
                if not isinstance(value, dict):
                    raise _illegal_argument("malformed settings section")
            elif key == "include_global_state":
                _node_bool(value, "include_global_state")
            elif key == "include_aliases":
                include_aliases = _node_bool(value, "include_aliases")
            elif key == "rename_pattern":
                if not isinstance(value, str):
                    raise _illegal_argument("malformed rename_pattern")
                rename_pattern = value
            elif key == "rename_replacement":
                if not isinstance(value, str):
                    raise _illegal_argument("malformed rename_replacement")
                rename_replacement = value
            elif key == "index_settings":
                if not isinstance(value, dict):
                    raise _illegal_argument("malformed index_settings section")
                index_settings = _flatten_settings(value)
            elif key == "ignore_index_settings":
                if isinstance(value, str):
                    ignore_settings = _split(value)
                elif isinstance(value, list):
                    ignore_settings = [str(v) for v in value]
                else:
                    raise _illegal_argument("malformed ignore_index_settings section, should be an array of strings")
            elif key == "storage_type":
                if value not in ("local", "remote_snapshot"):
                    raise _illegal_argument("malformed storage_type")
            elif key == "ignore_unavailable":
                ignore_unavailable = _node_bool(value, "ignore_unavailable")
            elif key == "allow_no_indices":
                allow_no_indices = _node_bool(value, "allow_no_indices")
            elif key == "expand_wildcards":
                self._expand_wildcards(value)
            elif key != "ignore_throttled":
                raise _illegal_argument(f"Unknown parameter {key}")
        self._finish(req, "snapshot-restore")
        # "index." is implied in index_settings keys (Settings.normalizePrefix).
        index_settings = {(k if k.startswith("index.") else f"index.{k}"): v for k, v in index_settings.items()}
        with self._lock:
            self._advance()
            self._repository(repository_name)
            snap = self._snapshots_of(repository_name).get(name)
            if snap is None or snap.running:  # only finished snapshots are in the repository's index
                raise _restore_error(f"{repository_name}:{name}", "snapshot does not exist")
            label = f"{repository_name}:{name}/{snap.uuid}"
            if snap.state not in ("SUCCESS", "PARTIAL"):
                raise _restore_error(label, f"unsupported snapshot state [{snap.state}]")
            sources = self._filter_snapshot_indices(
                sorted(snap.indices), terms, ignore_unavailable=ignore_unavailable, allow_no_indices=allow_no_indices
            )
            targets: dict[str, str] = {}
            for source in sources:
                target = source
                if rename_pattern is not None and rename_replacement is not None:
                    target = java_replace_all(source, rename_pattern, rename_replacement)
                if target in targets:
                    raise _restore_error(
                        f"{repository_name}:{name}",
                        f"indices [{source}] and [{targets[target]}] are renamed into the same index [{target}]",
                    )
                targets[target] = source
            alias_map = self._alias_map()
            restored_aliases: set[str] = set()
            plans: list[tuple[str, str, dict[str, Any], bool]] = []
            for target, source in targets.items():
                failed_shard = source in snap.failed_indices
                if failed_shard and not partial:
                    raise _restore_error(label, f"index [{source}] wasn't fully snapshotted - cannot restore")
                settings = self._restored_settings(
                    label, snap.indices[source].settings, index_settings, ignore_settings
                )
                current = self._indices.get(target)
                if current is None:
                    _validate_index_name(target, aliases=alias_map)
                else:
                    if not current.closed:
                        raise _restore_error(label, f"cannot restore index [{target}] {_OPEN_INDEX_EXISTS}")
                    if failed_shard:
                        raise _restore_error(
                            label, f"cannot restore partial index [{target}] because such index already exists"
                        )
                if include_aliases:
                    restored_aliases |= set(snap.indices[source].aliases)
                plans.append((target, source, settings, failed_shard))
            for target, source in targets.items():
                if target in restored_aliases:
                    raise _restore_error(
                        label,
                        f"cannot rename index [{source}] into [{target}] "
                        "because of conflict with an alias with the same name",
                    )
            clashes = sorted(a for a in restored_aliases if a in self._indices and a not in targets)
            if clashes:
                found = ", ".join(f"{a} (alias of [{t}/{self._indices[t].uuid}])" for a in clashes for t in targets)
                raise _error(
                    500,
                    "illegal_state_exception",
                    f"index and alias names need to be unique, but the following duplicates were found [{found}]",
                )
            restore = _Restore(
                _uuid(),
                repository_name,
                name,
                snap.uuid,
                sorted(targets),
                sum(1 for *_, failed_shard in plans if failed_shard),
                time.monotonic(),
            )
            for target, source, settings, failed_shard in plans:
                self._apply_restore(restore, snap, target, source, settings, failed_shard, include_aliases)
            self._restores.append(restore)
            self._event("restore-started", repository=repository_name, snapshot=name, indices=sorted(targets))
        if not wait:
            return _Response(200, {"accepted": True})
        self._stopping.wait(self._restore_seconds)
        total = len(restore.indices)
        info: dict[str, Any] = {"snapshot": name, "indices": restore.indices}
        info["shards"] = {"total": total, "failed": restore.failed, "successful": total - restore.failed}
        return _Response(200, {"snapshot": info})

    @staticmethod
    def _restored_settings(
        label: str, settings: dict[str, Any], changes: dict[str, Any], ignored: list[str]
    ) -> dict[str, Any]:
        """RestoreService.updateIndexSettings: drop the ignored settings, then apply the changes."""
        if (
            settings.get("index.soft_deletes.enabled", "true") == "true"
            and changes.get("index.soft_deletes.enabled") == "false"
        ):
            raise _restore_error(label, "cannot disable setting [index.soft_deletes.enabled] on restore")
        kept = dict(settings)
        for pattern in ignored:
            if "*" not in pattern:
                if pattern in _UNREMOVABLE_SETTINGS:
                    raise _restore_error(label, f"cannot remove setting [{pattern}] on restore")
                kept.pop(pattern, None)
            else:
                kept = {k: v for k, v in kept.items() if k in _UNREMOVABLE_SETTINGS or not _simple_match(pattern, k)}
        for key, value in changes.items():
            if key in _UNMODIFIABLE_SETTINGS:
                raise _restore_error(label, f"cannot modify setting [{key}] on restore")
            kept[key] = value
        return kept

    def _apply_restore(
        self,
        restore: _Restore,
        snap: _Snapshot,
        target: str,
        source: str,
        settings: dict[str, Any],
        failed_shard: bool,
        include_aliases: bool,
    ) -> None:
        content = snap.indices[source]
        current = self._indices.get(target)
        # Without include_aliases, a closed index restored over keeps its own aliases; a new one gets none.
        kept = set(current.aliases) if current is not None else set()
        aliases = set(content.aliases) if include_aliases else kept
        index = _Index(
            target,
            current.uuid if current is not None else _uuid(),
            [] if failed_shard else copy.deepcopy(content.documents),
            aliases,
            settings,
            current.created_ms if current is not None else _now_ms(),
            restored_from={
                "repository": restore.repository,
                "snapshot": snap.name,
                "snapshot_uuid": snap.uuid,
                "index": source,
                "restore_uuid": restore.uuid,
            },
            recovery_started=restore.started,
            recovery_started_ms=_now_ms(),
            recovered_empty=failed_shard,
        )
        self._indices[target] = index
        for alias in sorted(aliases - (current.aliases if current is not None else set())):
            self._event("alias-added", alias=alias, index=target)

    # ------------------------------------------------------------------- actions: indices

    def _recovery(self, req: _Request) -> _Response:
        terms = _split(req.params.get("index", ""))
        ignore_unavailable, allow_no_indices, expand = self._indices_options(
            req, ignore_unavailable=False, allow_no_indices=True, expand="open"
        )
        self._bool_param(req, "detailed", False)
        active_only = self._bool_param(req, "active_only", False)
        self._finish(req, "recovery")
        with self._lock:
            self._advance()
            names = self._resolve(
                terms, ignore_unavailable=ignore_unavailable, allow_no_indices=allow_no_indices, expand=expand
            )
            answer: dict[str, Any] = {}
            for name in names:
                shard = self._recovery_of(self._indices[name])
                if active_only and shard["stage"] == "DONE":
                    continue
                answer[name] = {"shards": [shard]}
        return _Response(200, answer)

    def _recovery_of(self, index: _Index) -> dict[str, Any]:
        stage = self._recovery_stage(index)
        size = self._index_size(index.documents)
        if index.restored_from is not None and not index.recovered_empty:
            origin = index.restored_from
            kind = "SNAPSHOT"
            source: dict[str, Any] = {
                "repository": origin["repository"],
                "snapshot": origin["snapshot"],
                "version": _VERSION,
                "index": origin["index"],
                "restoreUUID": origin["restore_uuid"],
            }
            start = index.recovery_started_ms
            fraction = (
                1.0
                if self._restore_seconds == 0
                else (time.monotonic() - index.recovery_started) / self._restore_seconds
            )
            fraction = min(1.0, max(0.0, fraction))
            elapsed = int(min(time.monotonic() - index.recovery_started, self._restore_seconds) * 1000)
        else:
            kind, source, start, fraction, elapsed = "EMPTY_STORE", {}, index.created_ms, 1.0, 0
        recovered = int(size * fraction) if stage != "DONE" else size
        shard: dict[str, Any] = {
            "id": 0,
            "type": kind,
            "stage": stage,
            "primary": True,
            "start_time_in_millis": start,
        }
        if stage == "DONE":
            shard["stop_time_in_millis"] = start + elapsed
        shard["total_time_in_millis"] = elapsed
        shard["source"] = source
        shard["target"] = {
            "id": self._node_id,
            "host": "127.0.0.1",
            "transport_address": "127.0.0.1:9300",
            "ip": "127.0.0.1",
            "name": self._node_name,
        }
        percent = f"{100.0 * recovered / size:.1f}%" if size else "0.0%"
        files_total = 1 + len(index.documents)
        files_recovered = files_total if stage == "DONE" else int(files_total * fraction)
        shard["index"] = {
            "size": {"total_in_bytes": size, "reused_in_bytes": 0, "recovered_in_bytes": recovered, "percent": percent},
            "files": {
                "total": files_total,
                "reused": 0,
                "recovered": files_recovered,
                "percent": f"{100.0 * files_recovered / files_total:.1f}%",
            },
            "total_time_in_millis": elapsed,
            "source_throttle_time_in_millis": 0,
            "target_throttle_time_in_millis": 0,
        }
        shard["translog"] = {
            "recovered": 0,
            "total": 0,
            "percent": "100.0%",
            "total_on_start": 0,
            "total_time_in_millis": 0,
        }
        shard["verify_index"] = {"check_index_time_in_millis": 0, "total_time_in_millis": 0}
        return shard

    def _cat_indices(self, req: _Request) -> _Response:
        terms = _split(req.params.get("index", ""))
        text_format = req.param("format") or "txt"
        if text_format not in ("json", "txt", "text", "yaml", "smile", "cbor"):
            raise _illegal_argument(f"Unsupported format [{text_format}]")
        columns_param = req.param("h")
        sort_param = req.param("s")
        verbose = self._bool_param(req, "v", False)
        bytes_unit = req.param("bytes")
        health_filter = req.param("health")
        if health_filter is not None and health_filter not in ("green", "yellow", "red"):
            raise _illegal_argument(
                f"No enum constant org.opensearch.cluster.health.ClusterHealthStatus.{health_filter.upper()}"
            )
        for name in ("time", "pri", "local", "include_unloaded_segments"):
            req.param(name)
        expand = self._expand_wildcards(req.param("expand_wildcards") or "all")
        self._master_timeout(req)
        self._finish(req, "cat-indices")
        if text_format not in ("json", "txt", "text"):
            raise _illegal_argument(f"format [{text_format}] is not modelled by the simulator")
        with self._lock:
            self._advance()
            names = self._resolve(terms, ignore_unavailable=False, allow_no_indices=True, expand=expand)
            rows = [self._cat_row(self._indices[n], bytes_unit) for n in names]
        if health_filter is not None:
            rows = [row for row in rows if row["health"] == health_filter]
        columns = list(_CAT_COLUMNS)
        if columns_param:
            columns = []
            for wanted in _split(columns_param):
                matches = [c for c in _CAT_COLUMNS if _simple_match(wanted, c)]
                if not matches:
                    raise _illegal_argument(f"Unable to find column [{wanted}]")
                columns += [c for c in matches if c not in columns]
        for spec in reversed(_split(sort_param or "")):
            column, _, order = spec.partition(":")
            if column not in _CAT_COLUMNS:
                raise _illegal_argument(f"Unable to sort by unknown sort key `{column}`")
            rows.sort(key=functools.partial(_cat_sort_key, column), reverse=order == "desc")
        rows = [{c: row[c] for c in columns} for row in rows]
        if text_format == "json":
            return _Response(200, rows)
        table = [columns] if verbose else []
        table += [["" if row[c] is None else str(row[c]) for c in columns] for row in rows]
        widths = [max((len(line[i]) for line in table), default=0) for i in range(len(columns))]
        lines = [" ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() + "\n" for line in table]
        return _Response(200, body="".join(lines).encode(), content_type=_TEXT)

    def _cat_row(self, index: _Index, bytes_unit: str | None) -> dict[str, Any]:
        size = self._index_size(index.documents)
        if bytes_unit == "b":
            size_text = str(size)
        elif bytes_unit == "kb":
            size_text = str(size // 1024)
        else:
            size_text = _human_bytes(size)
        restoring = self._recovery_stage(index) != "DONE"
        if index.closed:
            return {
                "health": "green",
                "status": "close",
                "index": index.name,
                "uuid": index.uuid,
                "pri": "1",
                "rep": "0",
                "docs.count": None,
                "docs.deleted": None,
                "store.size": None,
                "pri.store.size": None,
            }
        return {
            "health": "red" if restoring else "green",  # a primary being restored is not yet assigned
            "status": "open",
            "index": index.name,
            "uuid": index.uuid,
            "pri": "1",
            "rep": "0",
            "docs.count": str(len(index.documents)),
            "docs.deleted": "0",
            "store.size": size_text,
            "pri.store.size": size_text,
        }

    def _get_index(self, req: _Request) -> _Response:
        terms = _split(req.params["index"])
        endpoint = "index-exists" if req.method == "HEAD" else "index-get"
        ignore_unavailable, allow_no_indices, expand = self._indices_options(
            req, ignore_unavailable=False, allow_no_indices=True, expand="open"
        )
        for name in ("local", "include_defaults"):
            self._bool_param(req, name, False)
        flat = self._bool_param(req, "flat_settings", False)
        if endpoint == "index-get":
            self._master_timeout(req)
        self._finish(req, endpoint)
        with self._lock:
            self._advance()
            try:
                names = self._resolve(
                    terms, ignore_unavailable=ignore_unavailable, allow_no_indices=allow_no_indices, expand=expand
                )
            except _ApiError:
                if req.method == "HEAD":
                    return _Response(404, None, content_type=None)
                raise
            if req.method == "HEAD":
                return _Response(200 if names else 404, None, content_type=None)
            answer = {}
            for name in names:
                index = self._indices[name]
                settings = {**index.settings, "index.uuid": index.uuid, "index.provided_name": name}
                settings["index.creation_date"] = str(index.created_ms)
                answer[name] = {
                    "aliases": {alias: {} for alias in sorted(index.aliases)},
                    "mappings": {},
                    "settings": settings if flat else _nest_settings(settings),
                }
        return _Response(200, answer)

    def _delete_index(self, req: _Request) -> _Response:
        expression = req.params["index"]
        terms = _split(expression)
        ignore_unavailable, allow_no_indices, expand = self._indices_options(
            req, ignore_unavailable=False, allow_no_indices=True, expand="open,closed"
        )
        self._time_param(req, "timeout")
        self._master_timeout(req)
        self._finish(req, "index-delete")
        if self._destructive_requires_name and (not terms or any(t == "_all" or "*" in t for t in terms)):
            raise _illegal_argument("Wildcard expressions or all indices are not allowed")
        with self._lock:
            self._advance()
            names = self._resolve(
                terms,
                ignore_unavailable=ignore_unavailable,
                allow_no_indices=allow_no_indices,
                expand=expand,
                aliases_allowed=False,
            )
            busy = [
                f"[{n}/{self._indices[n].uuid}]"
                for n in names
                if any(s.running and n in s.indices for st in self._storage.values() for s in st.values())
            ]
            if busy:
                raise _error(
                    400,
                    "snapshot_in_progress_exception",
                    f"Cannot delete indices that are being snapshotted: [{', '.join(busy)}]. Try again after snapshot "
                    "finishes or cancel the currently running snapshot.",
                )
            for name in names:
                del self._indices[name]
                self._event("index-deleted", index=name)
        return _Response(200, {"acknowledged": True})

    def _get_alias(self, req: _Request) -> _Response:
        names = _split(req.params.get("name", ""))
        # Read (and checked) as the server does; aliases here are never closed or unavailable.
        self._indices_options(req, ignore_unavailable=False, allow_no_indices=True, expand="all")
        self._bool_param(req, "local", False)
        self._finish(req, "alias-get")
        with self._lock:
            alias_map = self._alias_map()
            if not names or names == ["_all"]:
                answer: dict[str, Any] = {
                    n: {"aliases": {a: {} for a in sorted(i.aliases)}} for n, i in sorted(self._indices.items())
                }
                return _Response(200, answer)
            chosen = [a for a in alias_map if any(_simple_match(n, a) if "*" in n else n == a for n in names)]
            missing = [n for n in names if "*" not in n and n not in alias_map]
            found: dict[str, Any] = {}
            for alias in chosen:
                for index in alias_map[alias]:
                    found.setdefault(index, {"aliases": {}})["aliases"][alias] = {}
            found = dict(sorted(found.items()))
        if missing:
            # RestGetAliasesAction's own shape: a string error and the aliases it did find.
            what = f"alias [{missing[0]}]" if len(missing) == 1 else f"aliases [{','.join(missing)}]"
            return _Response(404, {"error": f"{what} missing", "status": 404, **found})
        return _Response(200, found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rehearsal.search_simulator",
        description="Run the OpenSearch snapshot-API simulator in the foreground until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="an address on 127.0.0.0/8")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--auth", choices=("basic", "sigv4"), default="basic")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--path-repo", action="append", default=[], help="a directory fs repositories may use")
    parser.add_argument("--snapshot-seconds", type=float, default=2.0)
    parser.add_argument("--restore-seconds", type=float, default=2.0)
    parser.add_argument("--allow-wildcard-delete", action="store_true", help="action.destructive_requires_name off")
    parser.add_argument("--index", action="append", default=[], help="an index to start with (repeatable)")
    args = parser.parse_args(argv)
    if not args.host.startswith("127."):
        parser.error("--host must be on 127.0.0.0/8")

    sim = SearchSimulator(
        auth=args.auth,
        username=args.username,
        password=args.password,
        region=args.region,
        path_repo=args.path_repo,
        snapshot_seconds=args.snapshot_seconds,
        restore_seconds=args.restore_seconds,
        destructive_requires_name=not args.allow_wildcard_delete,
        host=args.host,
        port=args.port,
    )
    for index in args.index:
        sim.add_index(index)
    try:
        with sim:
            how = "basic auth" if args.auth == "basic" else f"SigV4 (any key, secret {TEST_SECRET!r})"
            print(f"OpenSearch simulator listening on {sim.url} ({how}); Ctrl-C to stop", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("OpenSearch simulator stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
