"""The catalog as the command line lists it: one row per backup."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bitbucket_backup_cli.aws import Aws

if TYPE_CHECKING:
    from functions.models.config import InstanceConfig


# --- the catalog -------------------------------------------------------------------------------------------------


def catalog(aws: Aws, config: InstanceConfig) -> list[dict[str, Any]]:
    """This instance's backups, newest first, one entry per backup id, from the tagged snapshots."""
    from functions.catalog import backup_status, backup_time, by_backup, parts_since, required_parts

    with aws.catalog_clients(config):
        grouped = by_backup(config)
    # A backup made before a part was configured (a Mesh node, the search index) is complete without it.
    since = parts_since(grouped)
    rows: list[dict[str, Any]] = []
    for backup_id, artifacts in sorted(grouped.items(), reverse=True):
        parts = [p for p in config.parts if any(a.part == p for a in artifacts)]
        missing = [p for p in required_parts(config, backup_id, since) if p not in parts]
        status = backup_status(config, artifacts, since)
        sizes = {p: sum(a.size_gb or 0 for a in artifacts if a.part == p) for p in parts}
        when = backup_time(backup_id)
        rows.append(
            {
                "instance": config.name,
                "backup_id": backup_id,
                "time": when.isoformat() if when else None,
                "status": status,
                "parts": parts,
                "missing_parts": missing,
                "size_gb": sizes,
                # The newest restore drill's verdict on any part of it (the drill tags every part alike).
                "verified": max((a.verified for a in artifacts if a.verified), default=None, key=lambda v: v[-10:]),
                "region": aws.region_name,
                "artifacts": [a.summary() for a in artifacts],
                "prune_after_backups": None,
            }
        )
    # finalize keeps the newest keep_backups complete backups (0: all): one with n newer complete backups goes once
    # keep_backups - n more complete (later if an immutable lock still holds it).
    complete = [row for row in rows if row["status"] == "complete"]
    if config.keep_backups:
        for newer, row in enumerate(complete):
            row["prune_after_backups"] = max(1, config.keep_backups - newer)
    return rows


def pruned_text(row: dict[str, Any]) -> str:
    after = row.get("prune_after_backups")
    if row["status"] != "complete":
        return "-"
    if after is None:
        return "never (keep_backups 0)"
    return f"after {after} more backup{'s' if after != 1 else ''}"
