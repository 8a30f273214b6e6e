"""`bitbucket-backup unlock INSTANCE` against the simulator, through the stack's operator-unlock function: our lock
(stuck after a failed unlock), someone else's lock, no lock, our token gone, and a backup still running. It unlocks
only with the token this tool stored, never prints it, and says what to do when it cannot."""

from __future__ import annotations

import json
from collections.abc import Callable

from bitbucket_backup_cli.base import FAILED, OK
from rehearsal.serve import LocalEndpoint
from tests.integration.conftest import World, command_line, wait_for


def unlock(endpoint: LocalEndpoint, *more: str) -> tuple[int, str, str]:
    return command_line(endpoint, "unlock", "demo", *more)


def stuck(w: World) -> str:
    """A backup whose unlock Bitbucket refuses, so that its failure path cannot unlock either: the token stays in the
    run record and Bitbucket in maintenance mode (what the README's 'Unlocking Bitbucket by hand' was for)."""
    w.sim.inject("unlock", status=500, times=None)
    result = w.r.run_backup()
    assert result.status == "FAILED" and "NO - unlock failed" in (result.cause or ""), result.cause
    w.sim.reset_faults()
    assert w.sim.locked
    record = w.r.run_record()
    assert record is not None and "unlock_token" in record
    return str(record["backup_id"]["S"])


def test_our_stuck_lock_is_released_with_the_stored_token(served: Callable[..., tuple[World, LocalEndpoint]]) -> None:
    w, endpoint = served()
    backup_id = stuck(w)
    code, out, err = unlock(endpoint)
    assert code == OK, out + err
    assert out.startswith(f"demo: Bitbucket unlocked with the token of backup {backup_id}")
    # Progress 100 ended the backup task before the unlock failed: the cancel is refused, and said so plainly.
    assert "backup task not cancelled: Bitbucket refused with HTTP 409 (the task had ended)" in out, out
    assert "locked by someone else" not in out, out
    assert not w.sim.locked
    assert w.r.run_record() is None, "the guard is released: the next backup may run"
    assert any("unlocked by an operator" in (n["subject"] or "") for n in w.r.notifications())
    assert not [s for s in w.sim.issued_secrets if s in out + err], "a token or the password was printed"
    # Again: nothing left to unlock.
    code, out, _ = unlock(endpoint, "--json")
    assert code == OK and json.loads(out)["outcome"] == "not-locked"


def test_someone_else_s_lock_is_never_touched(served: Callable[..., tuple[World, LocalEndpoint]]) -> None:
    w, endpoint = served()
    w.sim.lock_by_other("nightly-script")
    code, out, err = unlock(endpoint, "--json")
    answer = json.loads(out)
    assert code == FAILED and answer["outcome"] == "not-ours", out + err
    assert "Nothing was touched" in answer["message"] and "by hand" in answer["message"]
    assert w.sim.locked and w.sim.lock_owner == "nightly-script"


def test_no_lock_is_nothing_to_do(served: Callable[..., tuple[World, LocalEndpoint]]) -> None:
    w, endpoint = served()
    code, out, err = unlock(endpoint)
    assert code == OK, out + err
    assert out.strip() == "demo: Bitbucket is RUNNING: nothing to unlock"
    assert not w.sim.locked


def test_without_the_token_it_says_so_and_guesses_nothing(served: Callable[..., tuple[World, LocalEndpoint]]) -> None:
    w, endpoint = served()
    stuck(w)
    # The record, with the token, is gone (expired, or deleted by hand).
    w.r.client("dynamodb").delete_item(TableName=w.r.table, Key={"instance": {"S": "demo"}})
    code, out, err = unlock(endpoint)
    assert code == FAILED, out + err
    assert "holds no unlock token" in out and "run record (with its token) is gone" in out
    assert w.sim.locked, "without the token it must not try anything else"


def test_a_running_backup_is_stopped_first_not_unlocked_under_it(
    served: Callable[..., tuple[World, LocalEndpoint]],
) -> None:
    w, endpoint = served(drain_seconds=30)
    execution = w.r.start()
    wait_for(lambda: w.r.run_record() is not None and "unlock_token" in (w.r.run_record() or {}), seconds=60)
    code, out, err = unlock(endpoint)
    assert code == FAILED, out + err
    assert "is still running" in out and "bitbucket-backup cancel" in out
    assert w.sim.locked
    w.r.client("stepfunctions").stop_execution(executionArn=execution)


def test_a_failed_backup_ends_with_its_error_and_whether_bitbucket_is_unlocked(
    served: Callable[..., tuple[World, LocalEndpoint]],
) -> None:
    """As Atlassian's script ends: one ERROR line naming the step and the cause, then the lock's state; here the
    unlock is refused, so the operator is told that Bitbucket is still locked and what ends it."""
    w, endpoint = served()
    w.sim.inject("unlock", status=500, times=None)
    code, out, err = command_line(endpoint, "backup", "--instance", "demo", "--wait", "--poll-interval", "0.1")
    assert code == FAILED, out + err
    *_, error, lock = out.strip().splitlines()
    assert error.startswith("ERROR: ") and "unlock" in error and "[unlocked" not in error, out
    assert lock.startswith("Bitbucket unlocked: NO - unlock failed"), out
    assert out.count("ERROR: ") == 1
    w.sim.reset_faults()
    # The same end, read back later from the execution.
    execution = err.split("execution ", 1)[1].split()[0]  # "Started backup of demo: execution NAME"
    code, out, _ = command_line(endpoint, "logs", execution)
    assert out.strip().splitlines()[-1].startswith("Bitbucket unlocked: NO - unlock failed"), out
    code, out, _ = unlock(endpoint)
    assert code == OK and not w.sim.locked, out
