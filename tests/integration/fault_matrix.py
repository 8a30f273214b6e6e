"""The fault matrix: every injected fault, what it does, and what must come of it.

Each entry is one test (tests/integration/test_fault_matrix.py) and one row of docs/fault-matrix.md, which is
generated from this list (`python -m tests.integration.fault_matrix > docs/fault-matrix.md`) and checked
against it by a test, so the table cannot drift from what is tested.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

# Outcomes, each with the invariants the test asserts (see test_fault_matrix.py).
SUCCEEDS = "succeeds"
NEVER_LOCKED = "fails before the lock; nobody's lock touched"
FAILS_UNLOCKED = "fails; unlocked, task cancelled"
FAILS_AFTER_100 = "fails after the copy; unlocked"
UNCONFIRMED = "lock unconfirmed; loud notification with manual steps"
ABORTED = "aborted; the safety net unlocks"
SKIPPED = "skipped quietly; the running backup succeeds"
FAILS_NEVER_LOCKED = "fails; nothing was locked, the run's snapshots removed"

# A zero-downtime instance (Data Center 4.8+): Bitbucket must see no request but the version check.
ZERO_DOWNTIME = ("instance_overrides", {"zero_downtime": True})

HTTP_TIMEOUT_S = 1.5  # the matrix's Bitbucket client timeout; generous so a loaded CI machine never hits it by chance


@dataclass(frozen=True)
class Fault:
    id: str
    area: str
    what: str
    outcome: str
    step: str | None = None  # where it fails
    inject: Callable[[Any], contextlib.AbstractContextManager[None]] | None = None
    world: tuple[tuple[str, Any], ...] = ()  # world_factory arguments
    timing: tuple[tuple[str, Any], ...] = ()  # instance timing overrides
    scenario: str = "backup"  # backup | stop-locked | stop-unlocked | overlap


@contextlib.contextmanager
def _nothing(_world: Any) -> Iterator[None]:
    yield


def bitbucket(endpoint: str, kind: str, *, times: int | None = None, after_lock: bool = False) -> Callable[..., Any]:
    """A simulator fault on one endpoint; `after_lock` arms it only once the lock is taken (the validate step
    polls the same endpoint before the lock)."""
    spec: dict[str, Any] = {
        "500": {"status": 500},
        "503": {"status": 503},
        "timeout": {"delay": HTTP_TIMEOUT_S + 0.5},
        "drop": {"drop": True},
        "401": {"status": 401},
        "403": {"status": 403},
        "404": {"status": 404},
        "409": {"status": 409},
        "html": {"body": "<html><body><h1>502 Bad Gateway</h1></body></html>"},
        "truncated": {"body": '{"unlockToken": "0476ad3f'},
    }[kind]

    @contextlib.contextmanager
    def inject(w: Any) -> Iterator[None]:
        if after_lock:
            w.sim.inject("lock", before=lambda: w.sim.inject(endpoint, times=times, **spec))
        else:
            w.sim.inject(endpoint, times=times, **spec)
        yield

    return inject


def aws(target: str, method: str, code: str, times: int = 1) -> Callable[..., Any]:
    @contextlib.contextmanager
    def inject(w: Any) -> Iterator[None]:
        import importlib

        from tests.integration.conftest import fail_backend

        module, _, cls = target.rpartition(".")
        backend = getattr(importlib.import_module(module), cls)
        error_module = "moto.ec2.exceptions" if ".ec2." in target else "moto.rds.exceptions"
        error_cls = "EC2ClientError" if ".ec2." in target else "RDSClientError"
        error = getattr(importlib.import_module(error_module), error_cls)(code, f"injected {code}")
        with fail_backend(backend, method, error, times=times):
            yield

    return inject


def snapshot_ends(state: str, kind: str) -> Callable[..., Any]:
    @contextlib.contextmanager
    def inject(w: Any) -> Iterator[None]:
        if kind == "ebs":
            from moto.ec2.models.elastic_block_store import EBSBackend as backend

            method = "create_snapshots"
        else:
            from moto.rds.models import RDSBackend as backend  # type: ignore[assignment]

            method = "create_db_snapshot"
        original = getattr(backend, method)

        def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
            made = original(self, *args, **kwargs)
            for snapshot in made if isinstance(made, list) else [made]:
                snapshot.status = state
            return made

        with mock.patch.object(backend, method, broken):
            yield

    return inject


def host(fault: str) -> Callable[..., Any]:
    @contextlib.contextmanager
    def inject(w: Any) -> Iterator[None]:
        home = dict(w.r.instance_config["home"])
        if fault == "Failed":
            home["mount_points"] = ["/nonexistent/bitbucket-home"]
        else:
            mount = w.r.host.root / "home"
            mount.mkdir(exist_ok=True)
            home["mount_points"] = [str(mount)]
            w.r.host.faults[w.r.resources["ec2_instance"]] = fault
        w.r.configure(home=home)
        yield

    return inject


def lambda_error(function_prefix: str, error_type: str) -> Callable[..., Any]:
    @contextlib.contextmanager
    def inject(w: Any) -> Iterator[None]:
        class Injected(Exception):
            pass

        Injected.__name__ = error_type
        # The function's logical id: the prefix and CDK's 8-digit hash (its role and log group have longer ids).
        name = next(n for n in w.r.resolver.refs if re.fullmatch(rf"{function_prefix}[0-9A-F]{{8}}", n))
        w.r.lambda_faults[name] = [Injected("Task timed out after 60.00 seconds")]
        yield

    return inject


def ui_cancel(on: str, nth: int = 1) -> Callable[..., Any]:
    """An administrator presses "Cancel backup" in Bitbucket's UI just before the nth request to `on`."""

    @contextlib.contextmanager
    def inject(w: Any) -> Iterator[None]:
        seen = {"n": 0}

        def maybe_cancel() -> None:
            seen["n"] += 1
            if seen["n"] == nth and w.sim.task and w.sim.task["state"] == "RUNNING":
                w.sim.cancel_from_ui()

        w.sim.inject("lock", before=lambda: w.sim.inject(on, times=None, before=maybe_cancel))
        yield

    return inject


def _bitbucket_faults() -> list[Fault]:
    kinds = ["500", "503", "timeout", "drop", "401", "403", "404", "409", "html", "truncated"]
    faults: list[Fault] = []
    for kind in kinds:
        outcome = UNCONFIRMED if kind == "timeout" else NEVER_LOCKED
        faults.append(
            Fault(f"lock-{kind}", "Bitbucket", f"lock answers {kind}", outcome, "lock", bitbucket("lock", kind))
        )
    for kind in kinds:
        faults.append(
            Fault(
                f"start-{kind}",
                "Bitbucket",
                f"start backup answers {kind}",
                FAILS_UNLOCKED,
                "start-backup",
                bitbucket("start", kind),
            )
        )
    for kind in kinds:
        faults.append(
            Fault(
                f"poll-{kind}",
                "Bitbucket",
                f"every drain poll answers {kind}",
                FAILS_UNLOCKED,
                "wait-drained",
                bitbucket("poll", kind, after_lock=True),
            )
        )
    for kind in kinds:
        faults.append(
            Fault(
                f"progress-{kind}",
                "Bitbucket",
                f"progress reports answer {kind}",
                FAILS_UNLOCKED,
                "copy",
                bitbucket("progress", kind, after_lock=True),
            )
        )
    for kind in kinds:
        # Transient server trouble on unlock is retried, and a 401 re-reads the (maybe rotated) secret and retries;
        # any other refusal fails the step and the failure path unlocks.
        transient = kind in ("500", "503", "timeout", "drop")
        recovers = transient or kind == "401"
        faults.append(
            Fault(
                f"unlock-{kind}",
                "Bitbucket",
                f"unlock answers {kind} " + ("for three attempts" if transient else "once"),
                SUCCEEDS if recovers else FAILS_AFTER_100,
                None if recovers else "unlock",
                bitbucket("unlock", kind, times=3 if transient else 1),
            )
        )
    for kind in kinds:
        faults.append(
            Fault(
                f"cancel-{kind}",
                "Bitbucket",
                f"never drains, and cancel answers {kind}",
                FAILS_UNLOCKED,
                "wait-drained",
                bitbucket("cancel", kind),
                world=(("drain_seconds", None),),
                timing=(("drain_timeout_seconds", 1),),
            )
        )
    faults.append(
        Fault(
            "poll-503-transient",
            "Bitbucket",
            "two drain polls answer 503",
            SUCCEEDS,
            None,
            bitbucket("poll", "503", times=2, after_lock=True),
        )
    )
    faults.append(
        Fault(
            "never-drains",
            "Bitbucket",
            "never reaches DRAINED",
            FAILS_UNLOCKED,
            "wait-drained",
            None,
            world=(("drain_seconds", None),),
            timing=(("drain_timeout_seconds", 1),),
        )
    )
    return faults


def _aws_faults() -> list[Fault]:
    ebs, rds = "moto.ec2.models.elastic_block_store.EBSBackend", "moto.rds.models.RDSBackend"
    return [
        Fault(
            "ebs-throttled",
            "AWS",
            "CreateSnapshots throttled once (RequestLimitExceeded)",
            SUCCEEDS,
            None,
            aws(ebs, "create_snapshots", "RequestLimitExceeded"),
        ),
        Fault(
            "ebs-rate-exceeded",
            "AWS",
            "SnapshotCreationPerVolumeRateExceeded once",
            SUCCEEDS,
            None,
            aws(ebs, "create_snapshots", "SnapshotCreationPerVolumeRateExceeded"),
        ),
        Fault(
            "ebs-error",
            "AWS",
            "CreateSnapshots fails (InternalError)",
            FAILS_UNLOCKED,
            "copy",
            aws(ebs, "create_snapshots", "InternalError"),
        ),
        Fault(
            "rds-throttled",
            "AWS",
            "CreateDBSnapshot throttled once",
            SUCCEEDS,
            None,
            aws(rds, "create_db_snapshot", "Throttling"),
        ),
        Fault(
            "rds-error",
            "AWS",
            "CreateDBSnapshot fails (InvalidDBInstanceState)",
            FAILS_UNLOCKED,
            "copy",
            aws(rds, "create_db_snapshot", "InvalidDBInstanceState"),
        ),
        Fault(
            "ebs-ends-in-error",
            "AWS",
            "an EBS snapshot ends in 'error' after the unlock",
            FAILS_AFTER_100,
            "wait-snapshots",
            snapshot_ends("error", "ebs"),
        ),
        Fault(
            "rds-ends-failed",
            "AWS",
            "the RDS snapshot ends 'failed' after the unlock",
            FAILS_AFTER_100,
            "wait-snapshots",
            snapshot_ends("failed", "rds"),
        ),
        Fault("ssm-failed", "AWS", "the flush command on the host fails", FAILS_UNLOCKED, "copy", host("Failed")),
        Fault(
            "ssm-timed-out", "AWS", "the flush command on the host times out", FAILS_UNLOCKED, "copy", host("TimedOut")
        ),
        Fault(
            "lambda-timeout-poll",
            "AWS",
            "the drain-poll Lambda times out (Lambda.Unknown)",
            FAILS_UNLOCKED,
            "wait-drained",
            lambda_error("PollDrain", "Lambda.Unknown"),
        ),
        Fault(
            "ec2-describe-denied",
            "AWS",
            "DescribeInstances denied in validate",
            NEVER_LOCKED,
            "validate",
            aws(
                "moto.ec2.models.instances.InstanceBackend",
                "get_reservations_by_instance_ids",
                "UnauthorizedOperation",
                times=99,
            ),
        ),
    ]


def _operation_faults() -> list[Fault]:
    return [
        Fault(
            "stop-while-locked",
            "operations",
            "StopExecution while waiting for DRAINED",
            ABORTED,
            scenario="stop-locked",
            world=(("drain_seconds", 30),),
            timing=(("poll_interval_seconds", 1), ("drain_poll_slice_seconds", 1)),
        ),
        Fault(
            "stop-after-unlock",
            "operations",
            "StopExecution while waiting for snapshots",
            ABORTED,
            scenario="stop-unlocked",
        ),
        Fault(
            "two-at-once",
            "operations",
            "a second execution while one runs",
            SKIPPED,
            scenario="overlap",
            world=(("drain_seconds", 1.5),),
        ),
        Fault(
            "ui-cancel-draining",
            "operations",
            "Cancel backup pressed in the UI while draining",
            FAILS_UNLOCKED,
            "wait-drained",
            ui_cancel("poll"),
            world=(("drain_seconds", 30),),
        ),
        Fault(
            "ui-cancel-copying",
            "operations",
            "Cancel backup pressed in the UI during the copy",
            FAILS_UNLOCKED,
            "copy",
            ui_cancel("progress", 1),
        ),
        Fault(
            "ui-cancel-before-100",
            "operations",
            "Cancel backup pressed in the UI just before 100 %",
            FAILS_UNLOCKED,
            "unlock",  # the unlock step reports 100 first
            ui_cancel("progress", 3),
        ),
        Fault(
            "locked-by-someone",
            "operations",
            "Bitbucket already locked by another tool",
            NEVER_LOCKED,
            "lock",
            scenario="locked-by-other",
        ),
    ]


def _zero_downtime_faults() -> list[Fault]:
    return [
        Fault(
            "zdt-bitbucket-4.7",
            "zero downtime",
            "Bitbucket 4.7.1 answers the version check",
            NEVER_LOCKED,
            "validate",
            world=(ZERO_DOWNTIME, ("version", "4.7.1")),
        ),
        Fault(
            "zdt-version-drop",
            "zero downtime",
            "the version check's connection is dropped",
            NEVER_LOCKED,
            "validate",
            bitbucket("properties", "drop"),
            world=(ZERO_DOWNTIME,),
        ),
        Fault(
            "zdt-version-html",
            "zero downtime",
            "a proxy answers the version check with an HTML page",
            NEVER_LOCKED,
            "validate",
            bitbucket("properties", "html"),
            world=(ZERO_DOWNTIME,),
        ),
        Fault(
            "zdt-ebs-error",
            "zero downtime",
            "CreateSnapshots fails (InternalError)",
            FAILS_NEVER_LOCKED,
            "copy",
            aws("moto.ec2.models.elastic_block_store.EBSBackend", "create_snapshots", "InternalError"),
            world=(ZERO_DOWNTIME,),
        ),
        Fault(
            "zdt-stop",
            "zero downtime",
            "StopExecution while waiting for snapshots",
            ABORTED,
            scenario="stop-unlocked",
            world=(ZERO_DOWNTIME,),
        ),
    ]


FAULTS: list[Fault] = [*_bitbucket_faults(), *_aws_faults(), *_operation_faults(), *_zero_downtime_faults()]


def render_markdown() -> str:
    lines = [
        "# Fault matrix",
        "",
        "Generated from `tests/integration/fault_matrix.py` (`make fault-matrix`); a test fails if this file",
        "and the list differ. Every row is one test, `tests/integration/test_fault_matrix.py::test_fault[ID]`,",
        "run against the synthesized state machine in the rehearsal runtime. Every failing row also asserts:",
        "Bitbucket ends unlocked (unless the lock was never ours), no progress 100 on a run that failed under",
        "the lock, exactly one notification, nothing of the run left marked complete, the earlier backup intact,",
        "and no password or token in any log line, history event, output or message.",
        "",
        f"{len(FAULTS)} faults.",
        "",
        "| ID | area | fault | expected outcome | failing step |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| `{f.id}` | {f.area} | {f.what} | {f.outcome} | {f.step or '-'} |" for f in FAULTS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
