"""The run table: one item per instance while a backup of it runs.

It is the concurrency guard (a conditional put per instance) and the only place the unlock and cancel tokens
are kept (never in the state machine's input or output). The table is KMS-encrypted and items expire by TTL,
so a guard left by a crashed run does not block the instance for ever.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from functions.clients.aws import client, error_code
from functions.errors import BackupInProgress
from functions.observability import register_secret


@dataclass(frozen=True)
class Run:
    instance: str
    backup_id: str
    execution: str
    phase: str  # preparing | locked | unlocked
    unlock_token: str | None = None
    cancel_token: str | None = None
    locked_at: float | None = None
    drained_at: float | None = None
    unlocked_at: float | None = None
    parts_done: int = 0
    # Set when the workflow's own failure path kept the item (Bitbucket possibly still locked): the safety
    # net must not act (and notify) a second time.
    handled: bool = False
    # Set by the first disaster-recovery copy call, which runs only once every original is complete: from then on
    # a failure keeps the originals (as complete backups) and removes only the unfinished copies.
    copies_started_at: float | None = None

    def __repr__(self) -> str:
        return f"Run({self.instance}, {self.backup_id}, {self.phase})"


def _table() -> str:
    return os.environ["RUNS_TABLE"]


def acquire(instance: str, backup_id: str, execution: str, ttl_seconds: int) -> None:
    now = int(time.time())
    try:
        client("dynamodb").put_item(
            TableName=_table(),
            Item={
                "instance": {"S": instance},
                "backup_id": {"S": backup_id},
                "execution": {"S": execution},
                "phase": {"S": "preparing"},
                "expires_at": {"N": str(now + ttl_seconds)},
            },
            # A retry of the same execution's validate (Step Functions retries Lambda errors) may take its own
            # guard again, as long as that run has not locked yet.
            ConditionExpression=(
                "attribute_not_exists(#i) OR expires_at < :now OR (#e = :e AND #b = :b AND #p = :preparing)"
            ),
            ExpressionAttributeNames={"#i": "instance", "#e": "execution", "#b": "backup_id", "#p": "phase"},
            ExpressionAttributeValues={
                ":now": {"N": str(now)},
                ":e": {"S": execution},
                ":b": {"S": backup_id},
                ":preparing": {"S": "preparing"},
            },
        )
    except ClientError as error:
        if error_code(error) != "ConditionalCheckFailedException":
            raise
        other = get(instance)
        raise BackupInProgress(
            f"skipped: backup {other.backup_id if other else '?'} of '{instance}' is in progress"
        ) from None


def get(instance: str, backup_id: str | None = None) -> Run | None:
    item = (
        client("dynamodb")
        .get_item(TableName=_table(), Key={"instance": {"S": instance}}, ConsistentRead=True)
        .get("Item")
    )
    if not item or (backup_id and item["backup_id"]["S"] != backup_id):
        return None
    run = Run(
        instance=instance,
        backup_id=item["backup_id"]["S"],
        execution=item.get("execution", {}).get("S", ""),
        phase=item.get("phase", {}).get("S", "preparing"),
        unlock_token=item.get("unlock_token", {}).get("S"),
        cancel_token=item.get("cancel_token", {}).get("S"),
        locked_at=_num(item, "locked_at"),
        drained_at=_num(item, "drained_at"),
        unlocked_at=_num(item, "unlocked_at"),
        parts_done=len(item.get("parts_done", {}).get("SS", [])),
        handled="handled_at" in item,
        copies_started_at=_num(item, "copies_started_at"),
    )
    register_secret(run.unlock_token)
    register_secret(run.cancel_token)
    return run


def _num(item: dict[str, Any], key: str) -> float | None:
    return float(item[key]["N"]) if key in item else None


def update(
    instance: str,
    backup_id: str,
    *,
    remove: tuple[str, ...] = (),
    add_to_set: tuple[str, str] | None = None,
    **values: str | float,
) -> dict[str, Any]:
    """Set (and remove) attributes of this run's item; refuses to touch another run's item."""
    names = {"#b": "backup_id"}
    attr: dict[str, Any] = {":b": {"S": backup_id}}
    sets = []
    for i, (key, value) in enumerate(values.items()):
        names[f"#k{i}"] = key
        attr[f":v{i}"] = {"N": str(value)} if isinstance(value, (int, float)) else {"S": value}
        sets.append(f"#k{i} = :v{i}")
    expression = "SET " + ", ".join(sets) if sets else ""
    if add_to_set:
        names["#add"] = add_to_set[0]
        attr[":member"] = {"SS": [add_to_set[1]]}
        expression += " ADD #add :member"
    if remove:
        for i, key in enumerate(remove):
            names[f"#r{i}"] = key
        expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove)))
    response = client("dynamodb").update_item(
        TableName=_table(),
        Key={"instance": {"S": instance}},
        UpdateExpression=expression.strip(),
        ConditionExpression="#b = :b",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=attr,
        ReturnValues="ALL_NEW",
    )
    return dict(response.get("Attributes", {}))


def release(instance: str, backup_id: str) -> None:
    """Remove this run's item (guard and tokens); another run's item is left alone."""
    try:
        client("dynamodb").delete_item(
            TableName=_table(),
            Key={"instance": {"S": instance}},
            ConditionExpression="backup_id = :b",
            ExpressionAttributeValues={":b": {"S": backup_id}},
        )
    except ClientError as error:
        if error_code(error) != "ConditionalCheckFailedException":
            raise


@contextlib.contextmanager
def progress_lock(instance: str, backup_id: str, wait_seconds: float = 30, stale_seconds: float = 60) -> Iterator[int]:
    """Serialises the parallel branches' progress reports, so that Bitbucket sees the percentage only increase.
    Yields the highest percentage already sent (0 if none)."""
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_seconds
    while True:
        now = time.time()
        try:
            item = client("dynamodb").update_item(
                TableName=_table(),
                Key={"instance": {"S": instance}},
                UpdateExpression="SET #l = :t, #la = :now",
                ConditionExpression="#b = :b AND (attribute_not_exists(#l) OR #la < :stale)",
                ExpressionAttributeNames={"#b": "backup_id", "#l": "progress_lock", "#la": "progress_lock_at"},
                ExpressionAttributeValues={
                    ":b": {"S": backup_id},
                    ":t": {"S": token},
                    ":now": {"N": str(now)},
                    ":stale": {"N": str(now - stale_seconds)},
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
            break
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield int(_num(item, "progress_sent") or 0)
    finally:
        with contextlib.suppress(ClientError):
            client("dynamodb").update_item(
                TableName=_table(),
                Key={"instance": {"S": instance}},
                UpdateExpression="REMOVE #l, #la",
                ConditionExpression="#l = :t",
                ExpressionAttributeNames={"#l": "progress_lock", "#la": "progress_lock_at"},
                ExpressionAttributeValues={":t": {"S": token}},
            )
