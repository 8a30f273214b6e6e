"""The OpenSearch snapshot-API simulator, exercised over real HTTP with `requests` (and botocore for SigV4)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from rehearsal.search_simulator import TEST_SECRET, RedirectTarget, SearchSimulator, java_replace_all, main

AUTH = ("admin", "admin-pw")
TIMEOUT = 2.0
REPO_ROOT = "/srv/snapshots"
DOMAIN_ARN = "arn:aws:es:eu-west-1:111122223333:domain/search"
OPEN_INDEX_EXISTS = (
    "because an open index with same name already exists in the cluster. Either close or delete the existing index "
    "or restore the index under a different name by providing a rename pattern and replacement name"
)


@pytest.fixture
def sim() -> Iterator[SearchSimulator]:
    with SearchSimulator(username="admin", password="admin-pw", path_repo=[REPO_ROOT]) as s:
        s.add_index("bitbucket", [{"id": 1}, {"id": 2}], aliases=["bitbucket-search"])
        s.add_index("bitbucket-audit", [{"id": 3}])
        s.add_index("other", [])
        yield s


@pytest.fixture
def slow() -> Iterator[SearchSimulator]:
    # Snapshots and restores that outlast any test: "still in progress" is then certain, not a race.
    with SearchSimulator(
        username="admin", password="admin-pw", path_repo=[REPO_ROOT], snapshot_seconds=30, restore_seconds=30
    ) as s:
        s.add_index("bitbucket", [{"id": 1}], aliases=["bitbucket-search"])
        yield s


# ------------------------------------------------------------------ helpers


def call(
    sim: SearchSimulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    auth: Any = AUTH,
    timeout: float = TIMEOUT,
    **kwargs: Any,
) -> requests.Response:
    return requests.request(method, sim.url + path, json=body, auth=auth, timeout=timeout, **kwargs)


def error(r: requests.Response) -> tuple[int, str, str]:
    body = r.json()
    assert body["status"] == r.status_code
    assert body["error"]["root_cause"], body
    return r.status_code, body["error"]["type"], body["error"]["reason"]


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        time.sleep(0.01)


def register(sim: SearchSimulator, name: str = "repo", location: str = f"{REPO_ROOT}/bitbucket") -> None:
    r = call(sim, "PUT", f"/_snapshot/{name}", {"type": "fs", "settings": {"location": location}})
    assert r.status_code == 200, r.text


def snapshot(sim: SearchSimulator, name: str, body: Any = None, repo: str = "repo") -> dict[str, Any]:
    """Take a snapshot and wait for it to finish; its info."""
    r = call(sim, "PUT", f"/_snapshot/{repo}/{name}?wait_for_completion=true", body)
    assert r.status_code == 200, r.text
    info: dict[str, Any] = r.json()["snapshot"]
    return info


def get_snapshot(sim: SearchSimulator, name: str, repo: str = "repo") -> dict[str, Any]:
    r = call(sim, "GET", f"/_snapshot/{repo}/{name}")
    assert r.status_code == 200, r.text
    info: dict[str, Any] = r.json()["snapshots"][0]
    return info


def restore(sim: SearchSimulator, name: str, body: Any = None, repo: str = "repo") -> requests.Response:
    return call(sim, "POST", f"/_snapshot/{repo}/{name}/_restore", body)


# ------------------------------------------------------------------ cluster and authentication


def test_info_answers_like_opensearch(sim: SearchSimulator) -> None:
    r = call(sim, "GET", "/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["version"]["distribution"] == "opensearch" and body["version"]["number"] == "2.17.0"
    assert body["tagline"] == "The OpenSearch Project: https://opensearch.org/"
    assert body["name"] and body["cluster_name"]
    head = call(sim, "HEAD", "/")
    assert head.status_code == 200 and head.content == b""
    pretty = call(sim, "GET", "/?pretty")
    assert '"tagline" : "The OpenSearch Project' in pretty.text


def test_basic_auth_is_required_and_failures_are_counted(sim: SearchSimulator) -> None:
    for auth in (None, ("admin", "wrong"), ("nobody", "admin-pw")):
        r = call(sim, "GET", "/_snapshot", auth=auth)
        assert r.status_code == 401, auth
        assert r.headers["WWW-Authenticate"] == 'Basic realm="OpenSearch Security"'
        assert r.text == "Unauthorized" and r.headers["Content-Type"].startswith("text/plain")
    # Authentication comes before routing: even an unknown path is refused first.
    assert call(sim, "GET", "/no/such/route/here", auth=None).status_code == 401
    assert sim.auth_failures == 4
    assert call(sim, "GET", "/_snapshot").status_code == 200
    assert sim.auth_failures == 4


def test_unknown_routes_wrong_methods_and_options(sim: SearchSimulator) -> None:
    r = call(sim, "GET", "/a/b/c/d?x=1")
    assert r.status_code == 400
    assert r.json() == {"error": "no handler found for uri [/a/b/c/d?x=1] and method [GET]", "status": 400}
    r = call(sim, "PATCH", "/_snapshot/repo/snap")
    assert r.status_code == 405 and r.headers["Allow"] == "DELETE,GET,POST,PUT"
    assert "Incorrect HTTP method for uri [/_snapshot/repo/snap] and method [PATCH]" in r.json()["error"]
    r = call(sim, "GET", "/_snapshot/repo/snap/_restore")
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    r = call(sim, "OPTIONS", "/_snapshot/repo")
    assert r.status_code == 200 and r.headers["Allow"] == "DELETE,GET,POST,PUT"
    assert sim.requests[:2] == [("GET", "/a/b/c/d?x=1", 400), ("PATCH", "/_snapshot/repo/snap", 405)]


def test_content_type_body_and_json_are_checked(sim: SearchSimulator) -> None:
    r = requests.put(f"{sim.url}/_snapshot/repo", data=b"{}", headers={"Content-Type": "text/plain"}, auth=AUTH)
    assert r.status_code == 406
    assert r.json() == {"error": "Content-Type header [text/plain] is not supported", "status": 406}
    r = requests.put(f"{sim.url}/_snapshot/repo", data=b'{"type": "fs"}', auth=AUTH)
    assert r.status_code == 406 and r.json()["error"] == "Content-Type header is missing"

    r = call(sim, "PUT", "/_snapshot/repo", data=b'{"type": fs}', headers={"Content-Type": "application/json"})
    status, kind, reason = error(r)
    assert (status, kind) == (400, "json_parse_exception") and "line: 1, column: 10" in reason
    r = call(
        sim,
        "PUT",
        "/_snapshot/repo",
        data=b'{"type": "fs", "type": "s3"}',
        headers={"Content-Type": "application/json"},
    )
    assert error(r)[:2] == (400, "json_parse_exception") and "Duplicate field 'type'" in error(r)[2]
    assert error(call(sim, "PUT", "/_snapshot/repo", [1]))[1] == "x_content_parse_exception"
    assert error(call(sim, "PUT", "/_snapshot/repo")) == (400, "parse_exception", "request body is required")

    # A body where none is read, and parameters nobody reads, are refused as the server refuses them.
    status, kind, reason = error(call(sim, "GET", "/_snapshot", {"x": 1}))
    assert (status, kind, reason) == (
        400,
        "illegal_argument_exception",
        "request [GET /_snapshot] does not support having a body",
    )
    reason = error(call(sim, "PUT", "/_snapshot/repo/s?wait_for_completon=true&zzz=1"))[2]
    assert reason == (
        "request [/_snapshot/repo/s] contains unrecognized parameters: "
        "[wait_for_completon] -> did you mean [wait_for_completion]?, [zzz]"
    )
    assert error(call(sim, "PUT", "/_snapshot/repo/s?wait_for_completion=yes"))[2] == (
        "Failed to parse value [yes] as only [true] or [false] are allowed."
    )
    assert error(call(sim, "GET", "/_snapshot?cluster_manager_timeout=soon"))[1] == "parse_exception"
    r = call(sim, "GET", "/_snapshot?master_timeout=30s")
    assert r.status_code == 200 and "master_timeout] is deprecated" in r.headers["Warning"]


# ------------------------------------------------------------------ repositories


def test_fs_repository_must_be_under_path_repo(sim: SearchSimulator) -> None:
    register(sim, "inside", f"{REPO_ROOT}/a/b")
    register(sim, "relative", "bitbucket")  # resolved against path.repo
    r = call(sim, "PUT", "/_snapshot/outside", {"type": "fs", "settings": {"location": f"{REPO_ROOT}/../etc"}})
    body = r.json()
    assert r.status_code == 500 and body["error"]["type"] == "repository_exception"
    assert body["error"]["reason"] == "[outside] failed to create repository"
    expected = f"[outside] location [{REPO_ROOT}/../etc] doesn't match any of the locations specified by path.repo"
    assert body["error"]["root_cause"] == [{"type": "repository_exception", "reason": expected}]
    r = call(sim, "PUT", "/_snapshot/nowhere", {"type": "fs", "settings": {}})
    assert r.json()["error"]["root_cause"][0]["reason"] == "[nowhere] missing location"
    assert sorted(sim.repositories) == ["inside", "relative"]

    with SearchSimulator(username="admin", password="admin-pw") as bare:
        r = call(bare, "PUT", "/_snapshot/x", {"type": "fs", "settings": {"location": "/tmp/x"}})
        assert r.json()["error"]["root_cause"][0]["reason"].endswith("because this setting is empty")


def test_repository_type_and_s3_bucket(sim: SearchSimulator) -> None:
    r = call(sim, "PUT", "/_snapshot/r", {"settings": {"bucket": "b"}})
    assert error(r) == (400, "action_request_validation_exception", "Validation Failed: 1: type is missing;")
    r = call(sim, "PUT", "/_snapshot/r", {"type": "hdfs", "settings": {}})
    assert error(r) == (500, "repository_exception", "[r] repository type [hdfs] does not exist")
    r = call(sim, "PUT", "/_snapshot/r", {"type": "s3", "settings": {"base_path": "x"}})
    assert r.status_code == 500
    assert r.json()["error"]["root_cause"][0]["reason"] == "[r] No bucket defined for s3 repository"
    r = call(sim, "PUT", "/_snapshot/r", {"type": "s3", "settings": "bucket"})
    assert error(r)[2] == "Malformed settings section, should include an inner object"
    assert sim.repositories == {}

    settings = {
        "bucket": "backups",
        "compress": True,
        "max_restore_bytes_per_sec": 40,
        "server_side": {"encryption": False},
    }
    r = call(sim, "POST", "/_snapshot/s3repo?verify=false", {"type": "s3", "settings": settings})
    assert r.json() == {"acknowledged": True}
    flat = {
        "bucket": "backups",
        "compress": "true",
        "max_restore_bytes_per_sec": "40",
        "server_side.encryption": "false",
    }
    assert call(sim, "GET", "/_snapshot/s3repo").json() == {"s3repo": {"type": "s3", "settings": flat}}
    assert sim.repositories["s3repo"] == {"type": "s3", "settings": flat}


def test_repository_names_follow_the_server_rules(sim: SearchSimulator) -> None:
    body = {"type": "fs", "settings": {"location": REPO_ROOT}}
    assert error(call(sim, "PUT", "/_snapshot/a%23b", body)) == (
        500,
        "repository_exception",
        "[a#b] must not contain '#'",
    )
    reason = error(call(sim, "PUT", "/_snapshot/a%2Ab", body))[2]
    assert reason == '[a*b] must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?]'
    # OpenSearch has no lowercase rule for repositories.
    assert call(sim, "PUT", "/_snapshot/MixedCase", body).status_code == 200


def test_get_and_delete_repositories(sim: SearchSimulator) -> None:
    register(sim, "repo")
    register(sim, "repo2", f"{REPO_ROOT}/other")
    assert sorted(call(sim, "GET", "/_snapshot").json()) == ["repo", "repo2"]
    assert sorted(call(sim, "GET", "/_snapshot/_all").json()) == ["repo", "repo2"]
    assert sorted(call(sim, "GET", "/_snapshot/rep*").json()) == ["repo", "repo2"]
    assert call(sim, "GET", "/_snapshot/repo").json()["repo"]["settings"] == {"location": f"{REPO_ROOT}/bitbucket"}
    assert error(call(sim, "GET", "/_snapshot/repo,missing")) == (
        404,
        "repository_missing_exception",
        "[missing] missing",
    )
    assert call(sim, "POST", "/_snapshot/repo/_verify").json()["nodes"]

    snapshot(sim, "kept")
    assert call(sim, "DELETE", "/_snapshot/repo").json() == {"acknowledged": True}
    assert error(call(sim, "DELETE", "/_snapshot/repo"))[:2] == (404, "repository_missing_exception")
    # The snapshots stay in storage: registering the same location again finds them.
    register(sim, "again")
    assert [s["snapshot"] for s in sim.snapshots("again")] == ["kept"]


def test_repository_in_use_cannot_change(slow: SearchSimulator) -> None:
    register(slow)
    call(slow, "PUT", "/_snapshot/repo/running")
    r = call(slow, "PUT", "/_snapshot/repo", {"type": "fs", "settings": {"location": f"{REPO_ROOT}/x"}})
    assert error(r) == (
        500,
        "illegal_state_exception",
        "trying to modify or unregister repository that is currently used",
    )
    assert error(call(slow, "DELETE", "/_snapshot/repo"))[1] == "illegal_state_exception"


def test_readonly_repository_refuses_writes(sim: SearchSimulator) -> None:
    register(sim)
    snapshot(sim, "s1")
    body = {"type": "fs", "settings": {"location": f"{REPO_ROOT}/bitbucket", "readonly": True}}
    assert call(sim, "PUT", "/_snapshot/ro", body).status_code == 200
    assert error(call(sim, "PUT", "/_snapshot/ro/s2")) == (
        500,
        "repository_exception",
        "[ro] cannot create snapshot in a readonly repository",
    )
    assert error(call(sim, "DELETE", "/_snapshot/ro/s1"))[2] == "[ro] cannot delete snapshot from a readonly repository"
    assert call(sim, "GET", "/_snapshot/ro/s1").status_code == 200


# ------------------------------------------------------------------ creating snapshots


def test_snapshot_runs_then_succeeds_with_the_server_fields(sim: SearchSimulator) -> None:
    register(sim)
    t0 = time.monotonic()
    r = call(sim, "PUT", "/_snapshot/repo/nightly-1", {"indices": "bitbucket*", "metadata": {"by": "test"}})
    assert r.status_code == 200 and r.json() == {"accepted": True}
    wait_for(lambda: get_snapshot(sim, "nightly-1")["state"] == "SUCCESS")
    assert time.monotonic() - t0 >= 0.05
    info = get_snapshot(sim, "nightly-1")
    assert info["indices"] == ["bitbucket", "bitbucket-audit"] and info["data_streams"] == []
    assert info["metadata"] == {"by": "test"} and info["include_global_state"] is True
    assert info["version"] == "2.17.0" and info["version_id"] == 136387827
    assert len(info["uuid"]) == 22
    assert info["failures"] == [] and info["shards"] == {"total": 2, "failed": 0, "successful": 2}
    assert info["end_time_in_millis"] - info["start_time_in_millis"] == info["duration_in_millis"] >= 50
    assert info["start_time"].endswith("Z") and "T" in info["start_time"]
    assert sim.snapshots("repo") == [info]


def test_in_progress_snapshot_has_zero_end_fields_and_started_status(slow: SearchSimulator) -> None:
    register(slow)
    assert call(slow, "PUT", "/_snapshot/repo/s1").json() == {"accepted": True}
    info = get_snapshot(slow, "s1")
    assert info["state"] == "IN_PROGRESS" and "metadata" not in info
    assert (info["end_time"], info["end_time_in_millis"], info["duration_in_millis"]) == (
        "1970-01-01T00:00:00.000Z",
        0,
        0,
    )
    assert info["shards"] == {"total": 0, "failed": 0, "successful": 0}
    status = call(slow, "GET", "/_snapshot/repo/s1/_status").json()["snapshots"][0]
    assert (status["state"], status["repository"], status["snapshot"]) == ("STARTED", "repo", "s1")
    assert (
        status["shards_stats"]["started"] == 1 and status["indices"]["bitbucket"]["shards"]["0"]["stage"] == "STARTED"
    )
    assert [s["snapshot"] for s in call(slow, "GET", "/_snapshot/repo/_current").json()["snapshots"]] == ["s1"]
    assert [s["snapshot"] for s in call(slow, "GET", "/_snapshot/_status").json()["snapshots"]] == ["s1"]
    assert [s["snapshot"] for s in call(slow, "GET", "/_snapshot/repo/_status").json()["snapshots"]] == ["s1"]
    # A second snapshot of that name is refused while the first runs.
    reason = error(call(slow, "PUT", "/_snapshot/repo/s1"))[2]
    assert reason == "[repo:s1] Invalid snapshot name [s1], snapshot with the same name is already in-progress"


def test_wait_for_completion_answers_the_finished_snapshot(sim: SearchSimulator) -> None:
    register(sim)
    t0 = time.monotonic()
    r = call(sim, "POST", "/_snapshot/repo/s1?wait_for_completion=true", {"indices": ["other"]})
    assert time.monotonic() - t0 >= 0.05
    info = r.json()["snapshot"]
    assert r.status_code == 200 and info["state"] == "SUCCESS" and info["indices"] == ["other"]
    assert call(sim, "PUT", "/_snapshot/repo/s2?wait_for_completion").json()["snapshot"]["state"] == "SUCCESS"


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("has%20space", "must not contain whitespace"),
        ("a,b", "must not contain ','"),
        ("a%23b", "must not contain '#'"),
        ("_hidden", "must not start with '_'"),
        ("Upper", "must be lowercase"),
        ("a%2Ab", 'must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?]'),
        ("a%3Fb", 'must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?]'),
    ],
)
def test_snapshot_names_are_validated(sim: SearchSimulator, name: str, rule: str) -> None:
    register(sim)
    status, kind, reason = error(call(sim, "PUT", f"/_snapshot/repo/{name}"))
    assert (status, kind) == (400, "invalid_snapshot_name_exception")
    assert reason.endswith(f"Invalid snapshot name [{requests.utils.unquote(name)}], {rule}")
    assert sim.snapshots("repo") == []


def test_snapshot_conflicts_and_missing_repository(sim: SearchSimulator) -> None:
    assert error(call(sim, "PUT", "/_snapshot/nope/s1")) == (404, "repository_missing_exception", "[nope] missing")
    register(sim)
    snapshot(sim, "s1")
    reason = error(call(sim, "PUT", "/_snapshot/repo/s1"))[2]
    assert reason == "[repo:s1] Invalid snapshot name [s1], snapshot with the same name already exists"


def test_snapshot_body_is_strict(sim: SearchSimulator) -> None:
    register(sim)
    assert error(call(sim, "PUT", "/_snapshot/repo/s", {"indices": "*", "include_global_stat": False}))[1:] == (
        "illegal_argument_exception",
        "Unknown parameter include_global_stat",
    )
    assert error(call(sim, "PUT", "/_snapshot/repo/s", {"indices": 5}))[2] == (
        "malformed indices section, should be an array of strings"
    )
    r = call(sim, "PUT", "/_snapshot/repo/s", {"partial": "yes"})
    assert error(r)[2] == "Could not convert [partial] to boolean"
    assert (
        r.json()["error"]["caused_by"]["reason"] == "Failed to parse value [yes] as only [true] or [false] are allowed."
    )
    assert (
        error(call(sim, "PUT", "/_snapshot/repo/s", {"metadata": "x"}))[2] == "malformed metadata, should be an object"
    )
    big = {"note": "x" * 1020}
    size = len(json.dumps(big, separators=(",", ":")))
    assert error(call(sim, "PUT", "/_snapshot/repo/s", {"metadata": big})) == (
        400,
        "action_request_validation_exception",
        f"Validation Failed: 1: metadata must be smaller than 1024 bytes, but was [{size}];",
    )
    assert error(call(sim, "PUT", "/_snapshot/repo/s", {"expand_wildcards": "everything"}))[2] == (
        "No valid expand wildcard value [everything]"
    )
    assert sim.snapshots("repo") == []
    # Every key the server knows is accepted.
    body = {
        "indices": ["bitbucket"],
        "ignore_unavailable": True,
        "include_global_state": False,
        "partial": False,
        "metadata": {"ok": 1},
        "feature_states": [],
        "settings": {},
    }
    assert snapshot(sim, "full", body)["include_global_state"] is False


def test_snapshot_indices_are_resolved(sim: SearchSimulator) -> None:
    register(sim)
    assert snapshot(sim, "all")["indices"] == ["bitbucket", "bitbucket-audit", "other"]
    assert snapshot(sim, "wild", {"indices": "bitbucket*,-*audit"})["indices"] == ["bitbucket"]
    assert snapshot(sim, "alias", {"indices": ["bitbucket-search"]})["indices"] == ["bitbucket"]
    assert snapshot(sim, "none", {"indices": "nothing-*"})["indices"] == []
    assert error(call(sim, "PUT", "/_snapshot/repo/missing", {"indices": "bitbucket,gone"})) == (
        404,
        "index_not_found_exception",
        "no such index [gone]",
    )
    r = call(sim, "PUT", "/_snapshot/repo/missing", {"indices": "bitbucket,gone"})
    assert r.json()["error"]["index"] == "gone" and r.json()["error"]["resource.type"] == "index_or_alias"
    assert snapshot(sim, "lenient", {"indices": "bitbucket,gone", "ignore_unavailable": True})["indices"] == [
        "bitbucket"
    ]
    r = call(sim, "PUT", "/_snapshot/repo/strict", {"indices": "nothing-*", "allow_no_indices": False})
    assert error(r)[:2] == (404, "index_not_found_exception")


def test_failed_and_partial_snapshots(sim: SearchSimulator) -> None:
    register(sim)
    sim.fail_next_snapshot(state="FAILED", reason="disk full")
    failed = snapshot(sim, "broken", {"indices": "bitbucket,other"})
    assert failed["state"] == "FAILED" and failed["reason"] == "disk full"
    assert failed["shards"] == {"total": 2, "failed": 2, "successful": 0}
    assert {f["index"] for f in failed["failures"]} == {"bitbucket", "other"}
    assert all(f["reason"] == "disk full" and f["shard_id"] == 0 for f in failed["failures"])

    sim.fail_next_snapshot(state="PARTIAL", reason="node left", indices=["other"])
    partial = snapshot(sim, "half", {"indices": "bitbucket,other"})
    assert partial["state"] == "PARTIAL" and "reason" not in partial
    assert partial["shards"] == {"total": 2, "failed": 1, "successful": 1}
    assert [f["index"] for f in partial["failures"]] == ["other"]
    # The status API reports PARTIAL as SUCCESS, as the server does.
    statuses = call(sim, "GET", "/_snapshot/repo/broken,half/_status").json()["snapshots"]
    assert [s["state"] for s in statuses] == ["FAILED", "SUCCESS"]
    assert snapshot(sim, "fine")["state"] == "SUCCESS"  # only the next one was forced
    with pytest.raises(ValueError):
        sim.fail_next_snapshot(state="SUCCESS")


def test_get_snapshots_by_name_list_wildcard_and_all(sim: SearchSimulator) -> None:
    register(sim)
    for name in ("daily-1", "daily-2", "weekly-1"):
        snapshot(sim, name, {"indices": "other"})

    def names(path: str) -> list[str]:
        r = call(sim, "GET", path)
        assert r.status_code == 200, r.text
        return [s["snapshot"] for s in r.json()["snapshots"]]

    assert names("/_snapshot/repo/_all") == ["daily-1", "daily-2", "weekly-1"]
    assert names("/_snapshot/repo/daily-*") == ["daily-1", "daily-2"]
    assert names("/_snapshot/repo/weekly-1,daily-1") == ["daily-1", "weekly-1"]
    assert names("/_snapshot/repo/nothing-*") == []
    assert error(call(sim, "GET", "/_snapshot/repo/daily-1,gone")) == (
        404,
        "snapshot_missing_exception",
        "[repo:gone] is missing",
    )
    assert names("/_snapshot/repo/daily-1,gone?ignore_unavailable=true") == ["daily-1"]
    assert error(call(sim, "GET", "/_snapshot/nope/daily-1"))[:2] == (404, "repository_missing_exception")
    short = call(sim, "GET", "/_snapshot/repo/daily-1?verbose=false").json()["snapshots"][0]
    assert set(short) == {"snapshot", "uuid", "indices", "data_streams", "state"}
    status = call(sim, "GET", "/_snapshot/repo/daily-1/_status").json()["snapshots"][0]
    assert status["state"] == "SUCCESS" and status["shards_stats"]["done"] == 1
    assert status["stats"]["total"]["size_in_bytes"] > 0 and status["include_global_state"] is True
    assert error(call(sim, "GET", "/_snapshot/repo/gone/_status"))[:2] == (404, "snapshot_missing_exception")
    assert call(sim, "GET", "/_snapshot/repo/gone/_status?ignore_unavailable=true").json() == {"snapshots": []}


def test_delete_snapshots(sim: SearchSimulator) -> None:
    register(sim)
    for name in ("a-1", "a-2", "b-1"):
        snapshot(sim, name, {"indices": "other"})
    assert call(sim, "DELETE", "/_snapshot/repo/a-1").json() == {"acknowledged": True}
    assert error(call(sim, "DELETE", "/_snapshot/repo/a-1")) == (
        404,
        "snapshot_missing_exception",
        "[repo:a-1] is missing",
    )
    assert call(sim, "DELETE", "/_snapshot/repo/a-*,b-1").status_code == 200
    assert sim.snapshots("repo") == []


def test_deleting_a_running_snapshot_aborts_it(slow: SearchSimulator) -> None:
    register(slow)
    call(slow, "PUT", "/_snapshot/repo/running")
    assert get_snapshot(slow, "running")["state"] == "IN_PROGRESS"
    # An index being snapshotted cannot be deleted meanwhile.
    status, kind, reason = error(call(slow, "DELETE", "/bitbucket"))
    assert (status, kind) == (400, "snapshot_in_progress_exception")
    assert reason.startswith("Cannot delete indices that are being snapshotted: [[bitbucket/")
    assert call(slow, "DELETE", "/_snapshot/repo/running").json() == {"acknowledged": True}
    assert slow.snapshots("repo") == []
    assert "snapshot-deleted" in slow.event_names()
    assert call(slow, "DELETE", "/bitbucket").status_code == 200


# ------------------------------------------------------------------ restoring


def test_restore_brings_back_the_documents_of_snapshot_time(sim: SearchSimulator) -> None:
    register(sim)
    snapshot(sim, "s1", {"indices": "bitbucket"})
    # Later writes must not leak into the snapshot.
    sim.add_documents("bitbucket", [{"id": 99}])
    sim.add_index("late", [{"id": 100}])
    with pytest.raises(KeyError):
        sim.add_documents("nope", [])
    assert error(restore(sim, "s1")) == (
        500,
        "snapshot_restore_exception",
        f"[repo:s1/{get_snapshot(sim, 's1')['uuid']}] cannot restore index [bitbucket] {OPEN_INDEX_EXISTS}",
    )
    assert call(sim, "DELETE", "/bitbucket").status_code == 200
    assert sim.aliases() == {}
    r = restore(sim, "s1", {"include_aliases": False})
    assert r.status_code == 200 and r.json() == {"accepted": True}
    restored = sim.indices()["bitbucket"]
    assert restored["documents"] == [{"id": 1}, {"id": 2}] and restored["aliases"] == []
    assert restored["restored_from"] is not None and restored["restored_from"]["snapshot"] == "s1"
    # Writes to the restored copy do not reach back into the snapshot either.
    sim.add_documents("bitbucket", [{"id": 101}])
    restore(sim, "s1", {"rename_pattern": "(.+)", "rename_replacement": "again-$1", "include_aliases": False})
    assert sim.indices()["again-bitbucket"]["documents"] == [{"id": 1}, {"id": 2}]


def test_restore_with_rename_keeps_the_alias_on_both_copies(sim: SearchSimulator) -> None:
    register(sim)
    snapshot(sim, "s1", {"indices": "bitbucket*"})
    r = restore(sim, "s1", {"indices": "bitbucket", "rename_pattern": "(.+)", "rename_replacement": "restored-$1"})
    assert r.status_code == 200, r.text
    # include_aliases defaults to true: the live alias now also points at the restored copy.
    assert sim.aliases() == {"bitbucket-search": ["bitbucket", "restored-bitbucket"]}
    assert "alias-added" in sim.event_names()
    alias = call(sim, "GET", "/_alias/bitbucket-search").json()
    assert alias == {
        "bitbucket": {"aliases": {"bitbucket-search": {}}},
        "restored-bitbucket": {"aliases": {"bitbucket-search": {}}},
    }
    assert sorted(sim.indices()) == ["bitbucket", "bitbucket-audit", "other", "restored-bitbucket"]
    assert sim.indices()["restored-bitbucket"]["documents"] == [{"id": 1}, {"id": 2}]


def test_restore_recovery_moves_from_index_to_done(sim: SearchSimulator) -> None:
    register(sim)
    snapshot(sim, "s1", {"indices": "bitbucket"})
    restore(sim, "s1", {"rename_pattern": "bitbucket", "rename_replacement": "copy", "include_aliases": False})
    shard = call(sim, "GET", "/copy/_recovery").json()["copy"]["shards"][0]
    assert (shard["type"], shard["stage"], shard["primary"], shard["id"]) == ("SNAPSHOT", "INDEX", True, 0)
    assert {k: shard["source"][k] for k in ("repository", "snapshot", "version", "index")} == {
        "repository": "repo",
        "snapshot": "s1",
        "version": "2.17.0",
        "index": "bitbucket",
    }
    assert shard["source"]["restoreUUID"]
    assert call(sim, "GET", "/_cat/indices/copy?format=json").json()[0]["health"] == "red"
    wait_for(lambda: call(sim, "GET", "/copy/_recovery").json()["copy"]["shards"][0]["stage"] == "DONE")
    done = call(sim, "GET", "/copy/_recovery").json()["copy"]["shards"][0]
    assert done["index"]["size"]["percent"] == "100.0%" and "stop_time_in_millis" in done
    assert call(sim, "GET", "/_cat/indices/copy?format=json").json()[0]["health"] == "green"
    assert call(sim, "GET", "/copy/_recovery?active_only=true").json() == {}


def test_restore_wait_for_completion_answers_the_restore_info(sim: SearchSimulator) -> None:
    register(sim)
    snapshot(sim, "s1", {"indices": "bitbucket*"})
    body = {"rename_pattern": "bitbucket(.*)", "rename_replacement": "r$1", "include_aliases": False}
    r = call(sim, "POST", "/_snapshot/repo/s1/_restore?wait_for_completion=true", body)
    assert r.json() == {
        "snapshot": {
            "snapshot": "s1",
            "indices": ["r", "r-audit"],
            "shards": {"total": 2, "failed": 0, "successful": 2},
        }
    }
    assert sim.indices()["r"]["recovery_stage"] == "DONE"


def test_restore_body_is_checked(sim: SearchSimulator) -> None:
    register(sim)
    snapshot(sim, "s1", {"indices": "bitbucket"})
    assert error(restore(sim, "s1", {"rename_patern": "x"})) == (
        400,
        "illegal_argument_exception",
        "Unknown parameter rename_patern",
    )
    assert error(restore(sim, "s1", {"rename_pattern": 5}))[2] == "malformed rename_pattern"
    assert error(restore(sim, "s1", {"index_settings": []}))[2] == "malformed index_settings section"
    assert (
        error(restore(sim, "s1", {"include_aliases": "maybe"}))[2] == "Could not convert [include_aliases] to boolean"
    )
    reason = error(restore(sim, "s1", {"indices": "gone", "rename_pattern": "x", "rename_replacement": "y"}))
    assert reason == (404, "index_not_found_exception", "no such index [gone]")
    uuid = get_snapshot(sim, "s1")["uuid"]
    r = restore(
        sim, "s1", {"rename_pattern": "bit", "rename_replacement": "x", "index_settings": {"number_of_shards": 2}}
    )
    assert error(r) == (
        500,
        "snapshot_restore_exception",
        f"[repo:s1/{uuid}] cannot modify setting [index.number_of_shards] on restore",
    )
    r = restore(
        sim,
        "s1",
        {"rename_pattern": "bit", "rename_replacement": "x", "ignore_index_settings": "index.number_of_replicas"},
    )
    assert error(r)[2].endswith("cannot remove setting [index.number_of_replicas] on restore")
    ok = {"rename_pattern": "bit", "rename_replacement": "x", "index_settings": {"index.refresh_interval": "5s"}}
    assert restore(sim, "s1", ok).status_code == 200
    assert sim.indices()["xbucket"]["settings"]["index.refresh_interval"] == "5s"


def test_restore_requires_a_finished_successful_snapshot(slow: SearchSimulator) -> None:
    register(slow)
    call(slow, "PUT", "/_snapshot/repo/running")
    assert error(restore(slow, "running")) == (
        500,
        "snapshot_restore_exception",
        "[repo:running] snapshot does not exist",
    )
    assert error(restore(slow, "never")) == (500, "snapshot_restore_exception", "[repo:never] snapshot does not exist")
    assert error(restore(slow, "x", repo="nope"))[:2] == (404, "repository_missing_exception")


def test_restore_of_failed_and_partial_snapshots(sim: SearchSimulator) -> None:
    register(sim)
    sim.fail_next_snapshot(state="FAILED")
    uuid = snapshot(sim, "broken", {"indices": "bitbucket"})["uuid"]
    r = restore(sim, "broken", {"rename_pattern": "(.+)", "rename_replacement": "r-$1"})
    assert error(r) == (500, "snapshot_restore_exception", f"[repo:broken/{uuid}] unsupported snapshot state [FAILED]")

    sim.fail_next_snapshot(state="PARTIAL", indices=["bitbucket-audit"])
    uuid = snapshot(sim, "half", {"indices": "bitbucket*"})["uuid"]
    body: dict[str, Any] = {"rename_pattern": "(.+)", "rename_replacement": "r-$1", "include_aliases": False}
    assert error(restore(sim, "half", body)) == (
        500,
        "snapshot_restore_exception",
        f"[repo:half/{uuid}] index [bitbucket-audit] wasn't fully snapshotted - cannot restore",
    )
    r = call(sim, "POST", "/_snapshot/repo/half/_restore?wait_for_completion=true", {**body, "partial": True})
    assert r.json()["snapshot"]["shards"] == {"total": 2, "failed": 1, "successful": 1}
    assert sim.indices()["r-bitbucket"]["documents"] == [{"id": 1}, {"id": 2}]
    assert sim.indices()["r-bitbucket-audit"]["documents"] == []  # the failed shard comes back empty


def test_restore_rename_errors(sim: SearchSimulator) -> None:
    register(sim)
    snapshot(sim, "s1", {"indices": "bitbucket*"})
    uuid = get_snapshot(sim, "s1")["uuid"]
    r = restore(sim, "s1", {"rename_pattern": "(.+)", "rename_replacement": "Upper-$1"})
    assert error(r) == (400, "invalid_index_name_exception", "Invalid index name [Upper-bitbucket], must be lowercase")
    assert r.json()["error"]["index"] == "Upper-bitbucket"
    r = restore(sim, "s1", {"rename_pattern": ".+", "rename_replacement": "same"})
    assert error(r) == (
        500,
        "snapshot_restore_exception",
        "[repo:s1] indices [bitbucket-audit] and [bitbucket] are renamed into the same index [same]",
    )
    assert error(restore(sim, "s1", {"rename_pattern": "(.+)", "rename_replacement": "x$3"})) == (
        500,
        "index_out_of_bounds_exception",
        "No group 3",
    )
    assert error(restore(sim, "s1", {"rename_pattern": "(", "rename_replacement": "x"}))[:2] == (
        400,
        "pattern_syntax_exception",
    )
    # A restored index may not take the name of a live alias.
    r = restore(
        sim, "s1", {"indices": "bitbucket-audit", "rename_pattern": ".+", "rename_replacement": "bitbucket-search"}
    )
    assert error(r)[2] == "Invalid index name [bitbucket-search], already exists as alias"
    # Nor of an alias it brings back itself.
    call(sim, "DELETE", "/bitbucket")
    r = restore(sim, "s1", {"indices": "bitbucket", "rename_pattern": ".+", "rename_replacement": "bitbucket-search"})
    assert error(r)[2] == (
        f"[repo:s1/{uuid}] cannot rename index [bitbucket] into [bitbucket-search] because of conflict with an alias "
        "with the same name"
    )


def test_add_repository_as_an_administrator(sim: SearchSimulator) -> None:
    sim.add_repository("admin-repo", "fs", {"location": f"{REPO_ROOT}/admin", "compress": True})
    assert sim.repositories == {
        "admin-repo": {"type": "fs", "settings": {"location": f"{REPO_ROOT}/admin", "compress": "true"}}
    }
    snapshot(sim, "s1", {"indices": "other"}, repo="admin-repo")
    assert [s["snapshot"] for s in sim.snapshots("admin-repo")] == ["s1"]
    with pytest.raises(KeyError):
        sim.snapshots("nope")
    with pytest.raises(ValueError):
        sim.add_repository("bad", "hdfs", {})


def test_closed_index_can_be_restored_over(sim: SearchSimulator) -> None:
    register(sim)
    snapshot(sim, "s1", {"indices": "other"})
    call(sim, "DELETE", "/other")
    sim.add_index("other", [{"stale": True}], aliases=["kept"], closed=True)
    assert call(sim, "GET", "/_cat/indices/other?format=json").json()[0]["status"] == "close"
    r = restore(sim, "s1", {"include_aliases": False})
    assert r.status_code == 200, r.text
    index = sim.indices()["other"]
    assert index["documents"] == [] and not index["closed"] and index["aliases"] == ["kept"]


def test_snapshot_cannot_be_deleted_while_it_is_restored() -> None:
    with SearchSimulator(username="admin", password="admin-pw", path_repo=[REPO_ROOT], restore_seconds=30) as s:
        s.add_index("src", [{"id": 1}])
        register(s)
        snapshot(s, "s1")
        assert restore(s, "s1", {"rename_pattern": "src", "rename_replacement": "dst"}).status_code == 200
        status, kind, reason = error(call(s, "DELETE", "/_snapshot/repo/s1"))
        assert (status, kind) == (503, "concurrent_snapshot_execution_exception")
        assert "cannot delete snapshot during a restore in progress" in reason
        # A snapshot of an index still being restored waits for the restore.
        call(s, "PUT", "/_snapshot/repo/s2", {"indices": "dst"})
        time.sleep(0.1)
        assert get_snapshot(s, "s2")["state"] == "IN_PROGRESS"


def test_java_replacement_semantics() -> None:
    assert java_replace_all("bitbucket", "(.+)", "restored-$1") == "restored-bitbucket"
    assert java_replace_all("bitbucket", "(?<word>bit)", "${word}-x-") == "bit-x-bucket"
    assert java_replace_all("bitbucket", "(bit)", "\\$1") == "$1bucket"
    assert java_replace_all("abc", "(a)", "$12") == "a2bc"  # only group 1 exists: "$12" is "$1" then "2"
    assert java_replace_all("a-b", "-", "_") == "a_b"
    assert java_replace_all("aaa", "a", "b") == "bbb"  # replaceAll, not replaceFirst


# ------------------------------------------------------------------ index APIs


def test_recovery_expressions(sim: SearchSimulator) -> None:
    shard = call(sim, "GET", "/bitbucket/_recovery").json()["bitbucket"]["shards"][0]
    assert (shard["type"], shard["stage"], shard["source"]) == ("EMPTY_STORE", "DONE", {})
    assert sorted(call(sim, "GET", "/bitbucket*/_recovery").json()) == ["bitbucket", "bitbucket-audit"]
    assert sorted(call(sim, "GET", "/bitbucket,other/_recovery").json()) == ["bitbucket", "other"]
    assert sorted(call(sim, "GET", "/bitbucket-search/_recovery").json()) == ["bitbucket"]
    assert len(call(sim, "GET", "/_recovery").json()) == 3
    assert call(sim, "GET", "/nothing-*/_recovery").json() == {}
    r = call(sim, "GET", "/bitbucket,gone/_recovery")
    assert error(r) == (404, "index_not_found_exception", "no such index [gone]")
    assert call(sim, "GET", "/bitbucket,gone/_recovery?ignore_unavailable=true").status_code == 200
    assert error(call(sim, "GET", "/nothing-*/_recovery?allow_no_indices=false"))[:2] == (
        404,
        "index_not_found_exception",
    )


def test_cat_indices(sim: SearchSimulator) -> None:
    rows = call(sim, "GET", "/_cat/indices?format=json").json()
    assert [row["index"] for row in rows] == ["bitbucket", "bitbucket-audit", "other"]
    row = rows[0]
    assert (row["health"], row["status"], row["docs.count"], row["pri"]) == ("green", "open", "2", "1")
    assert set(row) >= {"uuid", "docs.deleted", "store.size", "pri.store.size"}
    assert [r["index"] for r in call(sim, "GET", "/_cat/indices/bitbucket*?format=json").json()] == [
        "bitbucket",
        "bitbucket-audit",
    ]
    assert call(sim, "GET", "/_cat/indices/none-*?format=json").json() == []
    assert error(call(sim, "GET", "/_cat/indices/gone?format=json"))[:2] == (404, "index_not_found_exception")
    picked = call(sim, "GET", "/_cat/indices?format=json&h=index,docs.count&s=docs.count:desc").json()
    assert picked == [
        {"index": "bitbucket", "docs.count": "2"},
        {"index": "bitbucket-audit", "docs.count": "1"},
        {"index": "other", "docs.count": "0"},
    ]
    text = call(sim, "GET", "/_cat/indices?v&h=index,docs.count")
    assert text.headers["Content-Type"].startswith("text/plain")
    assert text.text.splitlines()[0].split() == ["index", "docs.count"]
    assert text.text.splitlines()[1].split() == ["bitbucket", "2"]


def test_delete_index(sim: SearchSimulator) -> None:
    for expression in ("bitbucket*", "_all", "*"):
        assert error(call(sim, "DELETE", f"/{expression}")) == (
            400,
            "illegal_argument_exception",
            "Wildcard expressions or all indices are not allowed",
        )
    assert len(sim.indices()) == 3
    assert error(call(sim, "DELETE", "/gone")) == (404, "index_not_found_exception", "no such index [gone]")
    assert error(call(sim, "DELETE", "/bitbucket-search"))[2] == (
        "The provided expression [bitbucket-search] matches an alias, "
        "specify the corresponding concrete indices instead."
    )
    assert call(sim, "DELETE", "/bitbucket,other").json() == {"acknowledged": True}
    assert sorted(sim.indices()) == ["bitbucket-audit"] and sim.aliases() == {}

    with SearchSimulator(username="admin", password="admin-pw", destructive_requires_name=False) as lax:
        lax.add_index("a-1")
        lax.add_index("a-2")
        assert call(lax, "DELETE", "/a-*").status_code == 200 and lax.indices() == {}


def test_get_index_and_exists(sim: SearchSimulator) -> None:
    body = call(sim, "GET", "/bitbucket").json()["bitbucket"]
    assert body["aliases"] == {"bitbucket-search": {}} and body["settings"]["index"]["number_of_shards"] == "1"
    assert call(sim, "HEAD", "/bitbucket").status_code == 200
    assert call(sim, "HEAD", "/gone").status_code == 404
    assert error(call(sim, "GET", "/gone"))[:2] == (404, "index_not_found_exception")


def test_get_alias(sim: SearchSimulator) -> None:
    assert call(sim, "GET", "/_alias/bitbucket-search").json() == {"bitbucket": {"aliases": {"bitbucket-search": {}}}}
    assert call(sim, "GET", "/_alias/bitbucket-*").json() == {"bitbucket": {"aliases": {"bitbucket-search": {}}}}
    r = call(sim, "GET", "/_alias/nope")
    assert r.status_code == 404 and r.json() == {"error": "alias [nope] missing", "status": 404}
    r = call(sim, "GET", "/_alias/bitbucket-search,nope")
    assert r.status_code == 404 and r.json()["bitbucket"] == {"aliases": {"bitbucket-search": {}}}
    assert call(sim, "GET", "/_alias/none-*").json() == {}
    assert call(sim, "GET", "/_alias").json()["other"] == {"aliases": {}}


def test_add_index_validates(sim: SearchSimulator) -> None:
    with pytest.raises(ValueError, match="must be lowercase"):
        sim.add_index("Upper")
    with pytest.raises(ValueError, match="already exists"):
        sim.add_index("bitbucket")
    with pytest.raises(ValueError, match="already exists as alias"):
        sim.add_index("bitbucket-search")


# ------------------------------------------------------------------ Amazon OpenSearch Service (SigV4)


KEYS = {"AKIDGOOD": "good-secret", "AKIDLIMITED": "limited-secret"}


@pytest.fixture
def aws() -> Iterator[tuple[SearchSimulator, list[tuple[str, str, str]]]]:
    checked: list[tuple[str, str, str]] = []

    def allowed(key: str, action: str, resource: str) -> bool:
        checked.append((key, action, resource))
        return key == "AKIDGOOD" or action == "es:ESHttpGet"

    with SearchSimulator(
        auth="sigv4",
        region="eu-west-1",
        domain_arn=DOMAIN_ARN,
        secret_for=KEYS.get,
        allowed=allowed,
        may_pass_role=lambda key, role: role.endswith("/SnapshotRole"),
    ) as s:
        s.add_index("bitbucket", [{"id": 1}])
        yield s, checked


def signed(
    sim: SearchSimulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str = "AKIDGOOD",
    secret: str | None = None,
    region: str = "eu-west-1",
    service: str = "es",
    when: dt.datetime | None = None,
    token: str | None = None,
    send_body: bytes | None = None,
) -> requests.Response:
    """Sign with botocore as the product does, then send with requests."""
    url = sim.url + path
    data = b"" if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    request = AWSRequest(method=method, url=url, data=data, headers=headers)
    signer = SigV4Auth(Credentials(key, secret or KEYS.get(key, "x"), token), service, region)
    if when is None:
        signer.add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            signer.add_auth(request)
    sent = data if send_body is None else send_body
    return requests.request(method, url, data=sent, headers=dict(request.headers.items()), timeout=TIMEOUT)


def test_sigv4_signed_requests_pass(aws: tuple[SearchSimulator, list[tuple[str, str, str]]]) -> None:
    sim, checked = aws
    r = signed(sim, "GET", "/")
    assert r.status_code == 200 and r.json()["cluster_name"] == "111122223333:search"
    body = {"type": "s3", "settings": {"bucket": "b", "role_arn": "arn:aws:iam::111122223333:role/SnapshotRole"}}
    assert signed(sim, "PUT", "/_snapshot/repo", body).status_code == 200
    assert signed(sim, "GET", "/_cat/indices/bit*?format=json&h=index").json() == [{"index": "bitbucket"}]
    assert (
        signed(sim, "PUT", "/_snapshot/repo/s1?wait_for_completion=true", {"indices": "bitbucket"}).status_code == 200
    )
    assert signed(sim, "GET", "/", token="session-token").status_code == 200  # temporary credentials
    assert checked[1] == ("AKIDGOOD", "es:ESHttpPut", f"{DOMAIN_ARN}/_snapshot/repo")
    assert checked[2] == ("AKIDGOOD", "es:ESHttpGet", f"{DOMAIN_ARN}/_cat/indices/bit*")
    assert sim.auth_failures == 0


def test_sigv4_refuses_unsigned_and_badly_signed_requests(
    aws: tuple[SearchSimulator, list[tuple[str, str, str]]],
) -> None:
    sim, _ = aws
    r = requests.get(f"{sim.url}/", timeout=TIMEOUT)
    assert r.status_code == 403 and r.json() == {
        "Message": "User: anonymous is not authorized to perform: es:ESHttpGet"
    }
    mismatch = "The request signature we calculated does not match the signature you provided."
    assert signed(sim, "GET", "/", secret="wrong").json()["message"].startswith(mismatch)
    # A body changed after signing.
    r = signed(sim, "POST", "/_snapshot/repo", {"type": "s3"}, send_body=b'{"type": "fs"}')
    assert r.status_code == 403 and r.json()["message"].startswith(mismatch)
    assert signed(sim, "GET", "/", key="AKIDUNKNOWN").json() == {
        "message": "The security token included in the request is invalid."
    }
    assert signed(sim, "GET", "/", region="us-east-1").json() == {
        "message": "Credential should be scoped to a valid region, not 'us-east-1'. "
    }
    assert signed(sim, "GET", "/", service="s3").json() == {
        "message": "Credential should be scoped to correct service: 'es'. "
    }
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
    r = signed(sim, "GET", "/", when=old)
    assert r.status_code == 403 and r.json()["message"].startswith(
        f"Signature expired: {old.strftime('%Y%m%dT%H%M%SZ')}"
    )
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)
    assert signed(sim, "GET", "/", when=recent).status_code == 200
    r = requests.get(f"{sim.url}/", headers={"Authorization": "Bearer abc"}, timeout=TIMEOUT)
    assert r.status_code == 403 and "Authorization header requires 'Credential' parameter." in r.json()["message"]
    assert sim.auth_failures == 8


def test_sigv4_authorization_and_pass_role(aws: tuple[SearchSimulator, list[tuple[str, str, str]]]) -> None:
    sim, _ = aws
    r = signed(sim, "DELETE", "/bitbucket", key="AKIDLIMITED")
    assert r.status_code == 403 and r.json() == {
        "Message": "User: AKIDLIMITED is not authorized to perform: es:ESHttpDelete because no identity-based "
        "policy allows the es:ESHttpDelete action"
    }
    assert "bitbucket" in sim.indices()
    assert signed(sim, "GET", "/_snapshot", key="AKIDLIMITED").status_code == 200

    r = signed(sim, "PUT", "/_snapshot/r", {"type": "s3", "settings": {"bucket": "b"}})
    assert error(r) == (500, "repository_exception", "[r] role_arn is required")
    other_role = "arn:aws:iam::111122223333:role/Admin"
    r = signed(sim, "PUT", "/_snapshot/r", {"type": "s3", "settings": {"bucket": "b", "role_arn": other_role}})
    assert r.status_code == 403 and r.json() == {
        "Message": f"User: AKIDGOOD is not authorized to perform: iam:PassRole on resource: {other_role}"
    }
    r = signed(sim, "PUT", "/_snapshot/r", {"type": "fs", "settings": {"location": "/x"}})
    assert error(r)[:2] == (500, "repository_exception")
    assert sim.repositories == {}
    assert sim.auth_failures == 2


def test_sigv4_defaults_accept_any_key_with_the_test_secret() -> None:
    with SearchSimulator(auth="sigv4") as sim:
        r = signed(sim, "GET", "/_snapshot", key="AKIDANY", secret=TEST_SECRET, region="us-east-1")
        assert r.status_code == 200 and r.json() == {}


# ------------------------------------------------------------------ faults


def test_fault_status_skips_the_action_then_clears(sim: SearchSimulator) -> None:
    register(sim)
    sim.inject("snapshot-create", status=503)
    r = call(sim, "PUT", "/_snapshot/repo/s1")
    assert error(r)[:2] == (503, "simulated_fault_exception")
    assert sim.snapshots("repo") == []
    assert call(sim, "PUT", "/_snapshot/repo/s1").status_code == 200
    assert [s for m, p, s in sim.requests if p == "/_snapshot/repo/s1"] == [503, 200]


def test_fault_raw_body_headers_and_oversize(sim: SearchSimulator) -> None:
    sim.inject("info", body="<html>502 Bad Gateway</html>", headers={"Retry-After": "3"})
    r = call(sim, "GET", "/")
    assert r.status_code == 200 and r.text.startswith("<html>") and r.headers["Content-Type"] == "text/html"
    assert r.headers["Retry-After"] == "3"
    sim.inject("cat-indices", body='[{"index": "trunc')
    with pytest.raises(ValueError):
        call(sim, "GET", "/_cat/indices?format=json").json()
    sim.inject("snapshot-get", oversize_bytes=200_000)
    r = call(sim, "GET", "/_snapshot/repo/x")
    assert r.status_code == 200 and len(r.content) >= 200_000 and "padding" in r.json()
    with pytest.raises(ValueError):
        sim.inject("info", body="x", oversize_bytes=10)


def test_fault_drop_delay_times_and_reset(sim: SearchSimulator) -> None:
    sim.inject("recovery", drop=True)
    with pytest.raises(requests.ConnectionError):
        call(sim, "GET", "/_recovery")
    assert ("GET", "/_recovery", 0) in sim.requests
    sim.inject("recovery", delay=1.0)
    t0 = time.monotonic()
    with pytest.raises(requests.Timeout):
        call(sim, "GET", "/_recovery", timeout=0.05)
    assert time.monotonic() - t0 < 0.5
    sim.inject("alias-get", status=500, times=2)
    assert [call(sim, "GET", "/_alias").status_code for _ in range(3)] == [500, 500, 200]
    sim.inject("alias-get", status=502, times=None)
    assert [call(sim, "GET", "/_alias").status_code for _ in range(3)] == [502] * 3
    sim.reset_faults()
    assert call(sim, "GET", "/_alias").status_code == 200
    with pytest.raises(ValueError, match="unknown endpoint"):
        sim.inject("nope", status=500)
    with pytest.raises(ValueError):
        sim.inject("info", drop=True, status=500)


def test_fault_after_action_loses_the_answer_of_a_started_snapshot(sim: SearchSimulator) -> None:
    register(sim)
    sim.inject("snapshot-create", drop=True, after_action=True)
    with pytest.raises(requests.ConnectionError):
        call(sim, "PUT", "/_snapshot/repo/s1")
    assert [s["snapshot"] for s in sim.snapshots("repo")] == ["s1"]  # started, though the client never heard


def test_fault_redirect_to_another_origin(sim: SearchSimulator) -> None:
    register(sim)
    snapshot(sim, "s1", {"indices": "other"})
    with RedirectTarget() as target:
        sim.inject("snapshot-restore", redirect_to=target.url)
        r = requests.post(
            f"{sim.url}/_snapshot/repo/s1/_restore?wait_for_completion=true",
            json={},
            auth=AUTH,
            allow_redirects=False,
            timeout=TIMEOUT,
        )
        assert r.status_code == 302
        assert r.headers["Location"] == f"{target.url}/_snapshot/repo/s1/_restore?wait_for_completion=true"
        assert target.arrived == [] and "restore-started" not in sim.event_names()
        sim.inject("snapshot-get", redirect_to=target.url, status=307)
        followed = call(sim, "GET", "/_snapshot/repo/s1")
        assert followed.status_code == 200 and target.arrived[-1].path == "/_snapshot/repo/s1"
    for bad in ("http://example.com", "https://127.0.0.1:1", "ftp://127.0.0.1"):
        with pytest.raises(ValueError, match="redirect_to"):
            sim.inject("info", redirect_to=bad)
    with pytest.raises(ValueError, match="3xx"):
        sim.inject("info", redirect_to="http://127.0.0.1:1", status=500)


# ------------------------------------------------------------------ plumbing


def test_concurrent_snapshots_are_all_recorded(sim: SearchSimulator) -> None:
    register(sim)
    codes: list[int] = []

    def take(i: int) -> None:
        codes.append(call(sim, "PUT", f"/_snapshot/repo/c-{i}", {"indices": "other"}).status_code)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 8
    wait_for(lambda: all(s["state"] == "SUCCESS" for s in sim.snapshots("repo")))
    assert sorted(s["snapshot"] for s in sim.snapshots("repo")) == [f"c-{i}" for i in range(8)]


def test_keep_alive_session_and_fast_stop() -> None:
    sim = SearchSimulator(username="admin", password="admin-pw").start()
    with requests.Session() as session:
        session.auth = AUTH
        for _ in range(3):
            assert session.get(f"{sim.url}/", timeout=TIMEOUT).status_code == 200
        t0 = time.monotonic()
        sim.stop()  # must not wait for the session's open keep-alive connection
        assert time.monotonic() - t0 < 0.5
    with pytest.raises(RuntimeError):
        _ = sim.url


def test_constructor_and_cli_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError):
        SearchSimulator(host="0.0.0.0")
    with pytest.raises(ValueError):
        SearchSimulator(auth="kerberos")  # type: ignore[arg-type]
    with pytest.raises(SystemExit) as exc:
        main(["--port", "not-a-number"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["--host", "10.0.0.1"])
    assert exc.value.code == 2
