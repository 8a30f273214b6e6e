"""The commands: list, backup, restore, status, cancel, unlock."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bitbucket_backup_cli.aws import Aws, StateMachine
from bitbucket_backup_cli.base import (
    BACKUP,
    BACKUP_ID,
    DRILL,
    FAILED,
    INTERRUPTED,
    NOT_FOUND,
    OK,
    RESTORE,
    USAGE,
    CliError,
)
from bitbucket_backup_cli.catalog import catalog
from bitbucket_backup_cli.executions import (
    History,
    execution_record,
    find_execution,
    follow,
    iso_time,
    seed_lines,
    timed_timeline,
    timeline,
)
from bitbucket_backup_cli.render import after_stop, emit_json, print_catalog, print_result, print_table, when_text
from bitbucket_backup_cli.restore_options import restore_problem, restore_target

if TYPE_CHECKING:
    pass


# --- the commands ------------------------------------------------------------------------------------------------


def cmd_list(aws: Aws, args: argparse.Namespace) -> int:
    names = [args.instance] if args.instance else aws.instance_names()
    if not names:
        raise CliError(
            NOT_FOUND,
            f"no instances configured under {aws.config_prefix} in {aws.region_name}: is the stack deployed there? "
            "(--stack-name, --region, --endpoint-url)",
        )
    rows = [row for name in names for row in catalog(aws, aws.instance_config(name))]
    if args.json:
        emit_json({"backups": rows})
    else:
        print_catalog(rows)
    return OK


def _execution_name(kind: str, instance: str) -> str:
    return f"cli-{kind}-{instance}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"[:80]


def _start(aws: Aws, machine: StateMachine, execution_input: dict[str, Any], args: argparse.Namespace) -> int:
    name = _execution_name(machine.kind, str(execution_input["instance"]))
    started = aws.client("stepfunctions").start_execution(
        stateMachineArn=machine.arn, name=name, input=json.dumps(execution_input)
    )
    arn = started["executionArn"]
    if not args.wait:
        if args.json:
            emit_json(
                {
                    "execution": name,
                    "execution_arn": arn,
                    "kind": machine.kind,
                    "instance": execution_input["instance"],
                    "started": iso_time(started.get("startDate")),
                }
            )
        else:
            print(f"Started {machine.kind} of {execution_input['instance']}: execution {name}")
            print(f"  follow it with: bitbucket-backup status {name}")
        return OK
    if not args.json:
        print(f"Started {machine.kind} of {execution_input['instance']}: execution {name}", file=sys.stderr)
    try:
        record = follow(aws, machine, arn, args.poll_interval)
    except KeyboardInterrupt:
        print(f"\nstopped following; the execution goes on: bitbucket-backup status {name}", file=sys.stderr)
        return INTERRUPTED
    if args.json:
        emit_json(record)
    else:
        print_result(record)
    return OK if record["status"] == "SUCCEEDED" and not record["skipped"] else FAILED


def cmd_drill(aws: Aws, args: argparse.Namespace) -> int:
    config = aws.instance_config(args.instance)
    if config.drill is None:
        raise CliError(
            FAILED,
            f"instance '{config.name}' has no restore drill: add `drill` (schedule, host_instance_id) to its "
            "configuration in cdk.json and deploy",
        )
    return _start(aws, aws.machine_for(DRILL, config.name), {"instance": config.name}, args)


def cmd_backup(aws: Aws, args: argparse.Namespace) -> int:
    config = aws.instance_config(args.instance)  # an unknown instance ends here, before anything starts
    return _start(aws, aws.machine_for(BACKUP, config.name), {"instance": config.name}, args)


def cmd_restore(aws: Aws, args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from functions.models.restore import RestoreInput

    config = aws.instance_config(args.instance)
    if args.backup_id is None:
        # As Atlassian's diy-restore script does without an argument: the backups it could restore, and nothing else.
        restorable = [row for row in catalog(aws, config) if row["status"] == "complete"]
        if args.json:
            emit_json({"backups": restorable})
        else:
            print(f"Restorable backups of {config.name} (give one as BACKUP_ID):")
            print_catalog(restorable)
        return USAGE
    execution_input = {
        "instance": config.name,
        "backup_id": args.backup_id,
        "target": restore_target(aws, config, args),
        "keep_on_failure": args.keep_on_failure,
    }
    try:
        RestoreInput.model_validate(execution_input)
    except ValidationError as error:
        raise CliError(USAGE, restore_problem(error)) from None
    known = {row["backup_id"]: row for row in catalog(aws, config)}
    if args.backup_id not in known:
        complete = [b for b, row in known.items() if row["status"] == "complete"][:5]
        available = f"available: {', '.join(complete)}" if complete else "there is no complete backup of it"
        raise CliError(NOT_FOUND, f"no backup '{args.backup_id}' of instance '{config.name}'; {available}")
    # Everything else (complete, every part present, target names free) the state machine checks before it acts.
    return _start(aws, aws.machine_for(RESTORE, config.name), execution_input, args)


def cmd_status(aws: Aws, args: argparse.Namespace) -> int:
    if args.execution and re.fullmatch(BACKUP_ID, args.execution):
        args.backup_id, args.execution = args.execution, None  # the executions that made, restored or drilled it
    if args.follow and not args.execution:
        raise CliError(USAGE, "--follow needs an EXECUTION (its name or ARN)")
    if args.follow:
        return _follow_lines(aws, args)
    if args.execution:
        machine, described = find_execution(aws, args.execution)
        record = execution_record(aws, machine, described, History(aws, described["executionArn"]).update())
        if args.json:
            emit_json(record)
            return OK
        instance = f" of {record['instance']}" if record["instance"] else ""
        print(f"Execution  {record['execution']}  ({record['kind']}{instance})")
        print(f"Status     {record['status']}  {record['progress']}%  {record['current_state'] or ''}".rstrip())
        print(f"Backup id  {record['backup_id'] or '-'}")
        print(f"Started    {when_text(record['started'])}")
        print(f"Stopped    {when_text(record['stopped'])}")
        if record["status"] != "RUNNING":
            print()
            print_result(record)
        return OK
    records = _recent(aws, args)
    if args.json:
        emit_json({"executions": records})
        return OK
    if not records:
        print("no executions" + (" match" if _filtered(args) else ""))
        return OK
    rows = []
    for r in records:
        state = f"{r['progress']}% {r['current_state']}" if r["status"] == "RUNNING" else (r["failed_step"] or "")
        window = f"{r['lock_window_s']:.1f} s" if r["lock_window_s"] is not None else "-"
        duration = f"{r['duration_s']:.0f} s" if r["duration_s"] is not None else "-"
        rows.append(
            [
                r["execution"],
                r["kind"],
                r["instance"] or "-",
                r["backup_id"] or "-",
                _status(r),
                when_text(r["started"]),
                duration,
                window,
                state,
            ]
        )
    print_table(rows, ["EXECUTION", "KIND", "INSTANCE", "BACKUP ID", "STATUS", "STARTED", "TOOK", "LOCKED", "STEP"])
    return OK


def cmd_logs(aws: Aws, args: argparse.Namespace) -> int:
    return _follow_lines(aws, args)


def _follow_lines(aws: Aws, args: argparse.Namespace) -> int:
    """`status EXECUTION --follow` (and `logs`): the execution's steps as they finish and its functions' seed
    lines as they come, in the order they happened, each with the time since the start; then its result."""
    machine, described = find_execution(aws, args.execution)
    arn = described["executionArn"]
    history = History(aws, arn)
    seeds = seed_lines(aws, described)
    shown, printed = 0, []
    sfn = aws.client("stepfunctions")
    while True:
        events = history.update()
        running = described["status"] == "RUNNING"
        steps_ = timed_timeline(events, machine.kind)
        batch = steps_[shown:] + seeds.read_timed(events, time.time(), final=not running)
        shown = len(steps_)
        for _, line in sorted(batch, key=lambda b: b[0]):
            printed.append(line)
            if not args.json:
                print(line, flush=True)
        if not running:
            break
        time.sleep(args.poll_interval)
        described = sfn.describe_execution(executionArn=arn)
    record = execution_record(aws, machine, described, history.update())
    if args.json:
        emit_json(record | {"timeline": timeline(history.ordered(), machine.kind), "lines": printed})
    else:
        print()
        print_result(record)
    return OK


def _status(record: dict[str, Any]) -> str:
    return "SKIPPED" if record["skipped"] else str(record["status"])


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.instance or args.state or args.kind or getattr(args, "backup_id", None))


# How many executions `status` looks at, per state machine, to find --limit that match its filters.
SCAN_PER_MACHINE = 200


def _recent(aws: Aws, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The newest executions of the stack's state machines that match the filters, newest first, at most --limit."""
    if not aws.machines():
        raise CliError(NOT_FOUND, f"no state machines of stack {aws.stack_name} in {aws.region_name}")
    machines = [m for m in aws.machines() if not args.kind or m.kind == args.kind]
    if args.instance:
        aws.instance_config(args.instance)  # an unknown instance is named as such, not "no executions"
        machines = [m for m in machines if m.instances is None or args.instance in m.instances]
    sfn = aws.client("stepfunctions")
    # The API filters by status; SKIPPED runs are SUCCEEDED ones that did nothing.
    api_status = {"SKIPPED": "SUCCEEDED"}.get(args.state or "", args.state)
    listed: list[tuple[StateMachine, dict[str, Any]]] = []
    for machine in machines:
        request: dict[str, Any] = {"stateMachineArn": machine.arn}
        if api_status:
            request["statusFilter"] = api_status
        scan = args.limit if not _filtered(args) else SCAN_PER_MACHINE
        for page in sfn.get_paginator("list_executions").paginate(**request, PaginationConfig={"MaxItems": scan}):
            listed += [(machine, execution) for execution in page["executions"]]
    listed.sort(key=lambda item: item[1]["startDate"], reverse=True)
    records: list[dict[str, Any]] = []
    for machine, execution in listed:
        if len(records) >= args.limit:
            break
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        record = execution_record(aws, machine, described, History(aws, execution["executionArn"]).update())
        if args.instance and record["instance"] != args.instance:
            continue
        if args.state and _status(record) != args.state:
            continue
        if getattr(args, "backup_id", None) and record["backup_id"] != args.backup_id:
            continue
        records.append(record)
    return records


def cmd_cancel(aws: Aws, args: argparse.Namespace) -> int:
    machine, described = find_execution(aws, args.execution)
    name = described["executionArn"].rsplit(":", 1)[-1]
    if described["status"] != "RUNNING":
        raise CliError(FAILED, f"execution {name} is {described['status']}, not running: nothing to cancel")
    sfn = aws.client("stepfunctions")
    sfn.stop_execution(
        executionArn=described["executionArn"],
        error="Cancelled",
        cause="cancelled by the operator with `bitbucket-backup cancel`",
    )
    # AWS answers once the execution is ABORTED; an emulator may take a moment, or let a last step finish first.
    deadline = time.monotonic() + 10
    while (after := sfn.describe_execution(executionArn=described["executionArn"]))["status"] == "RUNNING":
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    status = str(after["status"])
    if status == "ABORTED":
        note = after_stop(machine.kind, described["executionArn"])
    elif status == "RUNNING":
        note = f"the stop was requested and the execution is still stopping: bitbucket-backup status {name}"
    else:
        note = f"the execution ended {status} before the stop took effect"
    if args.json:
        emit_json(
            {
                "execution": name,
                "execution_arn": described["executionArn"],
                "kind": machine.kind,
                "status": status,
                "stopped": iso_time(after.get("stopDate")),
                "note": note,
            }
        )
    elif status in ("ABORTED", "RUNNING"):
        print(f"Stopped {machine.kind} execution {name}.")
        print(f"  {note}")
    else:
        print(f"Could not stop {machine.kind} execution {name}: {note}.")
    return OK if status in ("ABORTED", "RUNNING") else FAILED


UNLOCK_EXIT = {"unlocked": OK, "not-locked": OK, "not-ours": FAILED, "running": FAILED, "failed": FAILED}


def cmd_unlock(aws: Aws, args: argparse.Namespace) -> int:
    config = aws.instance_config(args.instance)
    function = aws.unlock_function(config.name)
    # The function reads the token and talks to Bitbucket: neither reaches this machine.
    answer = aws.client("lambda").invoke(FunctionName=function, Payload=json.dumps({"instance": config.name}).encode())
    payload = json.loads(answer["Payload"].read() or b"{}")
    if "FunctionError" in answer or not isinstance(payload, dict) or "outcome" not in payload:
        cause = payload.get("errorMessage", "no answer") if isinstance(payload, dict) else "no answer"
        raise CliError(FAILED, f"the unlock of '{config.name}' failed: {cause}")
    outcome = str(payload["outcome"])
    if args.json:
        emit_json({"instance": config.name, **payload})
    else:
        print(f"{config.name}: {payload.get('message', outcome)}")
        for action in payload.get("actions") or []:
            print(f"  {action}")
    return UNLOCK_EXIT.get(outcome, FAILED)
