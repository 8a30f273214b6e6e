"""`python -m rehearsal serve`: the local runtime as an AWS endpoint on 127.0.0.1, for the `bitbucket-backup` command
line (or the AWS CLI) to talk to over HTTP.

It is the same world as `python -m rehearsal` (rehearsal.runtime.Rehearsal: the synthesized stack deployed into moto,
the functions in Lambda workers, SSM Run Command run by a local shell, the Bitbucket simulator), served by moto's
ThreadedMotoServer in the same process. Requests to the server reach the same moto backends as the in-process mock,
so the Rehearsal's class-wide patches (Lambda invoke, SSM send_command, CreateSnapshots) apply to them too: a
StartExecution sent over HTTP runs the real handlers. What EventBridge would do with an execution's status change
(the safety net) a background thread does here: it watches the executions and delivers each end once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import threading
from types import TracebackType
from typing import Any

from rehearsal.cli import add_world_options, check_world_options, world_settings
from rehearsal.fake_account import REGION
from rehearsal.runtime import Rehearsal, local_simulator

HOST = "127.0.0.1"  # never anything else: the endpoint knows fixed local administrator keys (rehearsal/iam.py)


class StatusChangeDelivery:
    """The EventBridge rules of the stack (the safety net), for executions started over HTTP: every execution that
    ends is delivered once, as Rehearsal.wait does for the executions it waits for. Use one or the other."""

    def __init__(self, rehearsal: Rehearsal, interval: float = 0.1) -> None:
        self.rehearsal = rehearsal
        self.interval = interval
        self.delivered: set[str] = set()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-change-delivery", daemon=True)

    def start(self) -> StatusChangeDelivery:
        # Executions that ended before the watch began were delivered (or not) by whoever ran them.
        self.delivered.update(arn for arn, status in self._executions() if status != "RUNNING")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _executions(self) -> list[tuple[str, str]]:
        sfn = self.rehearsal.client("stepfunctions")
        found = []
        for machine in self.rehearsal.state_machines.values():
            for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=machine):
                found += [(e["executionArn"], e["status"]) for e in page["executions"]]
        return found

    def deliver_ended(self) -> None:
        sfn = self.rehearsal.client("stepfunctions")
        for arn, status in self._executions():
            if status == "RUNNING" or arn in self.delivered:
                continue
            self.delivered.add(arn)
            self.rehearsal._deliver_status_change(sfn.describe_execution(executionArn=arn))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.deliver_ended()
            except Exception as error:  # keep watching; say what went wrong once
                text = f"{type(error).__name__}: {error}"
                if text not in self.errors:
                    self.errors.append(text)
                    print(f"status change delivery failed: {text}", file=sys.stderr, flush=True)


class LocalEndpoint:
    """A Rehearsal (already entered) served over HTTP on 127.0.0.1, plus the status change delivery."""

    def __init__(self, rehearsal: Rehearsal, port: int = 0) -> None:
        self.rehearsal = rehearsal
        self.port = port
        self.deliveries = StatusChangeDelivery(rehearsal)
        self._server: Any = None

    @property
    def url(self) -> str:
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def __enter__(self) -> LocalEndpoint:
        from moto.server import ThreadedMotoServer

        if self.port:
            # The server binds in its own thread, which would hang on a port in use: find out here instead.
            with socket.socket() as probe:
                probe.bind((HOST, self.port))
        # Werkzeug would log every request on stderr, moto's interpreter every failed execution (the command line
        # shows those).
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        self._server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)
        self._server.start()
        self.deliveries.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.deliveries.stop()
        self._server.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rehearsal serve",
        description="Serve the local runtime (the synthesized stack in moto, the functions in Lambda workers, a "
        "Bitbucket simulator) as an AWS endpoint on 127.0.0.1 for the bitbucket-backup command line, until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    add_world_options(parser)
    parser.add_argument("--quiet", action="store_true", help="do not print Bitbucket's progress lines")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    check_world_options(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.port:
        try:  # before the seconds of setting up the world
            with socket.socket() as probe:
                probe.bind((HOST, args.port))
        except OSError as error:
            print(f"error: cannot listen on {HOST}:{args.port}: {error.strerror or error}", file=sys.stderr)
            return 1
    with contextlib.ExitStack() as stack:
        simulator = stack.enter_context(
            local_simulator(drain_seconds=args.drain_seconds, version=args.bitbucket_version)
        )
        print(f"Bitbucket simulator on {simulator.url} (drains in {args.drain_seconds:g} s)")
        print("Synthesizing the CDK app and deploying it into moto …", flush=True)
        rehearsal = stack.enter_context(Rehearsal(simulator.url, **world_settings(args)))
        try:
            endpoint = stack.enter_context(LocalEndpoint(rehearsal, args.port))
        except OSError as error:
            print(f"error: cannot listen on {HOST}:{args.port}: {error.strerror or error}", file=sys.stderr)
            return 1
        if not args.quiet:
            rehearsal.logs.listener = lambda record: print(record["seed"], flush=True) if "seed" in record else None
        cli = f"bitbucket-backup --endpoint-url {endpoint.url} --region {REGION}"
        print(f"\nLocal AWS endpoint: {endpoint.url}  (region {REGION}, stack BitbucketDiyBackup, instance 'demo')")
        print("Try, in another shell (.venv/bin/ holds bitbucket-backup):")
        print(f"  {cli} backup --instance demo --wait")
        print(f"  {cli} list")
        print(f"  {cli} status")
        restore = []
        if args.home_strategy in (
            "rsync",
            "btrfs",
        ):  # extracted on the local host, into a directory that must not exist yet
            restore.append(f"--target-path {rehearsal.host.root / 'restored-home'}")
        if args.db_strategy == "postgresql":
            restore.append("--target-db-id demo_restored")
        elif args.db_strategy == "mysql":
            restore.append("--target-db-id bb_demo_restored")
        if restore:
            print(f"  {cli} restore BACKUP_ID --instance demo {' '.join(restore)} --wait")
        print("Ctrl-C stops it; everything lives in memory.", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass
        print("\nstopped", flush=True)
    return 0
