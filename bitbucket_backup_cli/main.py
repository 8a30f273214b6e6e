"""`bitbucket-backup`: the operator command line of a deployed Bitbucket DIY backup stack (or of the local runtime).

    bitbucket-backup list [--instance NAME]          the catalog: backups found by their tags
    bitbucket-backup backup --instance NAME [--wait]  start a backup (and follow it to the end)
    bitbucket-backup status [EXECUTION | BACKUP_ID] [--instance NAME] [--state STATE] [--kind KIND]
                                                     one execution, or the recent ones (backups, restores, drills)
    bitbucket-backup restore BACKUP_ID --instance NAME --target-db-id NEW [--availability-zone AZ] [--wait]
    bitbucket-backup drill --instance NAME [--wait]   start a restore drill of the newest complete backup
    bitbucket-backup logs EXECUTION                  its steps and its functions' seed lines, as they happen
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
import sys
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr
from typing import TYPE_CHECKING, Any, NoReturn

from bitbucket_backup_cli.aws import Aws
from bitbucket_backup_cli.base import (
    AWS_ERROR,
    BACKUP,
    DEFAULT_STACK,
    DRILL,
    FAILED,
    INTERRUPTED,
    NOT_FOUND,
    NOT_FOUND_CODES,
    OK,
    RESTORE,
    STATES,
    USAGE,
    CliError,
)
from bitbucket_backup_cli.commands import (
    cmd_backup,
    cmd_cancel,
    cmd_drill,
    cmd_list,
    cmd_logs,
    cmd_restore,
    cmd_status,
    cmd_unlock,
)

if TYPE_CHECKING:
    pass


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

    drill = command("drill", "start a restore drill: restore the newest complete backup, check it, remove it")
    drill.add_argument("--instance", required=True, metavar="NAME", help="the instance to drill (it needs `drill`)")
    _waiting(drill)
    drill.set_defaults(run=cmd_drill)

    status = command("status", "one execution in detail, or the recent backups, restores and drills")
    status.add_argument(
        "execution",
        nargs="?",
        metavar="EXECUTION|BACKUP_ID",
        help="execution name or ARN; or a backup id: the executions that made, restored or drilled it",
    )
    status.add_argument(
        "--limit", type=int, default=10, metavar="N", help="how many recent executions to list (default 10)"
    )
    status.add_argument("--instance", metavar="NAME", help="only this instance's executions")
    status.add_argument("--state", choices=STATES, type=str.upper, help="only executions in this state")
    status.add_argument("--kind", choices=(BACKUP, RESTORE, DRILL), help="only backups, restores or drills")
    status.add_argument(
        "--follow",
        action="store_true",
        help="with EXECUTION: its steps as they finish and its functions' seed lines (`locked with …`) as they come, "
        "with the time since the start and, for a backup, how long Bitbucket has been locked; to its end",
    )
    status.add_argument(
        "--poll-interval", type=float, default=2.0, metavar="SECONDS", help="seconds between polls with --follow"
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
        help="the NEW DB instance identifier (Aurora: the new cluster; postgresql, mysql: the new database name) to "
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
        help="rsync / postgresql / mysql: the host (i-…) that extracts or restores the dump (default: the backed-up "
        "one; another one must be tagged bitbucket-backup:restore-target=<instance>)",
    )
    restore.add_argument("--owner", metavar="USER", help="rsync: owner of the restored home (default: home.owner)")
    restore.add_argument(
        "--only",
        choices=["database", "home", "mesh", "search"],
        help="restore only this part (mesh: only the nodes given with --mesh-node; search: only the search index; "
        "default: the home and the database of the backup, the nodes given with --mesh-node, and the search index "
        "with --search-index)",
    )
    restore.add_argument(
        "--search-index",
        action="store_true",
        help="also restore the search index's snapshot, into NEW indices named restored-<backup id>-<index> (never "
        "over the live ones, without their aliases)",
    )
    restore.add_argument(
        "--search-index-prefix",
        metavar="PREFIX",
        help="the restored indices' names start with PREFIX instead (implies --search-index)",
    )
    restore.add_argument(
        "--mesh-node",
        action="append",
        default=[],
        metavar="NAME=WHERE",
        help="also restore Mesh node NAME: WHERE is an availability zone (a node on EBS: new volumes there) or an "
        "EMPTY directory on the node's host (a node copied by rsync); repeat for each node",
    )
    restore.add_argument(
        "--keep-on-failure", action="store_true", help="keep what a failed restore created, for inspection"
    )
    _waiting(restore)
    restore.set_defaults(run=cmd_restore)

    logs = command(
        "logs",
        "an execution's steps and its functions' seed lines (from CloudWatch Logs), with the time since the start "
        "and the lock clock; a running one is followed to its end (the same as status EXECUTION --follow)",
    )
    logs.add_argument("execution", metavar="EXECUTION", help="execution name or ARN")
    logs.add_argument("--poll-interval", type=float, default=2.0, metavar="SECONDS", help="seconds between polls")
    logs.set_defaults(run=cmd_logs)

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
