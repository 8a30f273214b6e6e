"""The in-process Lambda runtime: each Lambda invocation moto receives runs the project's real handler (from
functions/) in this process, with the function's template environment, and its logs are captured."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functions.clients.aws import clients_from, credentials_client
from functions.handlers._step import is_warm_up
from rehearsal.fake_account import REGION
from rehearsal.iam import RoleCredentials, lambda_credentials

ROOT_HANDLERS = Path(__file__).resolve().parent.parent / "functions" / "handlers"

# The environment every in-process Lambda sees on top of its own template environment.
LAMBDA_OVERRIDES = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "SECRET_CACHE_SECONDS": "0",
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
    function: str
    handler: str
    event: Any
    result: Any = None
    error: str | None = None
    seconds: float = 0.0


class LogCapture(io.TextIOBase):
    """Collects every log line the handlers write (Powertools JSON), and passes seed lines to a listener."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.listener: Callable[[dict[str, Any]], None] | None = None
        self._lock = threading.Lock()
        self._partial = ""

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            *complete, self._partial = self._partial.split("\n")
            self.lines.extend(line for line in complete if line)
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


class LambdaRuntime:
    """Replaces moto's Docker-less Lambda backend `invoke` with a call of the configured handler."""

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

    def _clients_of(self, role_arn: str) -> Callable[[str, str | None], Any]:
        with self._env_lock:
            if role_arn not in self._credentials:
                self._credentials[role_arn] = lambda_credentials(role_arn)
            credentials = self._credentials[role_arn]

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
        handler_path = fn.handler
        module_name, _, attr = handler_path.rpartition(".")
        event = json.loads(body) if body else {}
        with self._env_lock:
            # Every function of the stack shares one environment, so setting it for one sets it for all.
            os.environ.update({**fn.environment_vars, **LAMBDA_OVERRIDES, **self.overrides})
        record = Invocation(function=fn.function_name, handler=handler_path, event=event)
        started = time.monotonic()
        try:
            injected = self.faults.get(fn.function_name)
            # An injected fault hits the step's work; the warm-up before the lock only loads the code.
            if injected and not is_warm_up(event):
                raise injected.pop(0)
            handler = getattr(importlib.import_module(module_name), attr)
            context = LambdaContext(function_name=fn.function_name, invoked_function_arn=fn.function_arn)
            # The function's AWS calls are signed with its own role's credentials, as Lambda hands them over.
            with clients_from(self._clients_of(fn.role)):
                record.result = handler(event, context)
            payload = json.dumps(record.result).encode()
        except Exception as error:  # what the Lambda service does with an unhandled exception
            record.error = type(error).__name__
            response_headers["x-amz-function-error"] = "Unhandled"
            payload = json.dumps({"errorType": type(error).__name__, "errorMessage": str(error)}).encode()
        record.seconds = time.monotonic() - started
        self.invocations.append(record)
        return payload
