"""What the command line prints: tables, an execution's result, JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bitbucket_backup_cli.base import BACKUP, DRILL
from bitbucket_backup_cli.catalog import pruned_text

if TYPE_CHECKING:
    pass


# --- printing ------------------------------------------------------------------------------------------------------


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def when_text(value: str | None) -> str:
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def print_catalog(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no backups")
        return
    table = []
    for row in rows:
        parts = ", ".join(f"{p} {row['size_gb'][p]} GB" for p in row["parts"]) or "-"
        if row["missing_parts"]:
            parts += f" (no {', '.join(row['missing_parts'])})"
        where = f"{row['region']}: " + ", ".join(a["id"] for a in row["artifacts"])
        verified = row.get("verified") or "-"
        table.append(
            [
                row["instance"],
                row["backup_id"],
                when_text(row["time"]),
                row["status"],
                verified,
                pruned_text(row),
                parts,
                where,
            ]
        )
    print_table(table, ["INSTANCE", "BACKUP ID", "TIME", "STATUS", "DRILL", "PRUNED", "PARTS", "WHERE"])


def print_result(record: dict[str, Any]) -> None:
    """The end of an execution, the way `make demo` prints a backup."""
    what = record["backup_id"] or "(no backup id)"
    title = {BACKUP: f"Backup {what}", DRILL: f"Restore drill of {what}"}.get(record["kind"], f"Restore of {what}")
    status = record["status"]
    if status == "SUCCEEDED" and record["skipped"]:
        print(f"{title}: SKIPPED - another backup of {record['instance']} was in progress; nothing was done")
        return
    if status == "FAILED":
        cause, failed = str(record["cause"] or "(no cause given)"), record["failed_step"]
        unlocked = record.get("unlocked")
        if unlocked:  # said on a line of its own below
            cause = cause.removesuffix(f" [unlocked: {unlocked}]")
        # The cause names its step already ("lock: …"): the title says it only when the cause does not.
        step = f" at step {failed}" if failed and not cause.startswith(f"{failed}: ") else ""
        print(f"{title}: FAILED{step}")
        print(f"ERROR: {record['error'] or 'Error'}: {cause}")
        if record["kind"] == BACKUP:
            print(f"Bitbucket unlocked: {unlocked or 'UNKNOWN - the failure path did not say; check Bitbucket'}")
        return
    if status in ("ABORTED", "TIMED_OUT"):
        print(f"{title}: {status}")
        print(
            f"ERROR: the {record['kind']} was {'stopped' if status == 'ABORTED' else 'timed out'} at "
            f"{record.get('current_state') or 'its start'}"
        )
        if record["kind"] == BACKUP:
            print(
                "Bitbucket unlocked: by the safety net, if this run still held the lock (its notification says; "
                f"`bitbucket-backup unlock {record['instance']}` checks)"
            )
        print(f"  {after_stop(record['kind'], record['execution_arn'])}")
        return
    print(f"{title}: {status}")
    output = record["output"] if isinstance(record["output"], dict) else {}
    if record["kind"] == BACKUP:
        for artifact in output.get("artifacts", []):
            size = f"{artifact.get('size_gb')} GB" if artifact.get("size_gb") is not None else "-"
            print(
                f"  {artifact['kind']:<22} {artifact['id']:<28} {artifact['part']:<9} {size:>7}  "
                f"{artifact.get('state', '')}  {artifact.get('status', '')}"
            )
        if output.get("lock_window_s") is not None:
            print(f"  lock window {output['lock_window_s']:.3f} s, of which drain {output.get('drain_s') or 0:.3f} s")
        if output.get("pruned"):
            print(f"  pruned {', '.join(output['pruned'])}")
        if output.get("prune_error"):
            print(f"  pruning old backups failed: {output['prune_error']}")
        for line in output.get("unshare_errors") or []:
            print(f"  {line}")
    elif record["kind"] == DRILL:
        print(f"  {'verified' if output.get('verified') else 'NOT verified'} on {output.get('date', '?')}")
        for check in output.get("checks") or []:
            print(f"  checked: {check}")
        for action in output.get("teardown") or []:
            print(f"  teardown: {action}")
    else:
        from functions.restore import created_lines

        for part, text in created_lines(output):
            print(f"  {part}: {text}")
        steps = output.get("next_steps") or []
        if steps:
            print("Next steps:")
            for number, line in enumerate(steps, 1):
                print(f"  {number}. {line}")


def after_stop(kind: str, execution_arn: str) -> str:
    if kind == BACKUP:
        return (
            "The safety net unlocks Bitbucket if it is still locked, ends the backup task and removes the unfinished "
            "backup; its notification says what it did."
        )
    if kind == DRILL:
        return (
            "The drill's throw-away copy is made by its own restore execution: when that one is stopped or fails, "
            "the restore's safety net removes what it created and notifies (bitbucket-backup status --kind restore)."
        )
    return (
        "The restore's safety net removes what it created so far (unless keep_on_failure) and notifies; if that "
        "notification says a cleanup failed, look for resources tagged "
        f"bitbucket-backup:restore-execution={execution_arn}."
    )


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))
