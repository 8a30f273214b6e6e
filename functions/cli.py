"""`bitbucket-backup`: the operator command line of a deployed Bitbucket DIY backup stack (or of the local runtime).

    bitbucket-backup list [--instance NAME]          the catalog: backups found by their tags
    bitbucket-backup backup --instance NAME [--wait]  start a backup (and follow it to the end)
    bitbucket-backup status [EXECUTION]              one execution, or the recent ones of both state machines
    bitbucket-backup restore BACKUP_ID --instance NAME --target-db-id NEW [--availability-zone AZ] [--wait]
    bitbucket-backup cancel EXECUTION                stop an execution (the safety net unlocks Bitbucket)
    bitbucket-backup unlock NAME                     end a lock this tool took and could not release

It talks to AWS with the usual credential chain (`--profile`, `--region` or the AWS_* variables), finds the state
machines from the stack's outputs (`--stack-name`), and the instances from their SSM configuration parameters. With
`--endpoint-url` it talks to the local runtime (`python -m rehearsal serve`) instead. It never reads the Bitbucket
credentials secret nor an unlock token: `unlock` invokes the backup's safety-net function, which does.

Exit codes:
  0    ok (with --wait: the backup or restore succeeded)
  1    the backup or restore failed, was stopped or skipped, or the command could not do what it was asked
  2    usage: bad arguments or options
  3    not found: unknown instance, backup, execution or state machine
  4    AWS error or no credentials (the AWS error code is named)
  130  interrupted (Ctrl-C); an execution being followed goes on
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TextIO
from urllib.parse import urlparse

from functions.models import steps

if TYPE_CHECKING:
    from functions.models.config import InstanceConfig

OK, FAILED, USAGE, NOT_FOUND, AWS_ERROR, INTERRUPTED = 0, 1, 2, 3, 4, 130
DEFAULT_STACK = "BitbucketDiyBackup"
BACKUP, RESTORE = "backup", "restore"
OUTPUT_KEYS = {BACKUP: "BackupStateMachine", RESTORE: "RestoreStateMachine"}
# The stack's output naming its archive bucket, and the bucket's construct id (stacks/backup_stack.py), which
# CloudFormation puts in the bucket's name after the stack's: "<stack>-archives<hash>-<random>".
ARCHIVE_OUTPUT, ARCHIVE_CONSTRUCT = "ArchiveBucket", "Archives"
NOT_FOUND_CODES = {"ExecutionDoesNotExist", "StateMachineDoesNotExist", "ParameterNotFound", "InvalidArn"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class CliError(Exception):
    """Ends the command with one line on stderr and this exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- AWS access ----------------------------------------------------------------------------------------------------


@dataclass
class StateMachine:
    kind: str  # backup | restore
    arn: str
    instances: list[str] | None = None  # from the stack output's description; None when not known

    @property
    def name(self) -> str:
        return self.arn.rsplit(":", 1)[-1]

    def execution_arn(self, name: str) -> str:
        return self.arn.replace(":stateMachine:", ":execution:", 1) + ":" + name


@dataclass
class Aws:
    """One boto3 session for the whole command: the operator's profile, region and (local runtime) endpoint."""

    region: str | None
    profile: str | None
    endpoint_url: str | None
    stack_name: str
    _session: Any = None
    _clients: dict[str, Any] = field(default_factory=dict)
    _machines: list[StateMachine] | None = None
    _outputs: list[dict[str, Any]] | None = None
    _definitions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def config_prefix(self) -> str:
        # As the stack writes them (stacks/backup_stack.py): one parameter per instance under this prefix.
        return f"/bitbucket-diy-backup/{self.stack_name}/instances"

    def session(self) -> Any:
        if self._session is None:
            import boto3
            import botocore.session

            core = botocore.session.Session(profile=self.profile)
            if self._local() and core.get_credentials() is None:
                # The local runtime knows these keys (an administrator of the emulated account): never real ones.
                core.set_credentials("testing", "testing")
            self._session = boto3.session.Session(botocore_session=core, region_name=self.region)
        return self._session

    def _local(self) -> bool:
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        return bool(endpoint) and urlparse(endpoint).hostname in LOOPBACK

    def client(self, service: str, region: str | None = None) -> Any:
        if service not in self._clients:
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=60)
            self._clients[service] = self.session().client(service, endpoint_url=self.endpoint_url, config=config)
        return self._clients[service]

    @property
    def region_name(self) -> str:
        return str(self.session().region_name or "?")

    # --- the state machines ------------------------------------------------------------------------------------------

    def machines(self) -> list[StateMachine]:
        """From the stack outputs when the stack exists; else (the local runtime, a renamed stack) by name."""
        if self._machines is None:
            found = self._from_stack()
            if found is None:
                found = self._by_name()
            self._machines = found
        return self._machines

    def _stack_outputs(self) -> list[dict[str, Any]] | None:
        """The stack's outputs; None when there is no such stack here (or no permission to read it)."""
        from botocore.exceptions import ClientError

        if self._outputs is None:
            try:
                stacks = self.client("cloudformation").describe_stacks(StackName=self.stack_name)["Stacks"]
            except ClientError:
                return None
            self._outputs = list(stacks[0].get("Outputs", [])) if stacks else []
        return self._outputs

    def archive_bucket(self) -> str | None:
        """The stack's archive bucket (its output); without the stack's outputs (the local runtime), the one bucket
        named as CloudFormation names the stack's."""
        outputs = self._stack_outputs()
        if outputs is not None:
            return next((o["OutputValue"] for o in outputs if o.get("OutputKey") == ARCHIVE_OUTPUT), None)
        prefix = f"{self.stack_name}-{ARCHIVE_CONSTRUCT}".lower()
        names = [b["Name"] for b in self.client("s3").list_buckets().get("Buckets", [])]
        found = [n for n in names if n.startswith(prefix)]
        return found[0] if len(found) == 1 else None

    def _from_stack(self) -> list[StateMachine] | None:
        outputs = self._stack_outputs()
        if outputs is None:
            return None  # look the state machines up by name
        found = []
        for output in outputs:
            for kind, key in OUTPUT_KEYS.items():
                if re.fullmatch(key + r"\d*", output.get("OutputKey", "")):
                    described = output.get("Description", "")
                    names = described.split(":", 1)[1] if ":" in described else ""
                    instances = [n.strip() for n in names.split(",") if n.strip()] or None
                    found.append(StateMachine(kind, output["OutputValue"], instances))
        return found or None

    def _by_name(self) -> list[StateMachine]:
        found = []
        for page in self.client("stepfunctions").get_paginator("list_state_machines").paginate():
            for machine in page["stateMachines"]:
                for kind, key in OUTPUT_KEYS.items():
                    if key in machine["name"]:
                        found.append(StateMachine(kind, machine["stateMachineArn"]))
        return found

    def machine_for(self, kind: str, instance: str) -> StateMachine:
        candidates = [m for m in self.machines() if m.kind == kind]
        if not candidates:
            raise CliError(
                NOT_FOUND,
                f"no {kind} state machine found (stack {self.stack_name} in {self.region_name}): is the stack "
                "deployed there? (--stack-name, --region, --endpoint-url)",
            )
        serving = [m for m in candidates if m.instances and instance in m.instances]
        if len(serving) == 1 or len(candidates) == 1:
            return (serving or candidates)[0]
        names = ", ".join(m.name for m in candidates)
        raise CliError(FAILED, f"several {kind} state machines ({names}) and none says it serves '{instance}'")

    def unlock_function(self, instance: str) -> str:
        """The function that answers `unlock` for `instance` (the backup's safety net): from the stack's outputs
        (their descriptions end in the instances it serves); without them (the local runtime), the one there is."""

        def serves(described: str) -> bool:
            if steps.OPERATOR_UNLOCK_FOR not in described:
                return False
            served = described.split(steps.OPERATOR_UNLOCK_FOR, 1)[1]
            return instance in [n.strip() for n in served.split(",")]

        outputs = self._stack_outputs()
        if outputs is not None:
            found = [o["OutputValue"] for o in outputs if serves(o.get("Description", ""))]
        else:  # no outputs to say which serves whom: the one backup safety net there is (its description: its id)
            found = [
                f["FunctionName"]
                for page in self.client("lambda").get_paginator("list_functions").paginate()
                for f in page["Functions"]
                if re.search(r": SafetyNet\d*$", f.get("Description", ""))
            ]
        if len(found) != 1:
            raise CliError(
                NOT_FOUND,
                f"no safety-net function to unlock '{instance}' (stack {self.stack_name} in {self.region_name}): "
                "is a stack of this version deployed there? (--stack-name, --region, --endpoint-url)",
            )
        return str(found[0])

    def definition(self, machine_arn: str) -> dict[str, Any]:
        if machine_arn not in self._definitions:
            described = self.client("stepfunctions").describe_state_machine(stateMachineArn=machine_arn)
            self._definitions[machine_arn] = dict(json.loads(described["definition"]))
        return self._definitions[machine_arn]

    # --- instances --------------------------------------------------------------------------------------------------

    def instance_names(self) -> list[str]:
        names = []
        paginator = self.client("ssm").get_paginator("get_parameters_by_path")
        for page in paginator.paginate(Path=self.config_prefix, Recursive=True):
            names += [p["Name"].rsplit("/", 1)[-1] for p in page["Parameters"]]
        return sorted(names)

    def instance_config(self, name: str) -> InstanceConfig:
        from botocore.exceptions import ClientError

        from functions.clients.aws import error_code
        from functions.models.config import ConfigError, parse_instance_config

        try:
            raw = self.client("ssm").get_parameter(Name=f"{self.config_prefix}/{name}")["Parameter"]["Value"]
        except ClientError as error:
            if error_code(error) != "ParameterNotFound":
                raise
            known = self.instance_names()
            configured = f"configured: {', '.join(known)}" if known else "none is configured here"
            raise CliError(
                NOT_FOUND, f"no instance '{name}' in stack {self.stack_name} ({self.region_name}); {configured}"
            ) from None
        try:
            return parse_instance_config(json.loads(raw))
        except (ValueError, ConfigError) as error:
            first = str(error).splitlines()[-1]
            raise CliError(FAILED, f"the stored configuration of instance '{name}' is invalid: {first}") from None

    @contextmanager
    def catalog_clients(self, config: InstanceConfig) -> Iterator[None]:
        """The catalog code (functions/strategies) asks functions.clients.aws for its clients: give it ours."""
        from functions.clients.aws import clients_from
        from functions.strategies import acting_for, deployment_id_for

        # The stack's deployment id (its account, region and name): only its artifacts are listed.
        account = str(self.client("sts").get_caller_identity()["Account"])
        deployment = deployment_id_for(account, self.region_name, self.stack_name)
        archives = self.archive_bucket() if config.uses_archive else None
        with clients_from(lambda service, region: self.client(service)), acting_for(deployment, archives):
            yield


# --- the catalog -------------------------------------------------------------------------------------------------


def catalog(aws: Aws, config: InstanceConfig) -> list[dict[str, Any]]:
    """This instance's backups, newest first, one entry per backup id, from the tagged snapshots."""
    from functions.catalog import backup_status, backup_time, by_backup

    with aws.catalog_clients(config):
        grouped = by_backup(config)
    rows: list[dict[str, Any]] = []
    for backup_id, artifacts in sorted(grouped.items(), reverse=True):
        parts = [p for p in config.parts if any(a.part == p for a in artifacts)]
        missing = [p for p in config.parts if p not in parts]
        status = backup_status(config, artifacts)
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


def _pruned(row: dict[str, Any]) -> str:
    after = row.get("prune_after_backups")
    if row["status"] != "complete":
        return "-"
    if after is None:
        return "never (keep_backups 0)"
    return f"after {after} more backup{'s' if after != 1 else ''}"


# --- executions ----------------------------------------------------------------------------------------------------


def expected_path(definition: dict[str, Any]) -> list[str]:
    """The states a successful execution passes through: the longest path from StartAt to a success, following
    Next and Choice edges (not Catch), each state once. Parallel branches count as their Parallel state."""
    states: dict[str, dict[str, Any]] = definition.get("States", {})
    best: list[str] = []

    def successors(state: dict[str, Any]) -> list[str]:
        found = [c["Next"] for c in state.get("Choices", []) if "Next" in c]
        found += [state[k] for k in ("Next", "Default") if k in state]
        return found

    def walk(name: str, path: list[str]) -> None:
        nonlocal best
        state = states.get(name)
        if state is None or name in path:
            return
        path = [*path, name]
        if state.get("Type") == "Succeed" or state.get("End"):
            if len(path) > len(best):
                best = path
            return
        for following in successors(state):
            walk(following, path)

    if "StartAt" in definition:
        walk(definition["StartAt"], [])
    return best


class History:
    """An execution's events, read incrementally (newest first, until the events already seen)."""

    def __init__(self, aws: Aws, execution_arn: str) -> None:
        self.aws, self.arn = aws, execution_arn
        self.events: dict[int, dict[str, Any]] = {}

    def update(self) -> list[dict[str, Any]]:
        sfn = self.aws.client("stepfunctions")
        known = max(self.events, default=0)
        kwargs: dict[str, Any] = {"executionArn": self.arn, "reverseOrder": True, "maxResults": 200}
        while True:
            page = sfn.get_execution_history(**kwargs)
            for event in page["events"]:
                self.events[int(event["id"])] = event
            if not page.get("nextToken") or any(int(e["id"]) <= known for e in page["events"]):
                break
            kwargs["nextToken"] = page["nextToken"]
        return self.ordered()

    def ordered(self) -> list[dict[str, Any]]:
        return [self.events[i] for i in sorted(self.events)]


def entered(events: list[dict[str, Any]]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


def state_output(events: list[dict[str, Any]], state: str) -> dict[str, Any] | None:
    for event in events:
        details = event.get("stateExitedEventDetails")
        if details and details.get("name") == state and details.get("output"):
            try:
                value = json.loads(details["output"])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def progress(path: list[str], events: list[dict[str, Any]], status: str) -> int:
    if status == "SUCCEEDED":
        return 100
    seen = set(entered(events))
    return int(100 * sum(1 for s in path if s in seen) / len(path)) if path else 0


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


def execution_record(
    aws: Aws, machine: StateMachine, described: dict[str, Any], events: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the command line says about one execution (also its --json form)."""
    try:
        given = json.loads(described.get("input") or "{}")
    except ValueError:
        given = {}
    given = given if isinstance(given, dict) else {}
    states = entered(events)
    output = None
    if described.get("output"):
        try:
            output = json.loads(described["output"])
        except ValueError:
            output = described["output"]
    if machine.kind == BACKUP:
        backup_id = ((state_output(events, steps.BACKUP.validate.state) or {}).get("run") or {}).get("backup_id")
    else:
        backup_id = given.get("backup_id")
    failed = [label for label in map(steps.failed_label, states) if label]
    status = str(described["status"])
    return {
        "execution": described["executionArn"].rsplit(":", 1)[-1],
        "execution_arn": described["executionArn"],
        "kind": machine.kind,
        "instance": given.get("instance"),
        "backup_id": backup_id,
        "status": status,
        "skipped": any(s.startswith("Skipped") for s in states),
        "started": _iso(described.get("startDate")),
        "stopped": _iso(described.get("stopDate")),
        "progress": progress(expected_path(aws.definition(machine.arn)), events, status),
        "current_state": states[-1] if states else None,
        "failed_step": failed[0] if failed else None,
        "error": described.get("error"),
        "cause": described.get("cause"),
        "output": output,
    }


def find_execution(aws: Aws, ref: str) -> tuple[StateMachine, dict[str, Any]]:
    """An execution of this stack's state machines, by ARN or by name."""
    from botocore.exceptions import ClientError

    from functions.clients.aws import error_code

    sfn = aws.client("stepfunctions")
    machines = aws.machines()
    if ref.startswith("arn:"):
        candidates = [ref]
    else:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", ref):
            raise CliError(USAGE, f"'{ref}' is neither an execution ARN nor an execution name")
        candidates = [m.execution_arn(ref) for m in machines]
    for arn in candidates:
        try:
            described = dict(sfn.describe_execution(executionArn=arn))
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                continue
            raise
        machine_arn = described.get("stateMachineArn", "")
        machine = next((m for m in machines if m.arn == machine_arn), None)
        if machine is None:
            raise CliError(NOT_FOUND, f"execution {ref} is not one of stack {aws.stack_name}'s state machines")
        return machine, described
    raise CliError(NOT_FOUND, f"no execution '{ref}' of the backup or restore state machine in {aws.region_name}")


class ProgressBar:
    """On a terminal: one line redrawn in place. Elsewhere (a log, a pipe): one line per step."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream, self.label = stream, label
        self.tty = stream.isatty()
        self.last: tuple[int, str | None] | None = None

    def update(self, percent: int, state: str | None) -> None:
        if state is None or (percent, state) == self.last:
            return
        self.last = (percent, state)
        if self.tty:
            done = percent * 30 // 100
            bar = "#" * done + "." * (30 - done)
            self.stream.write(f"\r{self.label} [{bar}] {percent:3d}%  {(state or '')[:40]:<40}")
        else:
            self.stream.write(f"{self.label} {percent:3d}%  {state or ''}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.last is not None:
            self.stream.write("\n")
            self.stream.flush()


def follow(aws: Aws, machine: StateMachine, execution_arn: str, poll_seconds: float) -> dict[str, Any]:
    """Follows an execution to its end with a progress bar on stderr; returns its record."""
    sfn = aws.client("stepfunctions")
    path = expected_path(aws.definition(machine.arn))
    history = History(aws, execution_arn)
    bar = ProgressBar(sys.stderr, machine.kind)
    try:
        while True:
            described = sfn.describe_execution(executionArn=execution_arn)
            events = history.update()
            states = entered(events)
            bar.update(progress(path, events, described["status"]), states[-1] if states else None)
            if described["status"] != "RUNNING":
                return execution_record(aws, machine, described, events)
            time.sleep(poll_seconds)
    finally:
        bar.close()


# --- printing ------------------------------------------------------------------------------------------------------


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _when(value: str | None) -> str:
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
            [row["instance"], row["backup_id"], _when(row["time"]), row["status"], verified, _pruned(row), parts, where]
        )
    _table(table, ["INSTANCE", "BACKUP ID", "TIME", "STATUS", "DRILL", "PRUNED", "PARTS", "WHERE"])


def print_result(record: dict[str, Any]) -> None:
    """The end of an execution, the way `make demo` prints a backup."""
    what = record["backup_id"] or "(no backup id)"
    title = f"Backup {what}" if record["kind"] == BACKUP else f"Restore of {what}"
    status = record["status"]
    if status == "SUCCEEDED" and record["skipped"]:
        print(f"{title}: SKIPPED - another backup of {record['instance']} was in progress; nothing was done")
        return
    if status == "FAILED":
        step = f" at step {record['failed_step']}" if record["failed_step"] else ""
        print(f"{title}: FAILED{step}")
        print(f"  {record['error'] or 'Error'}: {record['cause'] or '(no cause given)'}")
        return
    if status in ("ABORTED", "TIMED_OUT"):
        print(f"{title}: {status}")
        print(f"  {_after_stop(record['kind'], record['execution_arn'])}")
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
    else:
        from functions.restore import created_lines

        for part, text in created_lines(output):
            print(f"  {part}: {text}")
        steps = output.get("next_steps") or []
        if steps:
            print("Next steps:")
            for number, line in enumerate(steps, 1):
                print(f"  {number}. {line}")


def _after_stop(kind: str, execution_arn: str) -> str:
    if kind == BACKUP:
        return (
            "The safety net unlocks Bitbucket if it is still locked, ends the backup task and removes the unfinished "
            "backup; its notification says what it did."
        )
    return (
        "The restore's safety net removes what it created so far (unless keep_on_failure) and notifies; if that "
        "notification says a cleanup failed, look for resources tagged "
        f"bitbucket-backup:restore-execution={execution_arn}."
    )


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


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
                    "started": _iso(started.get("startDate")),
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


def cmd_backup(aws: Aws, args: argparse.Namespace) -> int:
    config = aws.instance_config(args.instance)  # an unknown instance ends here, before anything starts
    return _start(aws, aws.machine_for(BACKUP, config.name), {"instance": config.name}, args)


# Each restore option and the target fields it sets (functions/models/restore.py): an option applies when one of its
# fields is a field the part's strategy takes (its restorer's target_fields, which the state machine checks too).
RESTORE_OPTION_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "target_path": (("home", "path"),),
    "owner": (("home", "owner"),),
    "availability_zone": (("home", "availability_zone"),),
    "attach_to": (("home", "attach_to_instance_id"),),
    "mount": (("home", "mount"),),
    "writer_instance_id": (("database", "writer_instance_id"),),
    "db_instance_class": (("database", "instance_class"),),
    "target_host": (("home", "instance_id"), ("database", "host_instance_id")),
}


def refuse_inapplicable_options(config: InstanceConfig, wanted: list[str], args: argparse.Namespace) -> None:
    """An option this restore would not use is refused, never dropped: it names the option the user wrote."""
    from functions.strategies import restorers_for

    takes = {part: r.target_fields for part, r in restorers_for(config).items()}
    for option, places in RESTORE_OPTION_FIELDS.items():
        if not getattr(args, option, None):
            continue
        if any(part in wanted and field in takes.get(part, frozenset()) for part, field in places):
            continue
        reasons = []
        for part in dict.fromkeys(part for part, _ in places):
            if part not in config.parts:
                reasons.append(f"instance '{config.name}' backs up no {part}")
            elif part not in wanted:
                reasons.append(f"the {part} is not restored (--only {args.only})")
            else:
                strategy = config.home.strategy if part == "home" else config.database.strategy
                reasons.append(f"the {part} of '{config.name}' is backed up by the {strategy} strategy")
        flag = "--" + option.replace("_", "-")
        raise CliError(USAGE, f"{flag} does not apply to this restore: {'; '.join(reasons)}")


def restore_target(aws: Aws, config: InstanceConfig, args: argparse.Namespace) -> dict[str, Any]:
    """The restore state machine's `target` (functions/models/restore.py), from the options."""
    from functions.models.config import EbsHomeConfig

    wanted = [args.only] if args.only else list(config.parts)
    for part in wanted:
        if part not in config.parts:
            raise CliError(USAGE, f"instance '{config.name}' backs up no {part}")
    refuse_inapplicable_options(config, wanted, args)
    target: dict[str, Any] = {}
    if "database" in wanted:
        if not args.target_db_id:
            raise CliError(
                USAGE,
                "give --target-db-id: the NEW database identifier to restore into (or --only home)",
            )
        if config.database.strategy == "amazon-aurora":
            writer = args.writer_instance_id or f"{args.target_db_id}-writer"
            target["database"] = {"cluster_id": args.target_db_id, "writer_instance_id": writer}
        elif config.database.strategy == "postgresql":
            # An archive: the NEW database on the backed-up server, created by pg_restore on a host.
            target["database"] = {"dbname": args.target_db_id}
            if args.target_host:
                target["database"]["host_instance_id"] = args.target_host
        else:
            target["database"] = {"instance_id": args.target_db_id}
            if args.writer_instance_id:  # Aurora's: the state machine answers the mix-up with what to give
                target["database"]["writer_instance_id"] = args.writer_instance_id
        if args.db_instance_class:
            target["database"]["instance_class"] = args.db_instance_class
    elif args.target_db_id:
        raise CliError(USAGE, "--target-db-id is for the database, which --only home leaves out")
    if "home" in wanted and config.home.strategy == "rsync":
        if not args.target_path or args.availability_zone or args.attach_to or args.mount:
            raise CliError(
                USAGE,
                "this instance's home is an archive: give --target-path (an empty directory on the host), not "
                "--availability-zone, --attach-to or --mount",
            )
        target["home"] = {"path": args.target_path}
        if args.target_host:
            target["home"]["instance_id"] = args.target_host
        if args.owner:
            target["home"]["owner"] = args.owner
    elif "home" in wanted:
        home: dict[str, Any] = {}
        if args.attach_to:
            home["attach_to_instance_id"] = args.attach_to
        zone = args.availability_zone
        if not zone and not args.attach_to and isinstance(config.home, EbsHomeConfig):
            zone = _zone_of(aws, config.home.instance_id)
        if zone:
            home["availability_zone"] = zone
        if args.mount:
            home["mount"] = True
        target["home"] = home
    elif args.availability_zone or args.attach_to or args.mount:
        raise CliError(USAGE, "--availability-zone, --attach-to and --mount are for the home, which --only leaves out")
    return target


# The restore target's fields as the user gave them: the flags of `restore` (per part of the target).
RESTORE_FLAGS: dict[tuple[str, str], str] = {
    ("database", "instance_id"): "--target-db-id",
    ("database", "cluster_id"): "--target-db-id",
    ("database", "dbname"): "--target-db-id",
    ("database", "writer_instance_id"): "--writer-instance-id",
    ("database", "instance_class"): "--db-instance-class",
    ("database", "host_instance_id"): "--target-host",
    ("home", "availability_zone"): "--availability-zone",
    ("home", "attach_to_instance_id"): "--attach-to",
    ("home", "mount"): "--mount",
    ("home", "path"): "--target-path",
    ("home", "instance_id"): "--target-host",
    ("home", "owner"): "--owner",
}


def restore_problem(error: Any) -> str:
    """The first problem of a restore input's ValidationError, in the words of the command line: the flags the
    user typed, not the fields of the execution input."""
    problem = error.errors()[0]
    loc = [str(p) for p in problem["loc"]]
    message = str(problem["msg"]).removeprefix("Value error, ")
    part = loc[1] if len(loc) > 1 and loc[0] == "target" else ""
    flags = {field: flag for (of, field), flag in RESTORE_FLAGS.items() if of == part}
    if flags:
        words = re.compile(r"\b(" + "|".join(sorted(flags, key=len, reverse=True)) + r")\b")
        message = words.sub(lambda m: flags[m.group(1)], message)
    flag = flags.get(loc[2]) if len(loc) > 2 else None
    if flag is None and loc[:1] == ["backup_id"]:
        flag = "BACKUP_ID"
    return f"{flag}: {message}" if flag else message


def _zone_of(aws: Aws, instance_id: str) -> str:
    from botocore.exceptions import ClientError

    try:
        reservations = aws.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
        return str(reservations[0]["Instances"][0]["Placement"]["AvailabilityZone"])
    except (ClientError, IndexError, KeyError):
        raise CliError(
            USAGE,
            f"give --availability-zone (or --attach-to): the original host {instance_id} cannot be described",
        ) from None


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
        print(f"Started    {_when(record['started'])}")
        print(f"Stopped    {_when(record['stopped'])}")
        if record["status"] != "RUNNING":
            print()
            print_result(record)
        return OK
    machines = aws.machines()
    if not machines:
        raise CliError(NOT_FOUND, f"no backup or restore state machine of stack {aws.stack_name} in {aws.region_name}")
    sfn = aws.client("stepfunctions")
    listed: list[tuple[StateMachine, dict[str, Any]]] = []
    for machine in machines:
        for execution in sfn.list_executions(stateMachineArn=machine.arn, maxResults=args.limit)["executions"]:
            listed.append((machine, execution))
    listed.sort(key=lambda item: item[1]["startDate"], reverse=True)
    records = []
    for machine, execution in listed[: args.limit]:
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        records.append(execution_record(aws, machine, described, History(aws, execution["executionArn"]).update()))
    if args.json:
        emit_json({"executions": records})
        return OK
    if not records:
        print("no executions")
        return OK
    rows = []
    for r in records:
        state = f"{r['progress']}% {r['current_state']}" if r["status"] == "RUNNING" else (r["failed_step"] or "")
        status = "SKIPPED" if r["skipped"] else r["status"]
        rows.append(
            [r["execution"], r["kind"], r["instance"] or "-", r["backup_id"] or "-", status, _when(r["started"]), state]
        )
    _table(rows, ["EXECUTION", "KIND", "INSTANCE", "BACKUP ID", "STATUS", "STARTED", "STEP"])
    return OK


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
        note = _after_stop(machine.kind, described["executionArn"])
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
                "stopped": _iso(after.get("stopDate")),
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


# --- arguments -----------------------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The global options, accepted before or after the command (after it, they override)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("AWS and output")
    group.add_argument("--region", default=default(None), help="AWS region (default: the AWS CLI's)")
    group.add_argument("--profile", default=default(None), help="AWS named profile")
    group.add_argument(
        "--endpoint-url",
        default=default(None),
        metavar="URL",
        help="AWS endpoint, e.g. the local runtime's http://127.0.0.1:PORT (python -m rehearsal serve)",
    )
    group.add_argument(
        "--stack-name",
        default=default(DEFAULT_STACK),
        help=f"the deployed stack, whose outputs name the state machines (default {DEFAULT_STACK})",
    )
    group.add_argument(
        "--json", action="store_true", default=default(False), help="machine-readable output (JSON) on stdout"
    )


def _waiting(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="follow the execution to its end (progress on stderr), print the result"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between status polls with --wait (default 2)",
    )


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="bitbucket-backup",
        description="Operate the Bitbucket DIY backup stack: list backups, start and follow backups and restores.",
        epilog=doc[doc.index("Exit codes:") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _common(sub, suppress=True)
        return sub

    listing = command("list", "the backup catalog: id, time, status, parts, sizes, where")
    listing.add_argument("--instance", metavar="NAME", help="only this instance (default: every configured one)")
    listing.set_defaults(run=cmd_list)

    backup = command("backup", "start a backup of an instance")
    backup.add_argument("--instance", required=True, metavar="NAME", help="the instance to back up")
    _waiting(backup)
    backup.set_defaults(run=cmd_backup)

    status = command("status", "one execution in detail, or the recent executions of both state machines")
    status.add_argument("execution", nargs="?", metavar="EXECUTION", help="execution name or ARN")
    status.add_argument(
        "--limit", type=int, default=10, metavar="N", help="how many recent executions to list (default 10)"
    )
    status.set_defaults(run=cmd_status)

    restore = command("restore", "restore a complete backup into NEW resources (never over existing ones)")
    restore.add_argument(
        "backup_id",
        metavar="BACKUP_ID",
        nargs="?",
        help="e.g. prod-20261123-082818; without it, the restorable backups of --instance are listed",
    )
    restore.add_argument("--instance", required=True, metavar="NAME", help="the instance the backup is of")
    restore.add_argument(
        "--target-db-id",
        metavar="NEW",
        help="the NEW DB instance identifier (Aurora: the new cluster; postgresql: the new database name) to "
        "restore the database into",
    )
    restore.add_argument(
        "--writer-instance-id", metavar="NEW", help="Aurora: the new writer instance (default NEW-writer)"
    )
    restore.add_argument("--db-instance-class", metavar="CLASS", help="default: the original's")
    restore.add_argument(
        "--availability-zone",
        metavar="AZ",
        help="where to create the home volumes (default: the zone of the original Bitbucket host)",
    )
    restore.add_argument(
        "--attach-to", metavar="INSTANCE_ID", help="attach the new home volumes to this STOPPED EC2 instance (i-…)"
    )
    restore.add_argument("--mount", action="store_true", help="also mount them there through SSM (needs --attach-to)")
    restore.add_argument(
        "--target-path",
        metavar="DIR",
        help="rsync strategy: the EMPTY (or missing) directory on the host to extract the home archive into",
    )
    restore.add_argument(
        "--target-host",
        metavar="INSTANCE_ID",
        help="rsync / postgresql: the host (i-…) that extracts or runs pg_restore (default: the backed-up one; "
        "another one must be tagged bitbucket-backup:restore-target=<instance>)",
    )
    restore.add_argument("--owner", metavar="USER", help="rsync: owner of the restored home (default: home.owner)")
    restore.add_argument(
        "--only", choices=["database", "home"], help="restore only this part (default: every part of the backup)"
    )
    restore.add_argument(
        "--keep-on-failure", action="store_true", help="keep what a failed restore created, for inspection"
    )
    _waiting(restore)
    restore.set_defaults(run=cmd_restore)

    cancel = command("cancel", "stop a running execution (a backup's safety net then unlocks Bitbucket)")
    cancel.add_argument("execution", metavar="EXECUTION", help="execution name or ARN")
    cancel.set_defaults(run=cmd_cancel)

    unlock = command(
        "unlock",
        "end a maintenance lock this tool took and could not release (with the token it stored; it never guesses)",
    )
    unlock.add_argument("instance", metavar="INSTANCE", help="the instance whose Bitbucket to unlock")
    unlock.set_defaults(run=cmd_unlock)
    return parser


# --- main ----------------------------------------------------------------------------------------------------------


def _fail(code: int, message: str) -> NoReturn:
    raise CliError(code, message)


def run(args: argparse.Namespace) -> int:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    from functions.clients.aws import error_code

    if getattr(args, "poll_interval", 1) <= 0 or getattr(args, "limit", 1) < 1:
        raise CliError(USAGE, "--poll-interval must be more than 0 and --limit at least 1")
    aws = Aws(region=args.region, profile=args.profile, endpoint_url=args.endpoint_url, stack_name=args.stack_name)
    command: Callable[[Aws, argparse.Namespace], int] = args.run
    try:
        return command(aws, args)
    except ClientError as error:
        code = error_code(error)
        message = error.response.get("Error", {}).get("Message", "")
        operation = getattr(error, "operation_name", "")
        _fail(NOT_FOUND if code in NOT_FOUND_CODES else AWS_ERROR, f"AWS error {code} ({operation}): {message}")
    except (NoCredentialsError, PartialCredentialsError):
        _fail(
            AWS_ERROR,
            "no AWS credentials: configure them (aws configure, AWS_PROFILE or --profile), or give --endpoint-url "
            "for the local runtime",
        )
    except ProfileNotFound as error:
        _fail(AWS_ERROR, f"{error}")
    except NoRegionError:
        _fail(AWS_ERROR, "no AWS region: give --region or set AWS_REGION")
    except EndpointConnectionError as error:
        _fail(AWS_ERROR, f"cannot reach AWS: {error}")
    except BotoCoreError as error:
        _fail(AWS_ERROR, f"AWS: {error}")


def _error(code: int, message: str, as_json: bool) -> int:
    """An error as the user asked for output: one JSON object on stdout with --json, else one line on stderr."""
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}))
    else:
        print(f"bitbucket-backup: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv  # known before parsing, so that a usage error is JSON too
    parser = build_parser()
    try:
        if as_json:
            with redirect_stderr(io.StringIO()) as usage:
                args = parser.parse_args(argv)
        else:
            args = parser.parse_args(argv)
    except SystemExit as ended:  # argparse: --help (0) or a usage error (2, its message on stderr)
        code = ended.code if isinstance(ended.code, int) else USAGE
        if as_json and code != OK:
            said = usage.getvalue().strip().splitlines()
            return _error(code, said[-1].split("error: ", 1)[-1] if said else "invalid arguments", True)
        return code
    try:
        return run(args)
    except CliError as error:
        return _error(error.code, str(error), as_json)
    except KeyboardInterrupt:
        return _error(INTERRUPTED, "interrupted", as_json)
    except Exception as error:  # a bug: still one line, the traceback only when asked for
        if os.environ.get("BITBUCKET_BACKUP_DEBUG"):
            raise
        return _error(
            FAILED,
            f"unexpected {type(error).__name__}: {error} (BITBUCKET_BACKUP_DEBUG=1 shows the traceback)",
            as_json,
        )


if __name__ == "__main__":
    sys.exit(main())
