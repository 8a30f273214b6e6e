"""What Bitbucket, or whatever answers in its place, may send back: redirects, the rate limiter's 429 with
Retry-After, huge bodies, deeply nested JSON. Over real HTTP against the simulator and a second origin."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.utils import formatdate

import pytest

from functions.clients.bitbucket import BitbucketClient
from functions.clients.bitbucket_answers import Credentials
from functions.errors import BitbucketBadResponse, BitbucketRequestFailed, BitbucketUnavailable, LockNotConfirmed
from rehearsal.bitbucket_simulator import BitbucketSimulator, RedirectTarget

PASSWORD = "s3cret-Passw0rd"
MAINTENANCE = "/mvc/maintenance"
LOCK = "/mvc/maintenance/lock"
PROGRESS = "/mvc/admin/backups/progress/client"


def make_client(sim: BitbucketSimulator, **options: float) -> BitbucketClient:
    settings: dict[str, float] = {"timeout": 1.0, "retries": 3, "backoff": 0.01, "max_retry_after": 3.0}
    settings.update(options)
    return BitbucketClient(
        sim.url,
        Credentials(username="admin", password=PASSWORD),
        timeout=settings["timeout"],
        retries=int(settings["retries"]),
        backoff=settings["backoff"],
        max_retry_after=settings["max_retry_after"],
    )


def calls(sim: BitbucketSimulator, method: str, path: str) -> list[int]:
    return [status for m, p, status in sim.requests if (m, p) == (method, path)]


def drained(client: BitbucketClient, sim: BitbucketSimulator) -> None:
    """Lock, start the backup and wait for DRAINED, as the workflow does before its first progress report."""
    lock = client.lock()
    client.start_backup(lock)
    deadline = time.monotonic() + 2
    while not client.maintenance(lock).drained:
        assert time.monotonic() < deadline, "the simulator never drained"


@pytest.fixture
def elsewhere() -> Iterator[RedirectTarget]:
    """Another origin on 127.0.0.1, standing for a rogue proxy's or an attacker's server."""
    with RedirectTarget() as target:
        yield target


# ------------------------------------------------------------------------------------------------------ redirects


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirected_unlock_fails_and_no_token_leaves(
    simulator: BitbucketSimulator, elsewhere: RedirectTarget, status: int
) -> None:
    client = make_client(simulator)
    lock = client.lock()
    simulator.inject("unlock", redirect_to=elsewhere.url, status=status, times=None)
    with pytest.raises(BitbucketRequestFailed) as error:
        client.unlock(lock)
    # Not a success: Bitbucket itself never answered 2xx, and it is still locked.
    assert simulator.locked
    assert error.value.status == status
    text = str(error.value)
    assert text.startswith("unlock: ") and f"HTTP {status}" in text
    assert f"{elsewhere.url}/mvc/maintenance/lock" in text and "query not shown" in text
    assert lock.unlock_token not in text and "token=" not in text
    assert elsewhere.arrived == []  # never followed: neither the token nor the password went there
    assert calls(simulator, "DELETE", LOCK) == [status]  # a redirect is not retried


def test_a_redirected_preflight_fails_without_sending_the_password_elsewhere(
    simulator: BitbucketSimulator, elsewhere: RedirectTarget
) -> None:
    simulator.inject("poll", redirect_to=elsewhere.url)
    with pytest.raises(BitbucketRequestFailed, match=r"^validate: Bitbucket answered HTTP 302, a redirect to"):
        make_client(simulator).maintenance(step="validate")
    assert elsewhere.arrived == []
    assert not elsewhere.received(PASSWORD)


def test_a_redirected_lock_is_an_error_and_nothing_is_locked(
    simulator: BitbucketSimulator, elsewhere: RedirectTarget
) -> None:
    simulator.inject("lock", redirect_to=elsewhere.url)
    with pytest.raises(BitbucketRequestFailed, match=r"^lock: .*HTTP 302") as error:
        make_client(simulator).lock()
    assert error.value.status == 302
    assert not simulator.locked
    assert elsewhere.arrived == []


def test_a_lock_that_took_effect_but_was_answered_by_a_redirect_is_not_confirmed(
    simulator: BitbucketSimulator, elsewhere: RedirectTarget
) -> None:
    simulator.inject("lock", redirect_to=elsewhere.url, after_action=True)
    with pytest.raises(LockNotConfirmed, match="by hand"):
        make_client(simulator).lock()
    assert simulator.locked and elsewhere.arrived == []


def test_a_redirected_progress_report_fails_and_the_token_stays_here(
    simulator: BitbucketSimulator, elsewhere: RedirectTarget
) -> None:
    client = make_client(simulator)
    drained(client, simulator)
    token = simulator.unlock_token
    assert token is not None
    simulator.inject("progress", redirect_to=elsewhere.url)
    from functions.clients.bitbucket_answers import Lock

    with pytest.raises(BitbucketRequestFailed, match=r"^progress: .*HTTP 302"):
        client.progress(Lock(unlock_token=token, owner=""), 50)
    assert simulator.progress_history == []
    assert not elsewhere.received(token) and elsewhere.arrived == []


def test_the_shown_location_drops_credentials_and_query(simulator: BitbucketSimulator) -> None:
    # A Location with user:password@ and a token in the query (a proxy copying the request) shows neither.
    simulator.inject("status", status=302, headers={"Location": "http://user:hunter2@127.0.0.9:1/login?token=abc123"})
    with pytest.raises(BitbucketRequestFailed) as error:
        make_client(simulator).status()
    text = str(error.value)
    assert "http://127.0.0.9:1/login (query not shown)" in text
    assert "hunter2" not in text and "abc123" not in text and "user:" not in text


# --------------------------------------------------------------------------------------------- the rate limiter


def test_a_429_on_the_preflight_is_waited_out_as_told(simulator: BitbucketSimulator) -> None:
    simulator.rate_limit("poll", retry_after=1)
    started = time.monotonic()
    state = make_client(simulator).maintenance(step="validate")
    assert time.monotonic() - started >= 0.95  # Retry-After: 1 was honoured, not the 10 ms back-off
    assert state.db_state == "AVAILABLE"
    assert calls(simulator, "GET", MAINTENANCE) == [429, 200]


@pytest.mark.parametrize(
    ("endpoint", "method", "path"),
    [("status", "GET", "/status"), ("unlock", "DELETE", LOCK), ("lock", "POST", LOCK)],
)
def test_a_429_is_retried_on_every_call_even_the_lock(
    simulator: BitbucketSimulator, endpoint: str, method: str, path: str
) -> None:
    # The rate limiter refuses before Bitbucket acts, so even the lock (never retried blindly) may be repeated.
    client = make_client(simulator)
    lock = client.lock() if endpoint == "unlock" else None
    simulator.rate_limit(endpoint, retry_after=0, times=2)
    if endpoint == "status":
        assert client.status() == "RUNNING"
    elif endpoint == "unlock":
        assert lock is not None
        client.unlock(lock)
        assert not simulator.locked
    else:
        assert client.lock().unlock_token == simulator.unlock_token
    assert calls(simulator, method, path)[-3:] == [429, 429, 200 if method == "GET" else 202]


def test_a_retry_after_beyond_the_cap_is_an_error_that_names_it(simulator: BitbucketSimulator) -> None:
    simulator.rate_limit("poll", retry_after=120)
    started = time.monotonic()
    with pytest.raises(BitbucketUnavailable) as error:
        make_client(simulator, max_retry_after=3).maintenance()
    assert time.monotonic() - started < 1  # did not sleep two minutes in a Lambda
    text = str(error.value)
    assert text.startswith("poll: ") and "HTTP 429" in text and "120 s" in text and "3 s" in text
    assert "rate limiting" in text
    assert calls(simulator, "GET", MAINTENANCE) == [429]


def test_a_retry_after_date_far_ahead_is_beyond_the_cap(simulator: BitbucketSimulator) -> None:
    simulator.rate_limit("poll", retry_after=formatdate(time.time() + 3600, usegmt=True))
    with pytest.raises(BitbucketUnavailable, match="Retry-After"):
        make_client(simulator).maintenance()
    assert calls(simulator, "GET", MAINTENANCE) == [429]


def test_an_unreadable_retry_after_falls_back_to_the_back_off(simulator: BitbucketSimulator) -> None:
    simulator.rate_limit("poll", retry_after="soon, maybe")
    assert make_client(simulator).maintenance().db_state == "AVAILABLE"
    assert calls(simulator, "GET", MAINTENANCE) == [429, 200]


def test_a_rate_limiter_that_never_lets_go_gives_up_after_the_retries(simulator: BitbucketSimulator) -> None:
    simulator.rate_limit("poll", retry_after=0, times=None)
    with pytest.raises(BitbucketUnavailable, match=r"^poll: .*HTTP 429.* after 3 attempts"):
        make_client(simulator, retries=2).maintenance()
    assert calls(simulator, "GET", MAINTENANCE) == [429, 429, 429]


def test_a_503_with_a_long_retry_after_is_not_waited_for(simulator: BitbucketSimulator) -> None:
    simulator.inject("poll", status=503, headers={"Retry-After": "3600"})
    with pytest.raises(BitbucketUnavailable, match=r"HTTP 503 and asked to wait 3600 s"):
        make_client(simulator).maintenance()
    assert calls(simulator, "GET", MAINTENANCE) == [503]


def test_the_lock_is_still_not_retried_on_a_5xx(simulator: BitbucketSimulator) -> None:
    simulator.inject("lock", status=502, headers={"Retry-After": "0"}, times=None)
    with pytest.raises(BitbucketUnavailable):
        make_client(simulator).lock()
    assert calls(simulator, "POST", LOCK) == [502]
    assert not simulator.locked


# ------------------------------------------------------------------------------------------ size and shape


def test_a_body_over_the_bound_is_a_bad_answer(simulator: BitbucketSimulator) -> None:
    huge = json.dumps({"db-state": "AVAILABLE", "scm-state": "AVAILABLE", "padding": "x" * (2 * 1024 * 1024)})
    simulator.inject("poll", status=200, body=huge)
    with pytest.raises(BitbucketBadResponse, match=r"^poll: HTTP 200 with a body larger than 1,048,576 bytes"):
        make_client(simulator).maintenance()


def test_a_body_over_a_smaller_bound_is_refused_while_reading(simulator: BitbucketSimulator) -> None:
    client = BitbucketClient(
        simulator.url, Credentials(username="admin", password=PASSWORD), timeout=1.0, max_body_bytes=16
    )
    with pytest.raises(BitbucketBadResponse, match="larger than 16 bytes"):
        client.maintenance()


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_json_is_a_bad_answer_not_a_crash(simulator: BitbucketSimulator, depth: int) -> None:
    simulator.inject("poll", status=200, body="[" * depth + "]" * depth)
    with pytest.raises(BitbucketBadResponse, match=r"^poll: HTTP 200 with JSON nested .* levels deep"):
        make_client(simulator).maintenance()


def test_brackets_inside_strings_do_not_count_as_nesting(simulator: BitbucketSimulator) -> None:
    body = json.dumps({"db-state": "AVAILABLE", "scm-state": "AVAILABLE", "note": "[" * 500 + '\\"{' * 100})
    simulator.inject("poll", status=200, body=body)
    assert make_client(simulator).maintenance().db_state == "AVAILABLE"


def test_a_hostile_string_full_of_escapes_is_read_in_linear_time(simulator: BitbucketSimulator) -> None:
    # Escaped quotes by the hundred thousand: a scan that backtracks would take minutes here.
    body = '{"db-state": "AVAILABLE", "scm-state": "AVAILABLE", "note": "' + '\\"' * 200_000 + '"}'
    simulator.inject("poll", status=200, body=body)
    started = time.monotonic()
    assert make_client(simulator).maintenance().db_state == "AVAILABLE"
    assert time.monotonic() - started < 5
