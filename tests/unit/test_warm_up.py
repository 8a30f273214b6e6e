"""The warm-up event: every handler answers {"warm": true} at once, without a call to AWS or Bitbucket, without a log
line; and no other event, however close, is taken for it. (With the run, a warm-up also reads ahead what its step
reads first: tests/integration/test_lock_window.py.)"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest

import functions.handlers
from functions.errors import InvalidInput
from functions.handlers._step import WARM_EVENT, is_warm_up


def _entry_points() -> list[str]:
    """module:function of every step handler (a module may hold several, e.g. the drill's)."""
    found = []
    for info in pkgutil.iter_modules(functions.handlers.__path__):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"functions.handlers.{info.name}")
            found += [
                f"{info.name}:{name}"
                for name, obj in vars(module).items()
                if callable(obj) and hasattr(obj, "__wrapped__") and obj.__module__ == module.__name__
            ]
    return sorted(found)


HANDLERS = _entry_points()


class NoCalls:
    """Stands in for boto3 and requests: any call fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a warm-up made a call ({name})")


@pytest.fixture
def no_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    import requests

    from functions.clients import aws

    monkeypatch.setattr(aws, "client", lambda *a, **k: NoCalls().call)
    monkeypatch.setattr(requests.Session, "request", lambda *a, **k: NoCalls().call)


@pytest.mark.parametrize("name", HANDLERS)
def test_each_handler_answers_a_warm_up_at_once(name: str, no_calls: None, capsys: pytest.CaptureFixture[str]) -> None:
    module, function = name.split(":")
    handler = getattr(importlib.import_module(f"functions.handlers.{module}"), function)
    # No Lambda context either: Powertools would read one for its first log line, so none is written.
    answer = handler(dict(WARM_EVENT), None)
    assert set(answer) == {"warm", "step"} and answer["warm"] is True and answer["step"]
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    "event",
    [
        {"warm": True, "run": {"instance": "demo"}, "part": "home"},  # a step's event with a warm flag is the step's
        {"warm": "true"},
        {"warm": 1},
        {"warm": False},
        {"Warm": True},
        [{"warm": True}],
        {},
    ],
)
def test_nothing_else_is_a_warm_up(event: Any) -> None:
    assert not is_warm_up(event)


def test_a_near_miss_is_parsed_as_the_steps_event_and_refused(no_calls: None) -> None:
    from functions.handlers.backup import unlock

    class Context:
        function_name = "unlock"
        memory_limit_in_mb = 256
        invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:unlock"
        aws_request_id = "1"

    with pytest.raises(InvalidInput, match="unlock: invalid input: run"):
        unlock({"warm": True, "instance": "demo"}, Context())
