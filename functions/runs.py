"""The run table: one item per instance while a backup of it runs.

It is the concurrency guard (a conditional put per instance) and the only place the unlock and cancel tokens
are kept (never in the state machine's input or output). The table is KMS-encrypted.

Expiry: a guard left by a crashed run must not block the instance for ever, but an unlock token must never be
lost while Bitbucket may be locked with it. So a record expires (DynamoDB TTL on `expires_at`) only while it
holds no token: the guard's expiry is the backup state machine's timeout plus a margin, so it outlives the
execution; while a token is held the record has no expiry at all and no other execution may take it over; when
the token is removed (unlocked), the expiry comes back.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from functions.clients.aws import client, error_code
from functions.errors import BackupInProgress, PreflightFailed
from functions.models import environment
from functions.models.config import InstanceConfig
from functions.models.timeouts import RECORD_MARGIN_SECONDS, execution_timeout_seconds
from functions.observability import register_secret

# For a record written before expiry_seconds was stored (a run in flight during an upgrade).
_DEFAULT_EXPIRY_SECONDS = 24 * 3600


def record_expiry_seconds(config: InstanceConfig) -> int:
    """How long a run's guard outlives its start: the backup state machine's timeout (as deployed, or as this
    instance's config implies, whichever is longer) plus a margin for the safety net."""
    deployed = environment.execution_timeout()
    timeout = max(int(deployed) if deployed.isdigit() else 0, execution_timeout_seconds([config]))
    return timeout + RECORD_MARGIN_SECONDS


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
    progress_sent: int = 0  # the highest percentage Bitbucket accepted
    # Set when the workflow's own failure path kept the item (Bitbucket possibly still locked): the safety
    # net must not act (and notify) a second time.
    handled: bool = False
    # Set by the first disaster-recovery copy call, which runs only once every original is complete: from then on
    # a failure keeps the originals (as complete backups) and removes only the unfinished copies.
    copies_started_at: float | None = None
    # Set by a failure path (the workflow's or the safety net's) before it lists what the run made to remove it: a
    # copy step still running then (Step Functions does not stop it) removes what it makes itself (functions/backup.py).
    discarding: bool = False

    @property
    def ever_locked(self) -> bool:
        """Whether this run took Bitbucket's lock at some point (what it makes under the lock can exist)."""
        return self.phase != "preparing" or self.unlock_token is not None or self.locked_at is not None

    def __repr__(self) -> str:
        return f"Run({self.instance}, {self.backup_id}, {self.phase})"


def _table() -> str:
    return environment.runs_table()


def acquire(instance: str, backup_id: str, execution: str, ttl_seconds: int) -> None:
    """Take the instance's guard for this run, expiring after `ttl_seconds` (see record_expiry_seconds)."""
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
                "expiry_seconds": {"N": str(ttl_seconds)},
            },
            # An expired guard may be taken over, but never one that holds an unlock token (Bitbucket may still be
            # locked with it). A retry of the same execution's validate (Step Functions retries Lambda errors) may
            # take its own guard again, as long as that run has not locked yet.
            ConditionExpression=(
                "attribute_not_exists(#i) OR (#x < :now AND attribute_not_exists(#t))"
                " OR (#e = :e AND #b = :b AND #p = :preparing)"
            ),
            ExpressionAttributeNames={
                "#i": "instance",
                "#e": "execution",
                "#b": "backup_id",
                "#p": "phase",
                "#x": "expires_at",
                "#t": "unlock_token",
            },
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
        raise _refusal(instance, get(instance), ttl_seconds, now) from None


def _refusal(instance: str, other: Run | None, ttl_seconds: int, now: float) -> BackupInProgress | PreflightFailed:
    if other is None or not other.unlock_token:
        return BackupInProgress(f"skipped: backup {other.backup_id if other else '?'} of '{instance}' is in progress")
    execution = other.execution.rsplit(":", 1)[-1] or "?"
    if other.locked_at is not None and now - other.locked_at > ttl_seconds:
        # Locked for longer than any execution may run: that run is over, but it never unlocked.
        hours = (now - other.locked_at) / 3600
        return PreflightFailed(
            f"validate: Bitbucket may still be locked: backup {other.backup_id} (execution {execution}) locked it "
            f"{hours:.0f} h ago and never unlocked, and its unlock token is still in the run table. This run did "
            f"not start and left that record alone: unlock Bitbucket with the token (README, Troubleshooting, "
            f"'Unlocking Bitbucket by hand'), then delete the item of '{instance}' from the run table"
        )
    return BackupInProgress(
        f"skipped: backup {other.backup_id} of '{instance}' (execution {execution}) is in progress and holds "
        "Bitbucket's lock"
    )


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
        progress_sent=int(_num(item, "progress_sent") or 0),
        handled="handled_at" in item,
        copies_started_at=_num(item, "copies_started_at"),
        discarding="discarding_at" in item,
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
    add_to_set: tuple[str, str | list[str]] | None = None,
    **values: str | float,
) -> dict[str, Any]:
    """Set (and remove) attributes of this run's item; refuses to touch another run's item.

    Storing the unlock token removes the item's expiry (TTL must never delete the only copy of a token that
    Bitbucket may still be locked with); removing it brings the expiry back, counted from now."""
    names = {"#b": "backup_id"}
    attr: dict[str, Any] = {":b": {"S": backup_id}}
    sets = []
    if "unlock_token" in values:
        remove = (*remove, "expires_at")
    elif "unlock_token" in remove:
        names.update({"#x": "expires_at", "#xs": "expiry_seconds"})
        attr.update({":now": {"N": str(int(time.time()))}, ":xs": {"N": str(_DEFAULT_EXPIRY_SECONDS)}})
        sets.append("#x = if_not_exists(#xs, :xs) + :now")
    for i, (key, value) in enumerate(values.items()):
        names[f"#k{i}"] = key
        attr[f":v{i}"] = {"N": str(value)} if isinstance(value, (int, float)) else {"S": value}
        sets.append(f"#k{i} = :v{i}")
    expression = "SET " + ", ".join(sets) if sets else ""
    if add_to_set:
        names["#add"] = add_to_set[0]
        members = add_to_set[1]
        attr[":member"] = {"SS": [members] if isinstance(members, str) else members}
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


def mark_discarding(instance: str, backup_id: str) -> bool:
    """Records that this run is being discarded, before its failure path lists what it made; False when its item is
    gone (or is another run's): a copy step that reads it then finds no run either, and acts the same way."""
    try:
        update(instance, backup_id, discarding_at=time.time())
    except ClientError as error:
        if error_code(error) != "ConditionalCheckFailedException":
            raise
        return False
    return True


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
