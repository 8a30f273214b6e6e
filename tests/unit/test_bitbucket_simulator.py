"""The Bitbucket maintenance-API simulator, exercised over real HTTP with `requests`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from rehearsal.bitbucket_simulator import BitbucketSimulator, RedirectTarget, main

AUTH = ("admin", "secret")
TIMEOUT = 2.0
TOKEN_HEADER = "X-Atlassian-Maintenance-Token"


@pytest.fixture
def sim() -> Iterator[BitbucketSimulator]:
    with BitbucketSimulator("admin", "secret", drain_seconds=0.05, tokens={"pat-123"}, non_admin=("bob", "bobpw")) as s:
        yield s


@pytest.fixture
def never_drains() -> Iterator[BitbucketSimulator]:
    # drain_seconds=None makes "not drained yet" deterministic instead of a race against 50 ms.
    with BitbucketSimulator("admin", "secret", drain_seconds=None) as s:
        yield s


# ------------------------------------------------------------------ helpers


def lock(sim: BitbucketSimulator, auth: Any = AUTH) -> requests.Response:
    return requests.post(f"{sim.url}/mvc/maintenance/lock", auth=auth, timeout=TIMEOUT)


def unlock(sim: BitbucketSimulator, token: str | None) -> requests.Response:
    return requests.delete(f"{sim.url}/mvc/maintenance/lock", params={"token": token}, auth=AUTH, timeout=TIMEOUT)


def start(sim: BitbucketSimulator, token: str | None) -> requests.Response:
    headers = {TOKEN_HEADER: token} if token else {}
    return requests.post(f"{sim.url}/mvc/admin/backups?external=true", headers=headers, auth=AUTH, timeout=TIMEOUT)


def poll(sim: BitbucketSimulator, token: str | None = None, timeout: float = TIMEOUT) -> requests.Response:
    headers = {TOKEN_HEADER: token} if token else {}
    return requests.get(f"{sim.url}/mvc/maintenance", headers=headers, auth=AUTH, timeout=timeout)


def progress(sim: BitbucketSimulator, token: str | None, percentage: Any) -> requests.Response:
    return requests.post(
        f"{sim.url}/mvc/admin/backups/progress/client",
        params={"token": token, "percentage": percentage},
        auth=AUTH,
        timeout=TIMEOUT,
    )


def status(sim: BitbucketSimulator) -> str:
    state: str = requests.get(f"{sim.url}/status", timeout=TIMEOUT).json()["state"]
    return state


def wait_drained(sim: BitbucketSimulator, token: str) -> dict[str, Any]:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        body: dict[str, Any] = poll(sim, token).json()
        if body["db-state"] == "DRAINED" and body["scm-state"] == "DRAINED":
            return body
        time.sleep(0.01)
    raise AssertionError("never drained")


def locked_and_started(sim: BitbucketSimulator) -> tuple[str, dict[str, Any]]:
    token = lock(sim).json()["unlockToken"]
    task = start(sim, token).json()
    return token, task


# -------------------------------------------------------------- the sequence


def test_happy_sequence(sim: BitbucketSimulator) -> None:
    assert status(sim) == "RUNNING"

    r = lock(sim)
    assert r.status_code == 202
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    token = body["unlockToken"]
    assert len(token) == 40 and int(token, 16) >= 0
    assert body["owner"] == {"displayName": "admin", "name": "admin"}
    assert sim.locked and sim.unlock_token == token and sim.lock_owner == "admin"
    assert status(sim) == "MAINTENANCE"

    r = start(sim, token)
    assert r.status_code == 202
    task = r.json()
    assert task["state"] == "RUNNING" and task["type"] == "BACKUP"
    assert task["cancelToken"] and task["id"] != task["cancelToken"]
    assert task["progress"]["percentage"] == 5

    drained = wait_drained(sim, token)
    assert drained["task"]["state"] == "RUNNING"
    assert "cancelToken" not in drained["task"]

    for pct in (50, 100):
        r = progress(sim, token, pct)
        assert r.status_code == 202 and r.content == b""
    done = poll(sim, token).json()
    assert done["task"]["state"] == "COMPLETED"
    assert (done["db-state"], done["scm-state"]) == ("AVAILABLE", "AVAILABLE")
    assert sim.locked, "progress 100 must not unlock"

    r = unlock(sim, token)
    assert r.status_code == 202 and r.content == b""
    assert not sim.locked and sim.unlock_token is None
    assert status(sim) == "RUNNING"
    assert poll(sim).json() == {"db-state": "AVAILABLE", "scm-state": "AVAILABLE"}

    assert sim.progress_history == [50, 100]
    names = sim.event_names()
    assert names == ["locked", "backup-started", "drained", "progress", "progress", "completed", "unlocked"]
    times = [t for t, _, _ in sim.events]
    assert times == sorted(times)
    assert times[2] - times[1] == pytest.approx(0.05)  # DRAINED exactly drain_seconds after the start
    assert sim.task is not None and sim.task["state"] == "COMPLETED"
    # No full token may leak into the event log.
    log = repr(sim.events)
    assert token not in log and task["cancelToken"] not in log and task["id"] not in log
    assert ("POST", "/mvc/admin/backups/progress/client", 202) in sim.requests
    assert ("DELETE", "/mvc/maintenance/lock", 202) in sim.requests


def test_keep_alive_session_and_fast_stop() -> None:
    sim = BitbucketSimulator("admin", "secret").start()
    with requests.Session() as session:
        session.auth = AUTH
        for _ in range(3):  # the same pooled connection serves every request
            assert session.get(f"{sim.url}/mvc/maintenance", timeout=TIMEOUT).status_code == 200
        sim.inject("poll", drop=True)
        with pytest.raises(requests.ConnectionError):
            session.get(f"{sim.url}/mvc/maintenance", timeout=TIMEOUT)
        assert session.get(f"{sim.url}/mvc/maintenance", timeout=TIMEOUT).status_code == 200
        t0 = time.monotonic()
        sim.stop()  # must not wait for the session's open keep-alive connection
        assert time.monotonic() - t0 < 0.5
    with pytest.raises(RuntimeError):
        _ = sim.url


def test_properties_and_unknown_paths(sim: BitbucketSimulator) -> None:
    r = requests.get(f"{sim.url}/rest/api/1.0/application-properties", auth=AUTH, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.json()["version"] == "8.19.1" and r.json()["displayName"] == "Bitbucket"
    assert r.json()["buildNumber"] == "8019001"

    r = requests.get(f"{sim.url}/nope", timeout=TIMEOUT)
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/json"
    assert r.json()["errors"]
    r = requests.get(f"{sim.url}/mvc/maintenance/lock", auth=AUTH, timeout=TIMEOUT)
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    assert sim.requests[-2:] == [("GET", "/nope", 404), ("GET", "/mvc/maintenance/lock", 405)]


# ---------------------------------------------------------------------- auth


def test_authentication(sim: BitbucketSimulator) -> None:
    for auth in (None, ("admin", "wrong"), ("nobody", "secret")):
        r = lock(sim, auth=auth)
        assert r.status_code == 401, auth
        assert r.headers["Content-Type"] == "application/json" and r.json()["errors"]
    r = requests.get(f"{sim.url}/rest/api/1.0/application-properties", timeout=TIMEOUT)
    assert r.status_code == 401
    r = requests.post(f"{sim.url}/mvc/maintenance/lock", headers={"Authorization": "Bearer wrong"}, timeout=TIMEOUT)
    assert r.status_code == 401
    assert not sim.locked

    r = requests.post(f"{sim.url}/mvc/maintenance/lock", headers={"Authorization": "Bearer pat-123"}, timeout=TIMEOUT)
    assert r.status_code == 202 and sim.lock_owner == "admin"


def test_non_admin_is_forbidden_on_mvc(sim: BitbucketSimulator) -> None:
    bob = ("bob", "bobpw")
    assert lock(sim, auth=bob).status_code == 403
    assert requests.get(f"{sim.url}/mvc/maintenance", auth=bob, timeout=TIMEOUT).status_code == 403
    # Valid credentials still read the version.
    r = requests.get(f"{sim.url}/rest/api/1.0/application-properties", auth=bob, timeout=TIMEOUT)
    assert r.status_code == 200
    assert not sim.locked and "forbidden" in sim.event_names()


# ------------------------------------------------------------------ conflicts


def test_second_lock_is_refused_and_keeps_the_first(sim: BitbucketSimulator) -> None:
    token = lock(sim).json()["unlockToken"]
    r = lock(sim)
    assert r.status_code == 409 and r.json()["errors"]
    assert sim.unlock_token == token and sim.locked
    assert sim.event_names() == ["locked", "lock-refused"]


def test_locked_by_someone_else(sim: BitbucketSimulator) -> None:
    sim.lock_by_other("ops")
    other_token = sim.unlock_token
    r = lock(sim)
    assert r.status_code == 409
    assert other_token is not None and other_token not in r.text
    assert sim.lock_owner == "ops" and sim.unlock_token == other_token
    sim.unlock_by_other()
    assert lock(sim).status_code == 202


def test_unlock_refused(sim: BitbucketSimulator) -> None:
    assert unlock(sim, "abc").status_code == 409  # not locked
    token = lock(sim).json()["unlockToken"]
    assert unlock(sim, "0" * 40).status_code == 409
    assert unlock(sim, None).status_code == 409
    assert sim.locked and sim.unlock_token == token
    assert unlock(sim, token).status_code == 202


def test_start_requires_token_external_and_no_running_task(sim: BitbucketSimulator) -> None:
    assert start(sim, "x").status_code == 409  # not locked
    token = lock(sim).json()["unlockToken"]
    assert start(sim, None).status_code == 409
    assert start(sim, "0" * 40).status_code == 409
    r = requests.post(f"{sim.url}/mvc/admin/backups", headers={TOKEN_HEADER: token}, auth=AUTH, timeout=TIMEOUT)
    assert r.status_code == 400
    assert sim.task is None
    assert start(sim, token).status_code == 202
    assert start(sim, token).status_code == 409


def test_progress_refused_before_drained_and_validated(never_drains: BitbucketSimulator) -> None:
    sim = never_drains
    token = lock(sim, auth=AUTH).json()["unlockToken"]
    assert progress(sim, token, 10).status_code == 409  # no task yet
    assert start(sim, token).status_code == 202
    body = poll(sim, token).json()
    assert (body["db-state"], body["scm-state"]) == ("DRAINING", "DRAINING")
    assert body["task"]["state"] == "RUNNING"
    assert progress(sim, token, 10).status_code == 409
    assert progress(sim, "0" * 40, 10).status_code == 409
    for bad in ("abc", "-1", "101", "5.5", "+5", ""):
        assert progress(sim, token, bad).status_code == 400, bad
    assert sim.progress_history == []


def test_cancel_from_ui_ends_the_task(sim: BitbucketSimulator) -> None:
    token, _ = locked_and_started(sim)
    wait_drained(sim, token)
    sim.cancel_from_ui()
    body = poll(sim, token).json()
    assert body["task"]["state"] == "CANCELLED"
    assert (body["db-state"], body["scm-state"]) == ("AVAILABLE", "AVAILABLE")
    assert sim.locked
    assert progress(sim, token, 50).status_code == 409
    assert unlock(sim, token).status_code == 202
    assert "cancelled" in sim.event_names()
    with pytest.raises(RuntimeError):
        sim.cancel_from_ui()


def test_cancel_endpoint(sim: BitbucketSimulator) -> None:
    token, task = locked_and_started(sim)
    url = f"{sim.url}/mvc/maintenance"
    assert requests.post(url, params={"token": "bad"}, auth=AUTH, timeout=TIMEOUT).status_code == 409
    assert sim.task is not None and sim.task["state"] == "RUNNING"
    r = requests.post(url, params={"token": task["cancelToken"]}, auth=AUTH, timeout=TIMEOUT)
    assert r.status_code == 202
    assert sim.task is not None and sim.task["state"] == "CANCELLED"
    assert sim.locked and sim.unlock_token == token


def test_unlock_while_running_cancels_the_task(sim: BitbucketSimulator) -> None:
    token, _ = locked_and_started(sim)
    assert unlock(sim, token).status_code == 202
    assert sim.task is not None and sim.task["state"] == "CANCELLED"
    assert not sim.locked
    # A new window starts clean: the old task is not shown, and a new backup may start.
    token2 = lock(sim).json()["unlockToken"]
    assert "task" not in poll(sim, token2).json()
    assert start(sim, token2).status_code == 202


def test_fail_task(sim: BitbucketSimulator) -> None:
    token, _ = locked_and_started(sim)
    sim.fail_task("disk full")
    assert poll(sim, token).json()["task"]["state"] == "FAILED"
    assert sim.locked


# -------------------------------------------------------------------- faults


def test_fault_status_does_not_perform_the_action(sim: BitbucketSimulator) -> None:
    sim.inject("lock", status=503)
    r = lock(sim)
    assert r.status_code == 503 and r.json()["errors"]
    assert not sim.locked
    assert lock(sim).status_code == 202  # times=1: the next request is normal
    assert [s for m, p, s in sim.requests if p == "/mvc/maintenance/lock"] == [503, 202]


def test_fault_body_answers_success_with_a_raw_body(sim: BitbucketSimulator) -> None:
    html = "<html><body>502 Bad Gateway</body></html>"
    sim.inject("poll", body=html)
    sim.inject("status", body='{"state": "MAIN')
    r = poll(sim)
    assert r.status_code == 200 and r.text == html and r.headers["Content-Type"].startswith("text/html")
    r = requests.get(f"{sim.url}/status", timeout=TIMEOUT)
    assert r.status_code == 200 and r.text == '{"state": "MAIN'
    with pytest.raises(ValueError):
        r.json()

    sim.inject("lock", body="<html>proxy</html>")
    r = lock(sim)
    assert r.status_code == 202 and r.text == "<html>proxy</html>"
    assert not sim.locked


def test_fault_drop_closes_without_response(sim: BitbucketSimulator) -> None:
    sim.inject("lock", drop=True)
    with pytest.raises(requests.ConnectionError):
        lock(sim)
    assert not sim.locked
    assert ("POST", "/mvc/maintenance/lock", 0) in sim.requests
    assert lock(sim).status_code == 202


def test_fault_delay_makes_the_client_time_out(sim: BitbucketSimulator) -> None:
    # The delay is far above the thresholds, so that a busy machine (the suite on 2 cores) cannot blur the two.
    sim.inject("poll", delay=3.0)
    t0 = time.monotonic()
    with pytest.raises(requests.Timeout):
        poll(sim, timeout=0.05)
    assert time.monotonic() - t0 < 1.5
    t1 = time.monotonic()
    r = poll(sim)
    # Only one request was delayed: the next is answered at once, not after the delayed one's three seconds.
    assert r.status_code == 200 and time.monotonic() - t1 < 1.5


def test_fault_times_and_reset(sim: BitbucketSimulator) -> None:
    sim.inject("status", status=500, times=2)
    codes = [requests.get(f"{sim.url}/status", timeout=TIMEOUT).status_code for _ in range(3)]
    assert codes == [500, 500, 200]

    sim.inject("status", status=502, times=None)
    codes = [requests.get(f"{sim.url}/status", timeout=TIMEOUT).status_code for _ in range(4)]
    assert codes == [502] * 4
    sim.reset_faults()
    assert requests.get(f"{sim.url}/status", timeout=TIMEOUT).status_code == 200

    # Faults queued on one endpoint apply in order.
    sim.inject("status", status=503)
    sim.inject("status", drop=True)
    assert requests.get(f"{sim.url}/status", timeout=TIMEOUT).status_code == 503
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sim.url}/status", timeout=TIMEOUT)
    assert requests.get(f"{sim.url}/status", timeout=TIMEOUT).status_code == 200

    with pytest.raises(ValueError):
        sim.inject("nope", status=500)


def test_fault_after_action_lost_response(sim: BitbucketSimulator) -> None:
    sim.inject("lock", drop=True, after_action=True)
    with pytest.raises(requests.ConnectionError):
        lock(sim)
    assert sim.locked and sim.unlock_token is not None  # locked, but the client never saw the token

    token = sim.unlock_token
    sim.inject("unlock", status=500, after_action=True)
    assert unlock(sim, token).status_code == 500
    assert not sim.locked


def test_fault_delay_after_action(sim: BitbucketSimulator) -> None:
    sim.inject("lock", delay=0.3, after_action=True)
    with pytest.raises(requests.Timeout):
        requests.post(f"{sim.url}/mvc/maintenance/lock", auth=AUTH, timeout=0.05)
    assert sim.locked  # the action ran at once; only the answer is late


def test_fault_delay_runs_the_action_late(sim: BitbucketSimulator) -> None:
    sim.inject("lock", delay=0.15)
    with pytest.raises(requests.Timeout):
        requests.post(f"{sim.url}/mvc/maintenance/lock", auth=AUTH, timeout=0.05)
    assert not sim.locked  # still sleeping
    deadline = time.monotonic() + 1
    while not sim.locked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim.locked  # a slow server still locks after the client gave up


def test_fault_before_hook(sim: BitbucketSimulator) -> None:
    token, _ = locked_and_started(sim)
    sim.inject("poll", before=sim.cancel_from_ui)
    body = poll(sim, token).json()
    assert body["task"]["state"] == "CANCELLED"  # the hook ran before the real poll answered
    assert sim.event_names()[-2:] == ["cancelled", "fault"]

    # A failing hook becomes a visible 500 rather than a hung client.
    sim.inject("poll", before=sim.cancel_from_ui)
    r = poll(sim, token)
    assert r.status_code == 500 and "internal-error" in sim.event_names()


def test_fault_redirect_points_at_another_origin_with_the_request_path_and_query(sim: BitbucketSimulator) -> None:
    with RedirectTarget() as target:
        token, _ = locked_and_started(sim)
        sim.inject("unlock", redirect_to=target.url)
        r = requests.delete(
            f"{sim.url}/mvc/maintenance/lock",
            params={"token": token},
            auth=AUTH,
            timeout=TIMEOUT,
            allow_redirects=False,
        )
        assert r.status_code == 302
        assert r.headers["Location"] == f"{target.url}/mvc/maintenance/lock?token={token}"
        assert sim.locked and target.arrived == []  # the redirect replaced the action

        # A client that follows it (requests' default) hands the token and the password to the other origin,
        # and the DELETE arrives there as a GET answered 200: what a naive unlock takes for success.
        sim.inject("unlock", redirect_to=target.url, status=302)
        followed = requests.delete(
            f"{sim.url}/mvc/maintenance/lock", params={"token": token}, auth=AUTH, timeout=TIMEOUT
        )
        assert followed.status_code == 200
        arrived = target.arrived[-1]
        assert arrived.method == "GET" and arrived.query["token"] == [token]
        assert target.received(token)
        assert sim.locked


def test_redirect_target_sees_headers_and_basic_credentials() -> None:
    with RedirectTarget() as target:
        requests.post(f"{target.url}/x", headers={TOKEN_HEADER: "tok-123456"}, auth=("admin", "pw-98765"), timeout=2)
        assert target.received("tok-123456") and target.received("pw-98765")
        assert not target.received("something-else")


def test_fault_redirect_refuses_anything_but_a_local_http_origin(sim: BitbucketSimulator) -> None:
    for bad in ("http://example.com", "https://127.0.0.1:1", "ftp://127.0.0.1"):
        with pytest.raises(ValueError, match="redirect_to"):
            sim.inject("unlock", redirect_to=bad)
    with pytest.raises(ValueError, match="3xx"):
        sim.inject("unlock", redirect_to="http://127.0.0.1:1", status=500)


def test_rate_limit_answers_429_with_retry_after_and_does_nothing(sim: BitbucketSimulator) -> None:
    sim.rate_limit("lock", retry_after=7, times=1)
    r = lock(sim)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert "Rate limit" in r.json()["errors"][0]["message"]
    assert not sim.locked
    assert lock(sim).status_code == 202  # the next one goes through


def test_cli_parses_and_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--port", "not-a-number"])
    assert exc.value.code == 2
