"""The latency model: what an AWS call costs in a region, added to moto's answers so that figures measured over moto
(the lock window above all) estimate production's rather than this machine's loopback.

Off unless a rehearsal turns it on (`make bench` does; `python -m rehearsal --latency`). When on, every AWS call of a
Lambda worker or a host's AWS CLI waits for its service's round trip before moto answers (rehearsal/aws_endpoint.py),
and every Lambda invocation from the state machine waits for the Task state's dispatch (rehearsal/lambda_runtime.py).
The harness's own calls (in-process moto) never wait: they are not part of what production does.

Where AWS publishes a figure it is the source, quoted below; where it publishes none the figure is an estimate of an
in-region API round trip over a reused TLS connection (as boto3 keeps them), and the table says so.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

# Seconds per call, by the service name a request is signed for.
LATENCY_DEFAULTS_S: dict[str, float] = {
    # Published: "single-digit millisecond performance at any scale" (Amazon DynamoDB Developer Guide, "What is
    # Amazon DynamoDB?"); the top of that range.
    "dynamodb": 0.009,
    # Published: small requests (under 512 KB) have "median latencies ... often in the tens of milliseconds" (AWS
    # whitepaper "Best Practices Design Patterns: Optimizing Amazon S3 Performance", section "Timeouts and Retries
    # for Latency-Sensitive Applications").
    "s3": 0.030,
    # Estimates (AWS publishes no per-call figure for these control-plane APIs).
    "secretsmanager": 0.030,
    "ssm": 0.030,
    "sns": 0.030,
    "sts": 0.030,
    "kms": 0.015,
    "monitoring": 0.030,  # CloudWatch
    "logs": 0.030,
    "events": 0.030,
    "scheduler": 0.030,
    "states": 0.030,
    "lambda": 0.030,
    # EC2's and RDS's Query APIs are the slowest control planes we call; CreateSnapshot and CreateDBSnapshot answer
    # once the snapshot is pending, not when it completes.
    "ec2": 0.080,
    "rds": 0.080,
}
# Estimate: a Task state's dispatch to Lambda (the Step Functions transition plus the synchronous Invoke of a warm
# function) before the handler starts; AWS publishes no figure.
TASK_DISPATCH_S = 0.050
UNKNOWN_SERVICE_S = 0.030

_SIGNED_FOR = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/")


@dataclass
class LatencyModel:
    per_service_s: dict[str, float] = field(default_factory=lambda: dict(LATENCY_DEFAULTS_S))
    task_dispatch_s: float = TASK_DISPATCH_S
    unknown_s: float = UNKNOWN_SERVICE_S
    calls: dict[str, int] = field(default_factory=dict)  # per service, the calls that waited
    # (time.monotonic(), service) of every call, when asked for: what was called when (the lock-window tests).
    log: list[tuple[float, str]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def recorder(cls) -> LatencyModel:
        """No latency at all, only the log of the calls."""
        return cls(per_service_s={}, task_dispatch_s=0.0, unknown_s=0.0, log=[])

    def of(self, service: str) -> float:
        return self.per_service_s.get(service, self.unknown_s)

    def count(self, service: str) -> None:
        with self._lock:
            self.calls[service] = self.calls.get(service, 0) + 1
            if self.log is not None:
                self.log.append((time.monotonic(), service))


_active: LatencyModel | None = None


def active() -> LatencyModel | None:
    """The model in force, or None (the default: moto answers as fast as it can)."""
    return _active


@contextlib.contextmanager
def applied(model: LatencyModel | None) -> Iterator[None]:
    """Put `model` in force for the block (one emulated world at a time per process)."""
    global _active
    previous, _active = _active, model
    try:
        yield
    finally:
        _active = previous


def service_of(authorization: str) -> str:
    """The service a SigV4 request is signed for ('' when unsigned)."""
    match = _SIGNED_FOR.search(authorization)
    return match.group(1) if match else ""
