"""BitbucketClient against the simulator over real HTTP: the sequence, the retry policy, and error texts."""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator

import pytest

from functions.clients.bitbucket import BitbucketClient
from functions.clients.bitbucket_answers import Credentials, Lock
from functions.errors import (
    AlreadyLocked,
    BackupError,
    BitbucketBadResponse,
    BitbucketRequestFailed,
    BitbucketUnavailable,
    LockNotConfirmed,
)
from rehearsal.bitbucket_simulator import BitbucketSimulator

PASSWORD = "s3cret-Passw0rd"
PAT = "pat-0123456789abcdef"
MAINTENANCE = "/mvc/maintenance"
LOCK = "/mvc/maintenance/lock"
PROGRESS = "/mvc/admin/backups/progress/client"


def make_client(sim: BitbucketSimulator, password: str = PASSWORD, **overrides: float) -> BitbucketClient:
    options: dict[str, float] = {"timeout": 1.0, "retries": 3, "backoff": 0.01}
    options.update(overrides)
    return BitbucketClient(
        sim.url,
        Credentials(username="admin", password=password),
        timeout=options["timeout"],
        retries=int(options["retries"]),
        backoff=options["backoff"],
    )


def calls(sim: BitbucketSimulator, method: str, path: str) -> list[int]:
    """Statuses of the requests sent to one endpoint, in order (0 = dropped connection)."""
    return [status for m, p, status in sim.requests if (m, p) == (method, path)]


def secrets_of(sim: BitbucketSimulator, *extra: str | None) -> list[str]:
    found = [PASSWORD, sim.unlock_token, *extra]
    task = sim.task
    if task:
        found.append(task["cancelToken"])
    return [s for s in found if s]


def assert_no_secret(error: BaseException, secrets: list[str]) -> None:
    """Neither the text nor the traceback a Lambda would log may carry a password or a token."""
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"secret leaked into {text!r}"


def wait_drained(client: BitbucketClient, lock: Lock, deadline_s: float = 2.0) -> int:
    """Poll until DRAINED the way the state machine does (without its Wait state); returns the poll count."""
    started = time.monotonic()
    polls = 0
    while time.monotonic() - started < deadline_s:
        polls += 1
        state = client.maintenance(lock)
        assert state.task_state == "RUNNING"
        if state.drained:
            return polls
    raise AssertionError("the simulator never reported DRAINED")


@pytest.fixture
def sim_with_users() -> Iterator[BitbucketSimulator]:
    """A simulator that also knows a personal access token and a non-admin user."""
    with BitbucketSimulator(
        "admin", PASSWORD, drain_seconds=0.05, tokens={PAT}, non_admin=("bob", "bob-Passw0rd")
    ) as sim:
        yield sim


# ------------------------------------------------------------------------------------------------- happy path


def test_happy_sequence(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator)
    assert client.status() == "RUNNING"
    assert client.version() == "8.19.1"

    lock = client.lock()
    assert simulator.locked
    assert lock.unlock_token == simulator.unlock_token
    assert lock.owner == "admin"
    assert client.status() == "MAINTENANCE"

    task = client.start_backup(lock)
    assert task.state == "RUNNING"
    assert task.cancel_token == simulator.task["cancelToken"]
    assert task.id == simulator.task["id"]

    wait_drained(client, lock)
    client.progress(lock, 50)
    client.progress(lock, 100)
    assert simulator.progress_history == [50, 100]
    assert simulator.task["state"] == "COMPLETED"

    client.unlock(lock)
    assert not simulator.locked
    assert client.status() == "RUNNING"
    names = simulator.event_names()
    for expected in ("locked", "backup-started", "drained", "progress", "completed", "unlocked"):
        assert expected in names
    assert names.index("locked") < names.index("backup-started") < names.index("drained") < names.index("unlocked")
    # Nothing was refused or retried on the way.
    assert all(status < 400 for _, _, status in simulator.requests)


def test_progress_outside_range_is_refused_before_sending(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator)
    with pytest.raises(ValueError, match="101"):
        client.progress(Lock(unlock_token="irrelevant", owner=""), 101)
    assert calls(simulator, "POST", PROGRESS) == []


# ----------------------------------------------------------------------------------------------- 4xx answers


def test_wrong_password_is_401_naming_the_step_and_not_retried(simulator: BitbucketSimulator) -> None:
    wrong = "wrong-Passw0rd-123"
    client = make_client(simulator, password=wrong)
    with pytest.raises(BitbucketRequestFailed) as lock_error:
        client.lock()
    assert lock_error.value.status == 401
    assert "lock" in str(lock_error.value) and "401" in str(lock_error.value)
    assert calls(simulator, "POST", LOCK) == [401]
    assert not simulator.locked

    # An idempotent call is retried on 5xx, but never on a 4xx.
    with pytest.raises(BitbucketRequestFailed) as poll_error:
        client.maintenance()
    assert poll_error.value.status == 401
    assert "poll" in str(poll_error.value) and "401" in str(poll_error.value)
    assert calls(simulator, "GET", MAINTENANCE) == [401]
    for error in (lock_error.value, poll_error.value):
        assert_no_secret(error, [*secrets_of(simulator), wrong])


def test_non_admin_is_403(sim_with_users: BitbucketSimulator) -> None:
    client = BitbucketClient(
        sim_with_users.url, Credentials(username="bob", password="bob-Passw0rd"), timeout=1.0, backoff=0.01
    )
    with pytest.raises(BitbucketRequestFailed) as error:
        client.lock()
    assert error.value.status == 403
    assert "lock" in str(error.value) and "403" in str(error.value)
    assert calls(sim_with_users, "POST", LOCK) == [403]
    assert not sim_with_users.locked
    assert_no_secret(error.value, [*secrets_of(sim_with_users), "bob-Passw0rd"])


def test_injected_403_on_unlock_is_not_retried(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator)
    lock = client.lock()
    simulator.inject("unlock", status=403)
    with pytest.raises(BitbucketRequestFailed) as error:
        client.unlock(lock)
    assert error.value.status == 403
    assert "unlock" in str(error.value)
    assert calls(simulator, "DELETE", LOCK) == [403]
    assert simulator.locked
    assert_no_secret(error.value, secrets_of(simulator, lock.unlock_token))


def test_lock_held_by_someone_else_is_already_locked_and_left_alone(simulator: BitbucketSimulator) -> None:
    simulator.lock_by_other("someone-else")
    their_token = simulator.unlock_token
    client = make_client(simulator)
    with pytest.raises(AlreadyLocked) as error:
        client.lock()
    assert isinstance(error.value, BitbucketRequestFailed) and error.value.status == 409
    assert "lock" in str(error.value) and "409" in str(error.value)
    assert simulator.locked
    assert simulator.lock_owner == "someone-else"
    assert simulator.unlock_token == their_token
    assert calls(simulator, "POST", LOCK) == [409]
    assert calls(simulator, "DELETE", LOCK) == []
    assert "unlocked" not in simulator.event_names()
    assert_no_secret(error.value, secrets_of(simulator, their_token))


def test_second_lock_of_our_own_keeps_the_first_token(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator)
    first = client.lock()
    with pytest.raises(AlreadyLocked) as error:
        client.lock()
    assert simulator.locked
    assert simulator.unlock_token == first.unlock_token
    assert_no_secret(error.value, secrets_of(simulator, first.unlock_token))
    client.unlock(first)
    assert not simulator.locked


def test_progress_with_a_wrong_token_is_409(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator)
    lock = client.lock()
    client.start_backup(lock)
    wait_drained(client, lock)
    wrong = Lock(unlock_token="f" * 40, owner="")
    with pytest.raises(BitbucketRequestFailed) as error:
        client.progress(wrong, 50)
    assert error.value.status == 409
    assert "progress" in str(error.value) and "409" in str(error.value)
    assert calls(simulator, "POST", PROGRESS) == [409]
    assert simulator.progress_history == []
    assert_no_secret(error.value, secrets_of(simulator, lock.unlock_token, wrong.unlock_token))


# ------------------------------------------------------------------------------------------- the lock request


def test_lock_503_is_unavailable_after_exactly_one_request(simulator: BitbucketSimulator) -> None:
    simulator.inject("lock", status=503, times=None)
    with pytest.raises(BitbucketUnavailable) as error:
        make_client(simulator).lock()
    assert "lock" in str(error.value) and "503" in str(error.value)
    assert calls(simulator, "POST", LOCK) == [503]
    assert not simulator.locked
    assert_no_secret(error.value, secrets_of(simulator))


def test_lock_dropped_before_the_action_is_unavailable(simulator: BitbucketSimulator) -> None:
    simulator.inject("lock", drop=True)
    with pytest.raises(BitbucketUnavailable) as error:
        make_client(simulator).lock()
    assert not simulator.locked
    assert calls(simulator, "POST", LOCK) == [0]  # never sent twice
    assert "lock" in str(error.value) and "connection failed" in str(error.value)
    assert_no_secret(error.value, secrets_of(simulator))


def test_lock_dropped_after_the_action_is_not_confirmed(simulator: BitbucketSimulator) -> None:
    simulator.inject("lock", drop=True, after_action=True)
    with pytest.raises(LockNotConfirmed) as error:
        make_client(simulator).lock()
    assert simulator.locked  # the lock took effect; only its answer was lost
    assert calls(simulator, "POST", LOCK) == [0]
    assert "lock" in str(error.value) and "by hand" in str(error.value)
    assert_no_secret(error.value, secrets_of(simulator))


def test_lock_timing_out_after_the_action_is_not_confirmed(simulator: BitbucketSimulator) -> None:
    simulator.inject("lock", delay=0.5, after_action=True)
    with pytest.raises(LockNotConfirmed) as error:
        make_client(simulator, timeout=0.2).lock()
    assert simulator.locked
    assert len(calls(simulator, "POST", LOCK)) <= 1  # the delayed answer may not be logged yet; never a second
    assert_no_secret(error.value, secrets_of(simulator))


def test_lock_answered_with_html_by_a_proxy_is_a_bad_response(simulator: BitbucketSimulator) -> None:
    simulator.inject("lock", status=202, body="<html><body>Gateway says hello</body></html>")
    with pytest.raises(BitbucketBadResponse) as error:
        make_client(simulator).lock()
    assert not simulator.locked  # the proxy answered; Bitbucket never saw the request
    assert "lock" in str(error.value) and "not JSON" in str(error.value) and "text/html" in str(error.value)
    assert calls(simulator, "POST", LOCK) == [202]
    assert_no_secret(error.value, secrets_of(simulator))


def test_lock_html_answer_while_now_locked_is_not_confirmed(simulator: BitbucketSimulator) -> None:
    # The lock took effect but the answer was replaced: the token is lost, so it must be unlocked by hand.
    simulator.inject("lock", status=202, body="<html><body>rewritten</body></html>", after_action=True)
    with pytest.raises(LockNotConfirmed) as error:
        make_client(simulator).lock()
    assert simulator.locked
    assert calls(simulator, "POST", LOCK) == [202]
    assert_no_secret(error.value, secrets_of(simulator))


def test_lock_answer_without_a_token_is_a_bad_response(simulator: BitbucketSimulator) -> None:
    simulator.inject("lock", status=202, body='{"owner": {"name": "admin"}}')
    with pytest.raises(BitbucketBadResponse, match="unlockToken") as error:
        make_client(simulator).lock()
    assert not simulator.locked
    assert_no_secret(error.value, secrets_of(simulator))


def test_start_503_is_not_retried(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator)
    lock = client.lock()
    simulator.inject("start", status=503, times=None)
    with pytest.raises(BitbucketUnavailable) as error:
        client.start_backup(lock)
    assert "start-backup" in str(error.value)
    assert calls(simulator, "POST", "/mvc/admin/backups") == [503]
    assert_no_secret(error.value, secrets_of(simulator, lock.unlock_token))


# ---------------------------------------------------------------------------------- retries of idempotent calls


def test_poll_503_once_is_retried_and_succeeds(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator)
    lock = client.lock()
    client.start_backup(lock)
    simulator.inject("poll", status=503)
    state = client.maintenance(lock)
    assert state.task_state == "RUNNING"
    assert calls(simulator, "GET", MAINTENANCE) == [503, 200]


def test_poll_503_always_gives_up_after_retries_plus_one(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator, retries=3)
    simulator.inject("poll", status=503, times=None)
    with pytest.raises(BitbucketUnavailable) as error:
        client.maintenance()
    assert calls(simulator, "GET", MAINTENANCE) == [503] * 4
    assert "poll" in str(error.value) and "503" in str(error.value) and "4 attempts" in str(error.value)
    assert_no_secret(error.value, secrets_of(simulator))


def test_unlock_500_once_is_retried_and_unlocks(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator)
    lock = client.lock()
    simulator.inject("unlock", status=500)
    client.unlock(lock)
    assert not simulator.locked
    assert calls(simulator, "DELETE", LOCK) == [500, 202]


def test_unlock_connection_always_dropped_keeps_the_token_out_of_the_error(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator, retries=1)
    lock = client.lock()
    simulator.inject("unlock", drop=True, times=None)
    with pytest.raises(BitbucketUnavailable) as error:
        client.unlock(lock)
    assert "unlock" in str(error.value) and "connection failed" in str(error.value)
    assert calls(simulator, "DELETE", LOCK) == [0, 0]
    assert simulator.locked
    # The requests exception text holds the URL with ?token=; it must not survive into the error.
    assert_no_secret(error.value, secrets_of(simulator, lock.unlock_token))


def test_truncated_json_on_poll_is_a_bad_response(simulator: BitbucketSimulator) -> None:
    simulator.inject("poll", status=200, body='{"db-state": "DRAI')
    with pytest.raises(BitbucketBadResponse) as error:
        make_client(simulator).maintenance()
    assert "poll" in str(error.value) and "not JSON" in str(error.value)
    assert calls(simulator, "GET", MAINTENANCE) == [200]  # a body is not retried
    assert_no_secret(error.value, secrets_of(simulator))


def test_poll_json_without_latch_states_is_a_bad_response(simulator: BitbucketSimulator) -> None:
    simulator.inject("poll", status=200, body='{"task": null}')
    with pytest.raises(BitbucketBadResponse, match="db-state") as error:
        make_client(simulator).maintenance()
    assert_no_secret(error.value, secrets_of(simulator))


def test_poll_slower_than_the_timeout_is_unavailable_no_answer(simulator: BitbucketSimulator) -> None:
    simulator.inject("poll", delay=0.8, times=None)
    started = time.monotonic()
    with pytest.raises(BitbucketUnavailable) as error:
        make_client(simulator, timeout=0.3, retries=0).maintenance()
    assert time.monotonic() - started < 0.75  # gave up at the timeout, did not wait for the answer
    assert "poll" in str(error.value) and "no answer" in str(error.value)
    assert_no_secret(error.value, secrets_of(simulator))


def test_poll_timing_out_once_is_retried(simulator: BitbucketSimulator) -> None:
    simulator.inject("poll", delay=0.6)
    state = make_client(simulator, timeout=0.3, retries=1).maintenance()
    assert state.db_state == "AVAILABLE" and state.task_state is None
    assert calls(simulator, "GET", MAINTENANCE)[-1] == 200


# --------------------------------------------------------------------------------------------- cancel and auth


def test_cancel_with_the_cancel_token_ends_the_task_but_keeps_the_lock(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator)
    lock = client.lock()
    task = client.start_backup(lock)
    client.cancel(task.cancel_token)
    assert simulator.task["state"] == "CANCELLED"
    assert simulator.locked
    state = client.maintenance(lock)
    assert (state.db_state, state.scm_state) == ("AVAILABLE", "AVAILABLE")

    with pytest.raises(BitbucketRequestFailed) as error:  # a second cancel is refused: the task is over
        client.cancel(task.cancel_token)
    assert error.value.status == 409 and "cancel" in str(error.value)
    assert_no_secret(error.value, secrets_of(simulator, lock.unlock_token, task.cancel_token))
    client.unlock(lock)
    assert not simulator.locked


def test_cancel_with_the_unlock_token_is_refused(simulator: BitbucketSimulator) -> None:
    client = make_client(simulator)
    lock = client.lock()
    task = client.start_backup(lock)
    with pytest.raises(BitbucketRequestFailed) as error:
        client.cancel(lock.unlock_token)
    assert error.value.status == 409
    assert simulator.task["state"] == "RUNNING"
    assert_no_secret(error.value, secrets_of(simulator, lock.unlock_token, task.cancel_token))


def test_bearer_token_is_accepted(sim_with_users: BitbucketSimulator) -> None:
    client = BitbucketClient(sim_with_users.url, Credentials(token=PAT), timeout=1.0, backoff=0.01)
    lock = client.lock()
    assert sim_with_users.locked and sim_with_users.lock_owner == "admin"
    client.unlock(lock)
    assert not sim_with_users.locked


def test_wrong_bearer_token_is_401(sim_with_users: BitbucketSimulator) -> None:
    wrong = "pat-not-the-right-one"
    client = BitbucketClient(sim_with_users.url, Credentials(token=wrong), timeout=1.0, backoff=0.01)
    with pytest.raises(BitbucketRequestFailed) as error:
        client.lock()
    assert error.value.status == 401
    assert_no_secret(error.value, [PAT, wrong, PASSWORD])


def test_credentials_repr_hides_the_secrets() -> None:
    shown = repr(Credentials(username="admin", password=PASSWORD, token=PAT))
    assert "admin" in shown
    assert PASSWORD not in shown and PAT not in shown


def test_every_client_error_is_a_backup_error() -> None:
    # Step Functions Catch relies on the class names; the failure path relies on the common base.
    for kind in (BitbucketUnavailable, BitbucketRequestFailed, BitbucketBadResponse, AlreadyLocked, LockNotConfirmed):
        assert issubclass(kind, BackupError)
