"""The run record (functions/runs.py) over moto's DynamoDB: it outlives the execution, it is never taken over while
it holds an unlock token, and DynamoDB's TTL can never delete a token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from functions import runs
from functions.clients import aws
from functions.errors import BackupInProgress, PreflightFailed
from functions.models.environment import EXECUTION_TIMEOUT as EXECUTION_TIMEOUT_ENV
from functions.models.timeouts import execution_timeout_seconds
from tests.conftest import create_runs_table, instance_config

TABLE = "runs"
FIRST, SECOND = "prod-20261123-020000", "prod-20261124-020000"
EXEC_1 = "arn:aws:states:eu-west-1:123456789012:execution:backup:first"
EXEC_2 = "arn:aws:states:eu-west-1:123456789012:execution:backup:second"


RSYNC_AND_PG = {
    "home": {
        "strategy": "rsync",
        "instance_id": "i-0123456789abcdef0",
        "home_path": "/var/atlassian/application-data/bitbucket",
        "staging_path": "/srv/staging",
        "command_timeout_seconds": 6 * 3600,
    },
    "database": {
        "strategy": "postgresql",
        "instance_id": "i-0123456789abcdef0",
        "user": "bitbucket",
        "dbname": "bitbucket",
        "password_secret": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf",
        "dump_path": "/srv/dumps",
        "command_timeout_seconds": 2 * 3600,
    },
    "archive": {"command_timeout_seconds": 3 * 3600},
}


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch, moto_clients: None) -> Iterator[None]:
    monkeypatch.setenv("RUNS_TABLE", TABLE)
    monkeypatch.delenv(EXECUTION_TIMEOUT_ENV, raising=False)
    with mock_aws():
        create_runs_table(TABLE)
        yield


def item() -> dict[str, Any]:
    found = aws.client("dynamodb").get_item(TableName=TABLE, Key={"instance": {"S": "prod"}}).get("Item")
    assert found is not None
    return dict(found)


def locked_first_run(ttl: int = 3600) -> None:
    runs.acquire("prod", FIRST, EXEC_1, ttl_seconds=ttl)
    runs.update("prod", FIRST, phase="locked", unlock_token="tok-first-0123456789", locked_at=time.time())


# ------------------------------------------------------------------------------------------------- the expiry


def test_the_record_outlives_the_state_machine_timeout() -> None:
    config = instance_config()
    timeout = execution_timeout_seconds([config])
    assert runs.record_expiry_seconds(config) > timeout
    # The deployed timeout (a fleet's slowest instance may set it) counts when it is longer.
    with pytest.MonkeyPatch.context() as env:
        env.setenv(EXECUTION_TIMEOUT_ENV, str(timeout + 86400))
        assert runs.record_expiry_seconds(config) > timeout + 86400


def test_the_timeout_counts_the_waits_on_hosts() -> None:
    # rsync's live pass (6 h) + the copy under the lock (rsync 6 h, pg_dump 2 h in parallel) + the archive (3 h),
    # on top of the drain and snapshot waits: the old expiry (drain + snapshot + 1 h) ignored all of it.
    config = instance_config(**RSYNC_AND_PG)
    host_waits = 6 * 3600 + 6 * 3600 + 3 * 3600
    assert execution_timeout_seconds([config]) >= config.longest_run_seconds + host_waits
    assert runs.record_expiry_seconds(config) > config.longest_run_seconds + host_waits
    # A fleet's state machine waits for its slowest instance.
    assert execution_timeout_seconds([instance_config(), config]) == execution_timeout_seconds([config])


# ------------------------------------------------------------------------------------------- take-over refused


def test_an_expired_guard_without_a_token_is_taken_over(table: None) -> None:
    runs.acquire("prod", FIRST, EXEC_1, ttl_seconds=-10)
    runs.acquire("prod", SECOND, EXEC_2, ttl_seconds=3600)
    assert item()["backup_id"]["S"] == SECOND


def test_a_record_holding_a_token_is_never_overwritten_even_past_its_expiry(table: None) -> None:
    locked_first_run()
    # As an older version wrote it, or as DynamoDB shows an expired item it has not deleted yet.
    aws.client("dynamodb").update_item(
        TableName=TABLE,
        Key={"instance": {"S": "prod"}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )
    with pytest.raises(BackupInProgress) as error:
        runs.acquire("prod", SECOND, EXEC_2, ttl_seconds=3600)
    assert f"backup {FIRST}" in str(error.value) and "execution first" in str(error.value)
    assert "holds Bitbucket's lock" in str(error.value)
    kept = item()
    assert kept["backup_id"]["S"] == FIRST and kept["unlock_token"]["S"] == "tok-first-0123456789"


def test_a_token_held_longer_than_any_execution_runs_is_a_clear_failure(table: None) -> None:
    locked_first_run(ttl=3600)
    aws.client("dynamodb").update_item(
        TableName=TABLE,
        Key={"instance": {"S": "prod"}},
        UpdateExpression="SET locked_at = :long_ago",
        ExpressionAttributeValues={":long_ago": {"N": str(time.time() - 5 * 3600)}},
    )
    with pytest.raises(PreflightFailed) as error:
        runs.acquire("prod", SECOND, EXEC_2, ttl_seconds=3600)
    text = str(error.value)
    assert text.startswith("validate: Bitbucket may still be locked")
    assert FIRST in text and "5 h ago" in text and "never unlocked" in text
    assert "README, Troubleshooting" in text and "delete the item of 'prod'" in text
    assert "tok-first-0123456789" not in text
    assert item()["backup_id"]["S"] == FIRST


# --------------------------------------------------------------------------------------------------------- TTL


def test_ttl_never_applies_while_a_token_is_held_and_returns_after_the_unlock(table: None) -> None:
    runs.acquire("prod", FIRST, EXEC_1, ttl_seconds=7200)
    before = float(item()["expires_at"]["N"])
    assert before >= time.time() + 7100
    runs.update("prod", FIRST, phase="locked", unlock_token="tok-first-0123456789", locked_at=time.time())
    assert "expires_at" not in item()
    runs.update("prod", FIRST, cancel_token="cancel-0123456789")  # other updates leave it so
    assert "expires_at" not in item()
    runs.update("prod", FIRST, phase="unlocked", remove=("unlock_token", "cancel_token"))
    after = item()
    assert "unlock_token" not in after
    assert float(after["expires_at"]["N"]) >= time.time() + 7100


def test_the_discarding_mark_is_set_on_this_runs_record_only(table: None) -> None:
    """The failure path's mark for copy steps still running (functions/cleanup.py): read back by get(); refused on
    another run's record or none (a copy step reading either finds no open run of its own, and undoes its copy)."""
    locked_first_run()
    before = runs.get("prod", FIRST)
    assert before is not None and not before.discarding
    assert runs.mark_discarding("prod", SECOND) is False
    assert "discarding_at" not in item()
    assert runs.mark_discarding("prod", FIRST) is True
    record = runs.get("prod", FIRST)
    assert record is not None and record.discarding and record.unlock_token  # nothing else of it changed
    runs.release("prod", FIRST)
    assert runs.mark_discarding("prod", FIRST) is False
