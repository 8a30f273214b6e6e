"""Where moto (5.2) spends the rehearsal's time on work that changes nothing it answers, done once instead.

- `CreateStateMachine` parses the whole definition with moto's pure-Python ANTLR parser only to validate it, and
  every world deploys the same definitions: a definition that parsed once is valid the next time too (a failed
  parse is not remembered, so an invalid definition is refused every time, as by AWS).
- Every execution parses its definition again (`ExecutionWorker._get_evaluation_entrypoint`): a parsed program
  holds no state of an execution (that lives in the execution's Environment), so a finished execution's program
  is handed to the next execution of the same definition — one execution at a time per program, never shared.
- Each Lambda task of the interpreter creates a new boto3 client (`boto_client_for`), reading the service model
  again: clients are thread-safe and hold no state of a world, so one per region and service is reused.
- Every `CreateKey` generates a 2048-bit RSA private key, used only by asymmetric keys' Sign and Verify, which this
  stack never creates: one key per key spec is generated once per process.

Neither changes what moto answers; tests/unit/test_moto_speed.py checks that, and that each patch is still needed
(it fails once moto caches these itself: then drop the patch).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

_validated: set[str] = set()
_private_keys: dict[Any, Any] = {}
_programs: dict[str, list[Any]] = {}  # definition -> parsed programs no execution is using
_TAKEN = "_rehearsal_program"
_clients: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


@contextlib.contextmanager
def patched() -> Iterator[None]:
    from unittest import mock

    import moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils  # noqa: F401
    from moto.core.models import botocore_stubber
    from moto.stepfunctions.parser.asl.utils import boto_client
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    validate = StepFunctionsParserBackend._validate_definition
    create_client = boto_client.boto_client_for

    def validate_once(definition: str) -> None:
        if definition in _validated:
            return
        validate(definition)  # raises InvalidDefinition: not remembered
        with _lock:
            _validated.add(definition)

    def client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        # moto's own function signs with fixed keys whatever the state's credentials: so may a shared client.
        key = (region, service, botocore_stubber.enabled)
        with _lock:
            if key not in _clients:
                _clients[key] = create_client(region, service, state_credentials)
            return _clients[key]

    from moto.kms.utils import generate_private_key as generate
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    parse = ExecutionWorker._get_evaluation_entrypoint
    run = ExecutionWorker._execution_logic

    def entrypoint(self: Any) -> Any:
        definition = self._evaluation_details.state_machine_details.definition
        with _lock:
            free = _programs.get(definition)
            program = free.pop() if free else None
        if program is None:
            program = parse(self)
        setattr(self, _TAKEN, (definition, program))
        return program

    def execution_logic(self: Any) -> None:
        try:
            run(self)  # type: ignore[no-untyped-call]
        finally:
            taken = getattr(self, _TAKEN, None)
            if taken is not None:
                with _lock:
                    _programs.setdefault(taken[0], []).append(taken[1])

    def private_key_once(key_spec: Any) -> Any:
        with _lock:
            if key_spec not in _private_keys:
                _private_keys[key_spec] = generate(key_spec)
            return _private_keys[key_spec]

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch("moto.kms.models.generate_private_key", private_key_once))
        stack.enter_context(mock.patch.object(ExecutionWorker, "_get_evaluation_entrypoint", entrypoint))
        stack.enter_context(mock.patch.object(ExecutionWorker, "_execution_logic", execution_logic))
        stack.enter_context(
            mock.patch.object(StepFunctionsParserBackend, "_validate_definition", staticmethod(validate_once))
        )
        # Each interpreter module imported the function by name: patch it where it is looked up.
        for name, module in list(sys.modules.items()):
            if name.startswith("moto.stepfunctions.parser.") and getattr(module, "boto_client_for", None) is (
                create_client
            ):
                stack.enter_context(mock.patch.object(module, "boto_client_for", client_for))
        yield
