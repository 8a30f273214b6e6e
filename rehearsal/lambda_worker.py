"""One Lambda execution environment: a process that imports one handler from the function's asset and then serves
invocations, one at a time, as the Python runtime does. Standard library only: it runs as `python -I -S` with the
asset and the runtime's boto3 on its path, nothing of the rehearsal's environment.

Protocol, JSON lines: requests on stdin, answers on the file descriptor named last on the command line; stdout and
stderr are the function's log.
  start   -> {"ready": true, "init_s": 0.8} | {"ready": false, "errorType": ..., "errorMessage": ...}
  request {"event", "env", "world", "request_id", "deadline", "function_name", "function_arn", "memory"}
          -> {"result": ...} | {"errorType": ..., "errorMessage": ...}
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any

LOG_END = "\x00rehearsal-invocation-end"


class Context:
    def __init__(self, request: dict[str, Any]) -> None:
        self.function_name = request["function_name"]
        self.invoked_function_arn = request["function_arn"]
        self.memory_limit_in_mb = int(request.get("memory", 128))
        self.aws_request_id = request["request_id"]
        self.function_version = "$LATEST"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = ""
        self._deadline = float(request["deadline"])

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _apply(env: dict[str, str], previous: dict[str, str]) -> None:
    for key in set(previous) - set(env):
        os.environ.pop(key, None)
    os.environ.update(env)


def _forget_world() -> None:
    """An environment kept warm across the emulated worlds of one test process (each a new deployment into a new
    moto) drops what it read from the previous one: assumed roles' clients, configurations, secrets."""
    aws = sys.modules.get("functions.clients.aws")
    if aws is not None:
        aws.forget_assumed()
    trusted = sys.modules.get("functions.trusted_config")
    if trusted is not None:
        trusted.clear_cache()
    secrets = sys.modules.get("functions.clients.secrets")
    if secrets is not None:
        with secrets._lock:
            secrets._providers.clear()


def main() -> None:
    asset, runtime_site, handler_path, answers_fd = sys.argv[1:5]
    sys.path[:0] = [asset, runtime_site]
    answers = os.fdopen(int(answers_fd), "w", buffering=1)
    module_name, _, attr = handler_path.rpartition(".")
    started = time.perf_counter()
    try:
        handler = getattr(importlib.import_module(module_name), attr)
    except Exception as error:  # an init error: Lambda reports it on the invocation
        kind = "Runtime.ImportModuleError" if isinstance(error, ImportError) else "Runtime.HandlerNotFound"
        answers.write(json.dumps({"ready": False, "errorType": kind, "errorMessage": f"{handler_path}: {error}"}))
        answers.write("\n")
        return
    answers.write(json.dumps({"ready": True, "init_s": time.perf_counter() - started}) + "\n")
    previous: dict[str, str] = {}
    world = None
    for line in sys.stdin:
        request = json.loads(line)
        _apply(request["env"], previous)
        previous = dict(request["env"])
        if request["world"] != world:
            if world is not None:
                _forget_world()
            world = request["world"]
        try:
            answer: dict[str, Any] = {"result": handler(request["event"], Context(request))}
            text = json.dumps(answer)
        except Exception as error:  # what the runtime does with an unhandled exception
            text = json.dumps({"errorType": type(error).__name__, "errorMessage": str(error)})
        sys.stderr.flush()
        # The end of this invocation's log: the runtime answers once it has read every line before it.
        sys.stdout.write(f"{LOG_END} {request['request_id']}\n")
        sys.stdout.flush()
        answers.write(text + "\n")


if __name__ == "__main__":
    main()
