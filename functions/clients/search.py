"""The search cluster's snapshot API (OpenSearch, or Elasticsearch 7+; Amazon OpenSearch Service): register the
snapshot repository, start, read and delete snapshots, restore them under other names, and the restored indices.

Everything the cluster (or whatever answers in its place) sends is untrusted, as Bitbucket's answers are:
- Redirects are never followed: the credentials (or the signed request) must not go to another origin.
- A body is read up to `max_body_bytes` (1 MiB) and JSON no deeper than MAX_JSON_DEPTH; the fields taken from it are
  checked for type and size.
- Idempotent calls (GET, DELETE, the repository's PUT) are retried on connection errors, 5xx and 429 with a bounded
  back-off; starting a snapshot and a restore are retried only when nothing reached the cluster.
- Error texts name the step, the HTTP status and the server's error type; never a URL's query or a credential.

Authentication: Amazon OpenSearch Service requests are signed with SigV4 (service `es`) with the function's role;
self-managed clusters get HTTP basic authentication with the secret's username and password.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from functions.clients.bitbucket import MAX_BACKOFF_SECONDS, _NoRedirects, _reason, read_bounded
from functions.clients.bitbucket_answers import MAX_JSON_DEPTH, Credentials, content_type, location, nesting
from functions.errors import SearchRequestFailed, SearchUnavailable
from functions.models.part_config import AmazonOpenSearchConfig, SearchIndexConfig
from functions.observability import logger

MAX_BODY_BYTES = 1024 * 1024
# What a snapshot's state is, as the server says it.
SNAPSHOT_STATES = frozenset({"IN_PROGRESS", "SUCCESS", "FAILED", "PARTIAL", "INCOMPATIBLE"})
_NAME = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,254}$")


@dataclass(frozen=True)
class SnapshotInfo:
    state: str  # one of SNAPSHOT_STATES
    indices: list[str]
    metadata: dict[str, str]


class SearchCluster:
    """One cluster's snapshot API, as the steps need it."""

    def __init__(
        self,
        config: SearchIndexConfig,
        *,
        credentials: Callable[[bool], Credentials] | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.5,
        verify: bool | str = True,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.endpoint = config.endpoint
        self.repository = config.repository
        self._timeout = timeout
        self._max_body = max_body_bytes
        auth: requests.auth.AuthBase
        if isinstance(config, AmazonOpenSearchConfig):
            auth = _SigV4(config.region)
            self._credentials: Callable[[bool], Credentials] | None = None
        else:
            if credentials is None:
                raise ValueError("a self-managed cluster needs its credentials")
            self._credentials = credentials
            auth = _basic(credentials(False))
        common: dict[str, Any] = {
            "total": retries,
            "backoff_factor": backoff,
            "backoff_max": MAX_BACKOFF_SECONDS,
            "respect_retry_after_header": False,  # a step waits its own bounded back-off, not the server's say
            "raise_on_status": False,
            "redirect": False,
        }
        idempotent = Retry(
            allowed_methods=frozenset({"GET", "PUT", "DELETE"}), status_forcelist=(429, 500, 502, 503, 504), **common
        )
        # Starting a snapshot or a restore twice is not harmless: retried only when no connection was made.
        once = Retry(allowed_methods=frozenset({"GET"}), status_forcelist=(), **common)
        self._sessions = {True: _session(idempotent, verify, auth), False: _session(once, verify, auth)}

    # --- the snapshot repository -----------------------------------------------------------------------------------

    def repository_settings(self, step: str) -> dict[str, Any] | None:
        """The repository's type and settings, None when the cluster has no repository of that name."""
        body = self._unless_missing(step, "GET", f"/_snapshot/{_name(self.repository)}", "repository_missing_exception")
        if body is None:
            return None
        found = body.get(self.repository)
        if not isinstance(found, dict) or not isinstance(found.get("type"), str):
            raise SearchRequestFailed(f"{step}: the cluster's answer has no repository {self.repository} with a type")
        return found

    def register_repository(self, step: str, kind: str, settings: dict[str, str]) -> None:
        self._json(step, "PUT", f"/_snapshot/{_name(self.repository)}", body={"type": kind, "settings": settings})

    # --- snapshots ------------------------------------------------------------------------------------------------

    def create_snapshot(self, step: str, name: str, indices: list[str], metadata: dict[str, str]) -> None:
        """Starts a snapshot and returns as soon as the cluster accepted it (it is then consistent: each shard is
        copied as it was when the snapshot started)."""
        body = {
            "indices": ",".join(indices),
            "ignore_unavailable": True,  # a pattern that matches nothing yet (a new instance) is not a failure
            "include_global_state": False,  # the cluster's settings and templates are not Bitbucket's
            "metadata": metadata,
        }
        path = f"/_snapshot/{_name(self.repository)}/{_name(name)}"
        answer = self._json(step, "PUT", path, params={"wait_for_completion": "false"}, body=body, retry=False)
        if answer.get("accepted") is not True:
            raise SearchRequestFailed(f"{step}: the cluster did not accept snapshot {name}")

    def snapshot(self, step: str, name: str) -> SnapshotInfo | None:
        """The snapshot's state, None when the repository has no snapshot of that name."""
        path = f"/_snapshot/{_name(self.repository)}/{_name(name)}"
        body = self._unless_missing(step, "GET", path, "snapshot_missing_exception")
        if body is None:
            return None
        listed = body.get("snapshots")
        if not isinstance(listed, list) or len(listed) != 1 or not isinstance(listed[0], dict):
            raise SearchRequestFailed(f"{step}: the cluster's answer does not describe snapshot {name}")
        return _info(step, name, listed[0])

    def delete_snapshot(self, step: str, name: str) -> bool:
        """Deletes the snapshot (one still running is aborted); False when there was none."""
        path = f"/_snapshot/{_name(self.repository)}/{_name(name)}"
        return self._unless_missing(step, "DELETE", path, "snapshot_missing_exception") is not None

    # --- restore --------------------------------------------------------------------------------------------------

    def restore(self, step: str, name: str, indices: list[str], prefix: str) -> None:
        """Restores the snapshot's `indices` as `<prefix><index>`, without aliases (a live alias would point at the
        restored copy too) and without the cluster's global state."""
        body = {
            "indices": ",".join(indices),
            "include_global_state": False,
            "include_aliases": False,
            "rename_pattern": "(.+)",
            "rename_replacement": f"{prefix}$1",
        }
        path = f"/_snapshot/{_name(self.repository)}/{_name(name)}/_restore"
        answer = self._json(step, "POST", path, params={"wait_for_completion": "false"}, body=body, retry=False)
        if answer.get("accepted") is not True:
            raise SearchRequestFailed(f"{step}: the cluster did not accept the restore of snapshot {name}")

    def indices(self, step: str, pattern: str) -> list[str]:
        """The names of the indices matching `pattern` (a name with wildcards)."""
        answer = self._send(step, "GET", f"/_cat/indices/{_name(pattern)}", params={"format": "json"})
        rows = self._parse(step, answer)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise SearchRequestFailed(f"{step}: the cluster's list of indices is not a list of rows")
        return sorted(str(r.get("index")) for r in rows if isinstance(r.get("index"), str))

    def recovery(self, step: str, names: list[str]) -> dict[str, list[str]]:
        """Each existing index's shards' recovery stages (DONE when a restored shard is ready)."""
        path = f"/{','.join(_name(n) for n in names)}/_recovery"
        body = self._unless_missing(step, "GET", path, "index_not_found_exception")
        stages: dict[str, list[str]] = {}
        for index, value in (body or {}).items():
            shards = value.get("shards") if isinstance(value, dict) else None
            if not isinstance(shards, list):
                raise SearchRequestFailed(f"{step}: the recovery of index {index} has no shards")
            stages[str(index)] = [str(s.get("stage")) for s in shards if isinstance(s, dict)]
        return stages

    def delete_indices(self, step: str, names: list[str]) -> list[str]:
        """Deletes the named indices (never a pattern); returns those that were there."""
        deleted = []
        for name in names:
            if "*" in name:
                raise ValueError(f"{step}: index {name} is a pattern; only named indices are deleted")
            if self._unless_missing(step, "DELETE", f"/{_name(name)}", "index_not_found_exception") is not None:
                deleted.append(name)
        return deleted

    # --- plumbing ---------------------------------------------------------------------------------------------------

    def _unless_missing(self, step: str, method: str, path: str, missing: str) -> dict[str, Any] | None:
        """The answer, or None when the cluster says what the path names is not there (404 with error `missing`)."""
        try:
            return self._json(step, method, path)
        except SearchRequestFailed as error:
            if error.status == 404 and error.kind == missing:
                return None
            raise

    def _json(
        self,
        step: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        retry: bool = True,
    ) -> dict[str, Any]:
        found = self._parse(step, self._send(step, method, path, params=params, body=body, retry=retry))
        if not isinstance(found, dict):
            raise SearchRequestFailed(f"{step}: the search cluster answered JSON that is not an object")
        return found

    def _send(
        self,
        step: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        retry: bool = True,
    ) -> tuple[int, str, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        try:
            response = self._sessions[retry].request(
                method,
                self.endpoint + path,
                params=params,
                data=data,
                headers={"Content-Type": "application/json"} if data is not None else None,
                timeout=self._timeout,
                allow_redirects=False,  # never: the credentials or the signed request would go along
                stream=True,
            )
        except requests.RequestException as error:
            timed_out = isinstance(error, requests.Timeout) or "timed out" in str(error)
            what = f"no answer within {self._timeout:g} s" if timed_out else f"connection failed ({_reason(error)})"
            raise SearchUnavailable(f"{step}: the search cluster: {what}") from None
        with response:
            status = response.status_code
            if 300 <= status < 400:
                raise SearchRequestFailed(
                    f"{step}: the search cluster answered HTTP {status}, a redirect to {location(response.headers)}, "
                    "which is never followed (the credentials would go with it): check search.endpoint",
                    status,
                )
            if status == 401 and self._credentials is not None:
                refresh, self._credentials = self._credentials, None  # once: the secret may have been rotated
                fresh = _basic(refresh(True))
                for session in self._sessions.values():
                    session.auth = fresh
                logger.info(f"{step}: the search cluster refused the credentials; read the secret again, retrying once")
                return self._send(step, method, path, params=params, body=body, retry=retry)
            payload = self._read(step, response)
            kind = content_type(response.headers)
        if status >= 500 or status == 429:
            error_kind, reason = _error_of(payload)
            if status >= 500 and error_kind:  # the server's own refusal (a restore over an open index answers 500)
                raise SearchRequestFailed(
                    f"{step}: the search cluster refused: {reason} (HTTP {status})", status, error_kind
                )
            raise SearchUnavailable(f"{step}: the search cluster answered HTTP {status}")
        if status >= 400:
            error_kind, reason = _error_of(payload)
            raise SearchRequestFailed(
                f"{step}: the search cluster refused: {reason or _hint(status)} (HTTP {status})", status, error_kind
            )
        if status < 200:
            raise SearchRequestFailed(f"{step}: the search cluster answered HTTP {status}, which is not an answer")
        return status, kind, payload

    def _read(self, step: str, response: requests.Response) -> bytes:
        too_big = SearchRequestFailed(
            f"{step}: the search cluster answered more than {self._max_body:,} bytes; its snapshot API's answers are "
            "small, so something else answered"
        )
        try:
            return read_bounded(response, self._max_body, too_big)
        except requests.RequestException:
            raise SearchUnavailable(f"{step}: the search cluster's answer broke off") from None

    @staticmethod
    def _parse(step: str, answer: tuple[int, str, bytes]) -> Any:
        status, kind, payload = answer
        found = _loads(payload)
        if found is _BAD:
            raise SearchRequestFailed(
                f"{step}: the search cluster answered HTTP {status} with a body that is not JSON "
                f"({kind or 'no content type'}); a proxy or load balancer may have answered"
            )
        return found


_BAD = object()


def _loads(payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return _BAD
    if nesting(text) > MAX_JSON_DEPTH:
        return _BAD
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _BAD


def _error_of(payload: bytes) -> tuple[str | None, str]:
    """The server's error type and reason, printable and bounded ("" when it did not send its error shape)."""
    found = _loads(payload)
    error = found.get("error") if isinstance(found, dict) else None
    if isinstance(error, dict):
        kind, reason = error.get("type"), error.get("reason")
        kind = kind if isinstance(kind, str) and re.fullmatch(r"[a-z_]{1,80}", kind) else None
        text = reason if isinstance(reason, str) else ""
        return kind, re.sub(r"[^\x20-\x7e]", "", text)[:300]
    message = (found.get("Message") or found.get("message")) if isinstance(found, dict) else None
    if isinstance(message, str):  # Amazon OpenSearch Service's own refusals (IAM, signature)
        return None, re.sub(r"[^\x20-\x7e]", "", message)[:300]
    return None, ""


def _hint(status: int) -> str:
    return {
        401: "credentials rejected: check the secret's username and password",
        403: "forbidden: check the role's es:ESHttp* permissions and the domain's access policy",
        404: "not found: check search.endpoint",
    }.get(status, "a refusal without the server's error")


def _name(value: str) -> str:
    """A repository, snapshot or index name (or pattern) in a path: checked, then quoted."""
    if not _NAME.match(value.replace("*", "x")) or ".." in value:
        raise ValueError(f"'{value}' is not a valid repository, snapshot or index name")
    return quote(value, safe="*")


def _info(step: str, name: str, raw: dict[str, Any]) -> SnapshotInfo:
    state = raw.get("state")
    if raw.get("snapshot") != name or state not in SNAPSHOT_STATES:
        raise SearchRequestFailed(f"{step}: the cluster's answer for snapshot {name} has no known state")
    indices = raw.get("indices")
    metadata = raw.get("metadata")
    return SnapshotInfo(
        state=str(state),
        indices=[str(i) for i in indices if isinstance(i, str)][:1000] if isinstance(indices, list) else [],
        metadata={str(k): str(v)[:256] for k, v in metadata.items()} if isinstance(metadata, dict) else {},
    )


def _session(retry: Retry, verify: bool | str, auth: requests.auth.AuthBase) -> requests.Session:
    session = _NoRedirects()
    session.verify = verify
    session.trust_env = False  # no proxy or .netrc from the environment: the config says where to connect
    session.auth = auth
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.update({"Accept": "application/json"})
    return session


def _basic(credentials: Credentials) -> requests.auth.AuthBase:
    return requests.auth.HTTPBasicAuth(credentials.username or "", credentials.password or "")


class _SigV4(requests.auth.AuthBase):
    """Signs each request (each retry again) with the function's role for Amazon OpenSearch Service (`es`)."""

    def __init__(self, region: str) -> None:
        self.region = region

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        from functions.clients.aws import signing_credentials

        body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
        headers = {"Content-Type": request.headers["Content-Type"]} if "Content-Type" in request.headers else {}
        signed = AWSRequest(method=request.method, url=request.url, data=body, headers=headers)
        SigV4Auth(signing_credentials(), "es", self.region).add_auth(signed)
        for header in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if header in signed.headers:
                request.headers[header] = signed.headers[header]
        return request
