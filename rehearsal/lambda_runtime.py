"""The rehearsal's Lambda runtime, standing in for AWS Lambda behind moto's Docker-less Lambda backend.

By default each function runs as Lambda runs it: in its own worker process (rehearsal/lambda_worker.py) started on
its first invocation (a cold start, timed and recorded), reused while warm, and given a sibling when an invocation
arrives while it is busy. The worker imports the handler from the bundled asset (rehearsal/lambda_asset.py) with
the runtime's boto3 beside it and nothing else, gets the function's environment from the template, calls AWS over
HTTP at moto's server (rehearsal/aws_endpoint.py) with its own role's credentials, and is killed when it overruns
the function's timeout. A worker stays warm across the emulated worlds of one process (as Lambda keeps an
environment between invocations), so that a test process pays each function's cold start once.

`REHEARSAL_LAMBDA=inline` runs the handlers in this process instead (same roles, same environment): for debugging
a handler with a debugger, never for a figure.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import importlib
import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functions.clients.aws import clients_from, credentials_client
from functions.handlers._step import is_warm_up
from rehearsal import latency
from rehearsal.fake_account import ACCOUNT, REGION
from rehearsal.iam import RoleCredentials, lambda_credentials
from rehearsal.lambda_worker import LOG_END  # what the worker writes after each invocation's log

ROOT_HANDLERS = Path(__file__).resolve().parent.parent / "functions" / "handlers"
WORKER = Path(__file__).resolve().parent / "lambda_worker.py"
# Lambda's init phase has 10 s; an init that takes longer is retried within the invocation, under the function's
# timeout, so a function gets at most max(10 s, its timeout) to start.
INIT_LIMIT_S = 10.0
# How long an answered invocation waits for the rest of its log lines (read by another thread): bounded, and long
# enough for a reader starved of CPU on a loaded machine.
LOG_END_WAIT_S = 30.0
# How a worker's interpreter starts: isolated, without site-packages, and -B, since Lambda's /var/task is read-only:
# it runs the asset's bytecode or compiles in memory, and never writes any (-I ignores PYTHONDONTWRITEBYTECODE).
INTERPRETER = (sys.executable, "-I", "-S", "-B")
# Step Functions reports an unhandled Lambda error, a timeout included, as Lambda.Unknown (AWS Step Functions
# developer guide, "Handle Lambda service exceptions").
TIMEOUT_ERROR = "Lambda.Unknown"

# The environment every function sees on top of its own template environment.
LAMBDA_OVERRIDES = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@dataclass
class LambdaContext:
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class Invocation:
    """One invocation; cold when it started an execution environment (init_s is that start's cost); started and
    ended are wall-clock times (time.time()), comparable with the lock and unlock of a run."""

    function: str
    handler: str
    event: Any
    result: Any = None
    error: str | None = None
    seconds: float = 0.0
    cold: bool = False
    init_s: float = 0.0
    started: float = 0.0
    ended: float = 0.0


class _Lines:
    """Text written in pieces, as whole lines: what a piece completes (empty lines dropped)."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, text: str) -> list[str]:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        return [line for line in complete if line]


class LogCapture(io.TextIOBase):
    """Collects every log line the handlers write (Powertools JSON), and passes seed lines to a listener."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.listener: Callable[[dict[str, Any]], None] | None = None
        self._lock = threading.Lock()
        self._split = _Lines()

    def write(self, text: str) -> int:
        with self._lock:
            complete = self._split.feed(text)
            self.lines.extend(complete)
        for line in complete:
            if self.listener and line.startswith("{"):
                with contextlib.suppress(ValueError):
                    self.listener(json.loads(line))
        return len(text)

    def records(self) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found


class FunctionLog(io.TextIOBase):
    """One invocation's log: every line goes on to the world's capture, and is kept with its time, so that it can
    be delivered to the function's CloudWatch Logs group afterwards, as Lambda delivers what a function prints."""

    def __init__(self, capture: LogCapture) -> None:
        self.capture = capture
        self.events: list[dict[str, Any]] = []
        self._split = _Lines()

    def write(self, text: str) -> int:
        self.capture.write(text)
        now = int(time.time() * 1000)
        self.events.extend({"timestamp": now, "message": line} for line in self._split.feed(text))
        return len(text)


def deliver_logs(fn: Any, stream: str, events: list[dict[str, Any]]) -> None:
    """Into moto's CloudWatch Logs, where Lambda writes a function's lines: its LoggingConfig's group (the stack
    gives each function its own; /aws/lambda/NAME by default, created on first use as Lambda creates it), one stream
    per execution environment. Lambda's service does this, not the function's role, so it goes to the backend
    directly (no IAM, no latency)."""
    if not events:
        return
    from moto.logs.models import logs_backends

    backend = logs_backends[ACCOUNT][REGION]
    group = str((getattr(fn, "logging_config", None) or {}).get("LogGroup") or f"/aws/lambda/{fn.function_name}")
    with _delivery_lock:
        if group not in backend.groups:
            backend.create_log_group(group, {})
        backend.ensure_log_stream(group, stream)
        backend.put_log_events(group, stream, events)


_delivery_lock = threading.Lock()
_role_clients: dict[tuple[RoleCredentials, str, str | None], Any] = {}
_role_clients_lock = threading.Lock()


def role_client(credentials: RoleCredentials, service: str, region: str | None) -> Any:
    """One client per role, service and region for the whole process (a role's keys are the same in every world)."""
    key = (credentials, service, region)
    with _role_clients_lock:
        if key not in _role_clients:
            _role_clients[key] = credentials_client(
                service,
                region,
                access_key_id=credentials.access_key_id,
                secret_access_key=credentials.secret_access_key,
                session_token=credentials.session_token,
            )
        return _role_clients[key]


class WorkerFailed(Exception):
    """The execution environment did not start (an init error, or no answer within the init limit)."""

    def __init__(self, error_type: str, message: str, init_s: float) -> None:
        super().__init__(message)
        self.error_type, self.init_s = error_type, init_s


class Worker:
    """One execution environment of one function: a process serving its invocations one at a time."""

    def __init__(self, key: tuple[str, ...], asset: Path, handler: str, env: dict[str, str], limit_s: float) -> None:
        from rehearsal.lambda_asset import runtime_site

        self.key = key
        # Where each invocation's log lines go, in the order of the invocations: a line belongs to the first one
        # whose end the worker has not written yet (a reader that lags never puts a line in a later invocation's log).
        self._sinks: collections.deque[tuple[str, io.TextIOBase]] = collections.deque()
        self._log_lock = threading.Condition()
        # The CloudWatch Logs stream of this execution environment, named as Lambda names it.
        self.stream = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{uuid.uuid4().hex}"
        answers_read, answers_write = os.pipe()
        started = time.monotonic()
        self.process = subprocess.Popen(
            [*INTERPRETER, str(WORKER), str(asset), str(runtime_site()), handler, str(answers_write)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(answers_write,),
            cwd=asset,
            env=env,
            text=True,
        )
        os.close(answers_write)
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read_answers, args=(answers_read,), daemon=True).start()
        threading.Thread(target=self._read_log, daemon=True).start()
        ready = self._answer(limit_s)
        self.init_s = time.monotonic() - started
        if ready is None or not ready.get("ready"):
            self.kill()
            if ready is None:
                raise WorkerFailed("Sandbox.Timedout", f"the function did not start within {limit_s:g} s", self.init_s)
            raise WorkerFailed(str(ready["errorType"]), str(ready["errorMessage"]), self.init_s)

    def _read_answers(self, fd: int) -> None:
        with os.fdopen(fd) as answers:
            for line in answers:
                self._answers.put(json.loads(line))
        self._answers.put(None)

    def _read_log(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(LOG_END):
                ended = line[len(LOG_END) :].strip()
                with self._log_lock:
                    while self._sinks and self._sinks.popleft()[0] != ended:
                        pass
                    self._log_lock.notify_all()
                continue
            with self._log_lock:
                sink = self._sinks[0][1] if self._sinks else None
            if sink is not None:
                sink.write(line)

    def _answer(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self._answers.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def call(self, request: dict[str, Any], timeout: float, log: io.TextIOBase) -> dict[str, Any] | None:
        """The answer, or None when the function did not answer within its timeout (the worker is then killed);
        the invocation's log lines are written to `log`."""
        assert self.process.stdin is not None
        request_id = str(request["request_id"])
        with self._log_lock:
            self._sinks.append((request_id, log))
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except OSError:
            return {"errorType": "Runtime.ExitError", "errorMessage": "the execution environment exited"}
        answer = self._answer(timeout)
        if answer is None:
            exited = self.process.poll() is not None
            self.kill()
            if exited:
                return {"errorType": "Runtime.ExitError", "errorMessage": "the execution environment exited"}
            return None
        # The invocation's log lines are all in its log before its answer is returned (the worker wrote its end
        # before the answer; only a reader starved of CPU makes this wait).
        with self._log_lock:
            # Its end was read once its log is no longer among those waiting for lines.
            self._log_lock.wait_for(lambda: all(r != request_id for r, _ in self._sinks), timeout=LOG_END_WAIT_S)
        return answer

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


class _Pool:
    """The idle execution environments per function, kept for the life of this process."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, ...], list[Worker]] = {}
        self._all: list[Worker] = []
        self._lock = threading.Lock()

    def take(self, key: tuple[str, ...]) -> Worker | None:
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                worker = idle.pop()
                if worker.alive():
                    return worker
            return None

    def add(self, worker: Worker) -> None:
        with self._lock:
            self._all.append(worker)

    def give_back(self, worker: Worker) -> None:
        if worker.alive():
            with self._lock:
                self._idle.setdefault(worker.key, []).append(worker)

    def shutdown(self) -> None:
        with self._lock:
            workers, self._all, self._idle = self._all, [], {}
        for worker in workers:
            worker.kill()


POOL = _Pool()
atexit.register(POOL.shutdown)


def inline_requested() -> bool:
    return os.environ.get("REHEARSAL_LAMBDA", "") == "inline"


class LambdaRuntime:
    """Replaces moto's Docker-less Lambda backend `invoke` with a call of the function's real handler: in a worker
    process from the bundled asset (the default), or in this process (`REHEARSAL_LAMBDA=inline`)."""

    def __init__(
        self,
        logs: LogCapture,
        faults: dict[str, list[Exception]] | None = None,
        overrides: dict[str, str] | None = None,
    ) -> None:
        self.logs = logs
        self.overrides = overrides or {}  # on top of LAMBDA_OVERRIDES
        self.invocations: list[Invocation] = []
        self.faults: dict[str, list[Exception]] = faults if faults is not None else {}
        self._env_lock = threading.Lock()
        self._credentials: dict[str, RoleCredentials] = {}  # per role, for this world's moto
        self.inline = inline_requested()
        self.world = uuid.uuid4().hex  # a warm worker forgets what it read from an earlier world
        self.endpoint = ""  # moto's server, where workers send their AWS calls (set when the world starts)
        self.asset: Path | None = None  # the bundled asset the workers run (set when the world starts)

    def credentials_of(self, role_arn: str) -> RoleCredentials:
        with self._env_lock:
            if role_arn not in self._credentials:
                self._credentials[role_arn] = lambda_credentials(role_arn)
            return self._credentials[role_arn]

    def _clients_of(self, role_arn: str) -> Callable[[str, str | None], Any]:
        credentials = self.credentials_of(role_arn)

        def client(service: str, region: str | None = None) -> Any:
            return role_client(credentials, service, region)

        return client

    def invoke(
        self,
        backend: Any,
        function_name: str,
        qualifier: str | None,
        body: Any,
        headers: Any,
        response_headers: dict[str, str],
    ) -> bytes:
        fn = backend.get_function(function_name, qualifier)
        event = json.loads(body) if body else {}
        record = Invocation(function=fn.function_name, handler=fn.handler, event=event, started=time.time())
        started = time.monotonic()
        model = latency.active()
        if model is not None and model.task_dispatch_s > 0:  # the Task dispatch, at loopback speed in moto
            time.sleep(model.task_dispatch_s)
        injected = self.faults.get(fn.function_name)
        # An injected fault hits the step's work; the warm-up before the lock only loads the code.
        if injected and not is_warm_up(event):
            error = injected.pop(0)
            answer: dict[str, Any] = {"errorType": type(error).__name__, "errorMessage": str(error)}
        elif self.inline:
            answer = self._run_inline(fn, event)
        else:
            answer = self._run_in_worker(fn, event, record)
        if "errorType" in answer:
            record.error = str(answer["errorType"])
            response_headers["x-amz-function-error"] = "Unhandled"
            payload = json.dumps({"errorType": answer["errorType"], "errorMessage": answer["errorMessage"]})
        else:
            record.result = answer["result"]
            payload = json.dumps(record.result)
        record.seconds = time.monotonic() - started
        record.ended = time.time()
        self.invocations.append(record)
        return payload.encode()

    def _environment(self, fn: Any) -> dict[str, str]:
        return {k: str(v) for k, v in {**fn.environment_vars, **LAMBDA_OVERRIDES, **self.overrides}.items()}

    def _run_inline(self, fn: Any, event: Any) -> dict[str, Any]:
        module_name, _, attr = fn.handler.rpartition(".")
        with self._env_lock:
            # Every function shares this process's environment, so setting it for one sets it for all.
            os.environ.update(self._environment(fn))
        try:
            handler = getattr(importlib.import_module(module_name), attr)
            context = LambdaContext(function_name=fn.function_name, invoked_function_arn=fn.function_arn)
            # The function's AWS calls are signed with its own role's credentials, as Lambda hands them over.
            with clients_from(self._clients_of(fn.role)):
                return {"result": handler(event, context)}
        except Exception as error:  # what the Lambda service does with an unhandled exception
            return {"errorType": type(error).__name__, "errorMessage": str(error)}

    def _run_in_worker(self, fn: Any, event: Any, record: Invocation) -> dict[str, Any]:
        assert self.asset is not None and self.endpoint, "the world starts the runtime before invoking"
        credentials = self.credentials_of(fn.role)
        env = {
            **self._environment(fn),
            # What Lambda hands a function: its role's temporary credentials; and where the emulated AWS answers.
            "AWS_ACCESS_KEY_ID": credentials.access_key_id,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
            "AWS_SESSION_TOKEN": credentials.session_token,
            "AWS_ENDPOINT_URL": self.endpoint,
        }
        timeout = float(fn.timeout)
        key = (fn.function_name, fn.handler, str(self.asset))
        worker = POOL.take(key)
        if worker is None:
            spawn_env = {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "TZ": ":UTC",
                "LAMBDA_TASK_ROOT": str(self.asset),
                "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
                "AWS_LAMBDA_FUNCTION_TIMEOUT": str(fn.timeout),
                "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true",
                **env,
            }
            record.cold = True
            try:
                worker = Worker(key, self.asset, fn.handler, spawn_env, max(INIT_LIMIT_S, timeout))
            except WorkerFailed as error:
                record.init_s = error.init_s
                return {"errorType": error.error_type, "errorMessage": str(error)}
            POOL.add(worker)
            record.init_s = worker.init_s
        log = FunctionLog(self.logs)
        request = {
            "event": event,
            "env": env,
            "world": self.world,
            "request_id": str(uuid.uuid4()),
            "deadline": time.time() + timeout,
            "function_name": fn.function_name,
            "function_arn": fn.function_arn,
            "memory": fn.memory_size,
        }
        answer = worker.call(request, timeout, log)
        POOL.give_back(worker)
        deliver_logs(fn, worker.stream, log.events)
        if answer is None:
            return {"errorType": TIMEOUT_ERROR, "errorMessage": f"Task timed out after {timeout:.2f} seconds"}
        return answer

    def cold_starts(self) -> dict[str, list[float]]:
        """Per function, the seconds of each cold start among this world's invocations."""
        found: dict[str, list[float]] = {}
        for record in list(self.invocations):
            if record.cold:
                found.setdefault(record.function, []).append(round(record.init_s, 3))
        return found
