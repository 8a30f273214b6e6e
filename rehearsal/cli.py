"""`python -m rehearsal`: rehearse a full backup locally, against the simulator or a staging Bitbucket.

Prints the run the way Atlassian's DIY backup page does, one line per step, then a summary; `--json PATH`
writes the summary as JSON. Exit 0 when the backup succeeded, 1 when it failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bitbucket_backup_cli.seed import Clock
from functions.models.steps import BACKUP, failed_label
from rehearsal.latency import LatencyModel
from rehearsal.runtime import Rehearsal, RunResult, local_simulator


def add_world_options(parser: argparse.ArgumentParser) -> None:
    """The world's options, which `python -m rehearsal` and `python -m rehearsal serve` share."""
    parser.add_argument(
        "--drain-timeout",
        type=int,
        default=60,
        metavar="SECONDS",
        help="fail if not DRAINED after this long (default 60)",
    )
    parser.add_argument(
        "--poll-interval", type=int, default=1, metavar="SECONDS", help="seconds between drain polls (default 1)"
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long the local simulator takes to drain (default 2)",
    )
    parser.add_argument(
        "--home-strategy",
        choices=["amazon-ebs", "rsync", "btrfs", "none"],
        default="amazon-ebs",
        help="amazon-ebs (snapshots in moto), rsync (the host script copies a generated home of real git "
        "repositories, then archives it to S3) or btrfs (the same home on a btrfs loop device: only a snapshot "
        "under the lock, rsync'ed after the unlock; needs root)",
    )
    parser.add_argument(
        "--db-strategy",
        choices=["amazon-rds", "amazon-aurora", "postgresql", "mysql", "postgresql-fslevel", "none"],
        default="amazon-rds",
        help="amazon-rds / amazon-aurora (snapshots in moto), postgresql (pg_dump of a local PostgreSQL 15 the "
        "rehearsal starts) or mysql (mysqldump of a local MariaDB), the dumps archived to S3; postgresql-fslevel "
        "(a data directory inside a btrfs home, copied by the home's snapshot)",
    )
    parser.add_argument(
        "--mesh-nodes",
        type=int,
        default=0,
        metavar="N",
        help="Data Center with N Bitbucket Mesh nodes, each copied under the same lock as the home and the database "
        "(default 0)",
    )
    parser.add_argument(
        "--mesh-strategy",
        choices=["amazon-ebs", "rsync"],
        default="amazon-ebs",
        help="how the Mesh nodes' homes are copied: amazon-ebs (snapshots in moto, the default) or rsync (the host "
        "script copies a generated home of real git repositories per node)",
    )
    parser.add_argument(
        "--search-strategy",
        choices=["amazon-opensearch", "opensearch", "none"],
        default="none",
        help="also snapshot the search index: amazon-opensearch (a domain: SigV4 with the functions' roles) or "
        "opensearch (self-managed: basic authentication from Secrets Manager), both served by a simulator of the "
        "snapshot API on 127.0.0.1 (no OpenSearch server is installed); default none",
    )
    parser.add_argument(
        "--zero-downtime",
        action="store_true",
        help="back up without a lock (Data Center 4.8+; atomic snapshots only): only the version is asked",
    )
    parser.add_argument(
        "--bitbucket-version", default="8.19.1", metavar="VERSION", help="the local simulator's version (8.19.1)"
    )
    parser.add_argument(
        "--home-path",
        type=Path,
        metavar="DIR",
        help="with --home-strategy rsync: back up this directory (a copy of your Bitbucket home, to measure the "
        "locked pass on real data) instead of a generated one; it is only read",
    )
    parser.add_argument(
        "--locked-pass-parallel",
        type=int,
        default=1,
        metavar="N",
        help="with --home-strategy rsync: rsyncs of the locked pass over shards of the repositories (default 1)",
    )
    parser.add_argument(
        "--locked-pass-scan",
        choices=("full", "changed"),
        default="full",
        help="with --home-strategy rsync: the locked pass compares every file (full, the default) or copies what "
        "changed since the live pass began (changed)",
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="every AWS call waits for its round trip in a region (rehearsal/latency.py), as `make bench` does",
    )


def check_world_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.home_strategy == "none" and args.db_strategy == "none":
        parser.error("--home-strategy and --db-strategy cannot both be none: there would be nothing to back up")
    if args.zero_downtime and (args.home_strategy in ("rsync", "btrfs") or args.db_strategy in ("postgresql", "mysql")):
        parser.error(
            "--zero-downtime needs atomic snapshots: not with rsync or btrfs (home), postgresql or mysql (database)"
        )
    if not 0 <= args.mesh_nodes <= 20:
        parser.error("--mesh-nodes must be from 0 to 20")
    if args.zero_downtime and args.mesh_nodes and args.mesh_strategy == "rsync":
        parser.error("--zero-downtime needs atomic snapshots: not with --mesh-strategy rsync")
    if args.db_strategy == "postgresql-fslevel" and args.home_strategy != "btrfs":
        parser.error("--db-strategy postgresql-fslevel needs --home-strategy btrfs: the home's snapshot copies it")
    locked_pass = args.locked_pass_parallel != 1 or args.locked_pass_scan != "full"
    if args.home_strategy != "rsync" and (args.home_path is not None or locked_pass):
        parser.error("--home-path, --locked-pass-parallel and --locked-pass-scan need --home-strategy rsync")
    if args.home_path is not None and not args.home_path.is_dir():
        parser.error(f"--home-path {args.home_path}: no such directory")
    if not 1 <= args.locked_pass_parallel <= 32:
        parser.error("--locked-pass-parallel must be from 1 to 32")
    if args.drain_timeout < 1 or args.poll_interval < 0:
        parser.error("--drain-timeout must be at least 1 and --poll-interval at least 0")


def world_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The Rehearsal's keyword arguments for these options."""
    return {
        "home": args.home_strategy,
        "database": args.db_strategy,
        "mesh_nodes": args.mesh_nodes,
        "mesh_strategy": args.mesh_strategy,
        "search": args.search_strategy,
        "timing": {"drain_timeout_seconds": args.drain_timeout, "poll_interval_seconds": args.poll_interval},
        "instance_overrides": {"zero_downtime": True} if args.zero_downtime else None,
        "latency_model": LatencyModel() if args.latency else None,
        "home_path": args.home_path.resolve() if args.home_path is not None else None,
        "home_settings": {
            **({"locked_pass_parallel": args.locked_pass_parallel} if args.locked_pass_parallel != 1 else {}),
            **({"locked_pass_scan": args.locked_pass_scan} if args.locked_pass_scan != "full" else {}),
        }
        or None,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rehearsal",
        description="Run the synthesized backup state machine locally (moto) against a Bitbucket simulator "
        "or your staging Bitbucket.",
        epilog="python -m rehearsal serve: the same world, served as an AWS endpoint on 127.0.0.1 for the "
        "bitbucket-backup command line until Ctrl-C (python -m rehearsal serve --help).",
    )
    parser.add_argument("--bitbucket-url", help="use this Bitbucket (e.g. staging) instead of the local simulator")
    parser.add_argument("--username", default="admin", help="Bitbucket system administrator (default: admin)")
    parser.add_argument("--password", help="password (default: $BITBUCKET_PASSWORD, or 'admin' for the simulator)")
    add_world_options(parser)
    parser.add_argument("--json", metavar="PATH", help="write the summary as JSON to PATH")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument(
        "--no-restore",
        action="store_true",
        help="skip the restore of the new backup into new resources that follows it",
    )
    args = parser.parse_args(argv)
    check_world_options(parser, args)
    return args


def _state_output(result: RunResult, state: str) -> dict[str, Any] | None:
    for event in result.history:
        details = event.get("stateExitedEventDetails")
        if details and details.get("name") == state and details.get("output"):
            return dict(json.loads(details["output"]))
    return None


def _exit_time(result: RunResult, state: str, last: bool = False) -> datetime | None:
    found = [e["timestamp"] for e in result.history if e.get("stateExitedEventDetails", {}).get("name") == state]
    return (found[-1] if last else found[0]) if found else None


def summarize(result: RunResult, rehearsal: Rehearsal) -> dict[str, Any]:
    validated = _state_output(result, BACKUP.validate.state) or {}
    backup_id = (validated.get("run") or {}).get("backup_id")
    summary = result.output if result.status == "SUCCEEDED" and result.output else {}
    lock_window, drain = summary.get("lock_window_s"), summary.get("drain_s")
    if lock_window is None:
        # A failed run: measure from the history (lock exited → unlock or the failure path exited).
        locked = _exit_time(result, BACKUP.lock.state)
        released = _exit_time(result, BACKUP.unlock.state) or _exit_time(result, BACKUP.handle_failure.state)
        drained = _exit_time(result, BACKUP.wait_drained.state, last=True)
        if locked and released:
            lock_window = round((released - locked).total_seconds(), 3)
        if locked and drained:
            drain = round((drained - locked).total_seconds(), 3)
    error = None
    if result.status != "SUCCEEDED":
        failed = [label for label in map(failed_label, result.states_entered()) if label]
        # The failure path ends its cause with whether Bitbucket is unlocked; said on a line of its own.
        said = re.fullmatch(r"(?s)(.*) \[unlocked: (.*)\]", result.cause or "")
        error = {
            "step": failed[0] if failed else None,
            "error": result.error,
            "message": said.group(1) if said else result.cause,
            "unlocked": said.group(2) if said else None,
        }
    return {
        "status": result.status,
        "error": error,
        "backup_id": backup_id,
        "zero_downtime": bool((validated.get("run") or {}).get("flow", {}).get("zero_downtime")),
        "lock_window_s": lock_window,
        "drain_s": drain,
        "orchestrator_share_s": round(lock_window - drain, 3) if lock_window is not None and drain else None,
        "state_transitions": result.state_transitions,
        "cost_usd": round(result.cost_usd, 6),
        # How close the run came to Step Functions' 256 KiB per state (moto fails a run past it, as AWS does).
        "largest_state_payload_bytes": result.largest_payload_bytes,
        "execution_seconds": round(result.seconds, 3),
        "parts": rehearsal.parts(),
        "snapshots": rehearsal.snapshots(backup_id) if backup_id else [],
        "archive": summary.get("archive") or [],
        "notifications": rehearsal.notifications(),
        "execution_arn": result.execution_arn,
        # Each function called AWS as its own role, moto refusing what the role does not allow (rehearsal/iam.py).
        # Each function ran in its own Lambda worker from the bundled asset, started cold on its first invocation.
        "lambda_workers": not rehearsal.runtime.inline,
        "cold_start_s": rehearsal.runtime.cold_starts(),
        "cold_starts_in_lock_window": rehearsal.cold_starts_while_locked(),
        # None, or the AWS calls that waited for the latency model's round trip, per service.
        "latency_model": dict(rehearsal.latency.calls) if rehearsal.latency else None,
        "iam_enforced": rehearsal.iam.active,
        "denied_calls": [str(denied) for denied in rehearsal.iam.denied],
    }


def print_summary(summary: dict[str, Any]) -> None:
    print()
    print(f"Backup {summary['backup_id'] or '(none)'}: {summary['status']}")
    for snap in summary["snapshots"]:
        print(f"  {snap['kind']:<22} {snap['id']:<28} {snap['part']:<9} {snap['state']:<10} {snap['status']}")
    for archive in summary["archive"]:
        print(f"  archive {archive['part']:<9} s3://{archive['bucket']}/{archive['key']} {archive['size']} bytes")
        print(f"          sha256 {archive['sha256']}")
    if summary["zero_downtime"]:
        print("  zero downtime: Bitbucket was never locked")
    elif summary["lock_window_s"] is not None:
        print(f"  lock window {summary['lock_window_s']:.3f} s, of which drain {summary['drain_s'] or 0:.3f} s")
    print(
        f"  {summary['state_transitions']} state transitions, {summary['cost_usd']:.6f} USD at Step Functions "
        "Standard prices"
    )
    for note in summary["notifications"]:
        print(f"  notification: {note['subject']}")
    if summary["lambda_workers"]:
        starts = [s for each in summary["cold_start_s"].values() for s in each]
        locked = summary["cold_starts_in_lock_window"]
        print(
            f"  Lambda: {len(starts)} cold starts ({max(starts, default=0):.2f} s at most), "
            f"{len(locked)} of them while Bitbucket was locked{': ' + ', '.join(locked) if locked else ''}"
        )
    if summary.get("latency_model") is not None:
        calls = sum(summary["latency_model"].values())
        print(f"  AWS latency modelled (rehearsal/latency.py): {calls} calls waited for a region's round trip")
    if summary["iam_enforced"]:
        denied = summary["denied_calls"]
        print(f"  IAM enforced per function role: {', '.join(denied) if denied else 'no call denied'}")
    if summary["error"]:  # the end of a failed run, as Atlassian's script ends: the ERROR line, then the lock
        step, message = summary["error"]["step"], str(summary["error"]["message"] or "")
        # The cause names its step already ("validate: …"): say it once.
        print(f"ERROR: {message}" if step and message.startswith(f"{step}: ") else f"ERROR: {step}: {message}")
        unlocked = summary["error"].get("unlocked")
        print(f"Bitbucket unlocked: {unlocked or 'UNKNOWN - the failure path did not say; check Bitbucket'}")


def print_seed_lines(rehearsal: Rehearsal) -> None:
    """The functions' seed lines as they come, as `bitbucket-backup logs` prints them: the time since now (the
    execution's start) and, while Bitbucket is locked, the lock clock."""
    clock = Clock(time.time())

    def listener(record: dict[str, Any]) -> None:
        if "seed" in record:
            print(clock.render(time.time(), record), flush=True)

    rehearsal.logs.listener = listener


def rehearse_restore(rehearsal: Rehearsal, backup_id: str, args: argparse.Namespace) -> dict[str, Any]:
    """A backup nobody can restore is not a backup: restore the one just made into new resources."""
    target: dict[str, Any] = {}
    if args.db_strategy == "amazon-rds":
        target["database"] = {"instance_id": "restored-demo"}
    elif args.db_strategy == "amazon-aurora":
        target["database"] = {"cluster_id": "restored-demo", "writer_instance_id": "restored-demo-writer"}
    elif args.db_strategy == "postgresql":
        target["database"] = {"dbname": f"{backup_id.replace('-', '_')}_restored"}
    elif args.db_strategy == "mysql":  # the local server lets the user create bb_* databases
        target["database"] = {"dbname": f"bb_{backup_id.replace('-', '_')}_restored"}
    if args.home_strategy == "amazon-ebs":
        target["home"] = {"availability_zone": rehearsal.resources["zone"]}
    elif args.home_strategy in ("rsync", "btrfs"):
        target["home"] = {"path": str(rehearsal.host.root / "restored-home")}
    if args.mesh_nodes:  # each node's home: new volumes, or its own directory
        target["mesh"] = {
            f"node{n}": {"availability_zone": rehearsal.resources["zone"]}
            if args.mesh_strategy == "amazon-ebs"
            else {"path": str(rehearsal.host.root / f"restored-mesh-node{n}")}
            for n in range(1, args.mesh_nodes + 1)
        }
    if args.search_strategy != "none":  # new indices beside the live ones
        target["search"] = {}
    print(f"\nRestoring {backup_id} into new resources …", flush=True)
    if rehearsal.logs.listener is not None:
        print_seed_lines(rehearsal)  # its own clock
    result = rehearsal.run_restore({"instance": "demo", "backup_id": backup_id, "target": target})
    output = result.output or {}
    print(f"Restore of {backup_id}: {result.status}")
    if result.status != "SUCCEEDED":
        print(f"  failed: {result.error}: {result.cause}")
    return {"status": result.status, "error": result.error, "cause": result.cause, "output": output}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    password = args.password or os.environ.get("BITBUCKET_PASSWORD") or ("admin" if not args.bitbucket_url else None)
    if password is None:
        print("error: give --password or set BITBUCKET_PASSWORD for an external Bitbucket", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        url = args.bitbucket_url
        if not url:
            simulator = stack.enter_context(
                local_simulator(
                    username=args.username,
                    password=password,
                    drain_seconds=args.drain_seconds,
                    version=args.bitbucket_version,
                )
            )
            url = simulator.url
            if not args.quiet:
                print(f"Bitbucket simulator on {url} (drains in {args.drain_seconds:g} s)")
        if not args.quiet:
            print("Synthesizing the CDK app and deploying it into moto …", flush=True)
        rehearsal = stack.enter_context(
            Rehearsal(url, username=args.username, password=password, **world_settings(args))
        )
        if not args.quiet:
            print_seed_lines(rehearsal)
        result = rehearsal.run_backup(timeout=args.drain_timeout + 120)
        summary = summarize(result, rehearsal)
        print_summary(summary)
        if summary["status"] == "SUCCEEDED" and not args.no_restore:
            summary["restore"] = rehearse_restore(rehearsal, summary["backup_id"], args)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    restored = summary.get("restore", {}).get("status", "SUCCEEDED") == "SUCCEEDED"
    return 0 if summary["status"] == "SUCCEEDED" and restored else 1
