"""The lock window in the definition: warmed before the lock, and no wait of whole seconds under it."""

from __future__ import annotations

from typing import Any

from functions.models.config import TimingConfig
from functions.models.steps import BACKUP
from tests.infra.asl import function_of
from tests.infra.conftest import StateMachine

WARM_UP = BACKUP.warm_up.state


def _next(state: dict[str, Any]) -> list[str]:
    """Where a state goes, on a locked run (a zero-downtime run's branch is not the locked phase)."""
    choices = state.get("Choices", [])
    if any(c["Variable"] == "$.run.flow.zero_downtime" for c in choices):
        return [c["Next"] for c in choices if c["Variable"] == "$.run.flow.zero_downtime" and not c["BooleanEquals"]]
    targets = [state["Next"]] if "Next" in state else []
    targets += [choice["Next"] for choice in choices]
    return targets + ([state["Default"]] if "Default" in state else [])


def _nested(branch: dict[str, Any]) -> list[dict[str, Any]]:
    """A branch's states, with those of the Map states in it (the Mesh nodes' copies)."""
    found: list[dict[str, Any]] = []
    for state in branch["States"].values():
        found.append(state)
        if "ItemProcessor" in state:
            found += _nested(state["ItemProcessor"])
    return found


def _locked_phase(states: dict[str, Any]) -> list[dict[str, Any]]:
    """Every state from the one after Lock to Unlock (inclusive), with the states of Parallel branches; not Catches."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    todo = [states[BACKUP.lock.state]["Next"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        state = states[name]
        found.append(state)
        for branch in state.get("Branches", []):
            found += _nested(branch)
        if name != BACKUP.unlock.state:
            todo += _next(state)
    assert BACKUP.unlock.state in seen
    return found


def test_the_warm_up_invokes_every_function_of_the_locked_phase_before_the_lock(
    state_machines: dict[str, StateMachine],
) -> None:
    for sm in state_machines.values():
        states = sm.definition["States"]
        locked_rule = states["Zero downtime?"]["Choices"][0]
        assert locked_rule == {"Variable": "$.run.flow.zero_downtime", "BooleanEquals": False, "Next": WARM_UP}
        warm = states[WARM_UP]
        assert warm["Type"] == "Parallel" and warm["Next"] == BACKUP.lock.state and warm["ResultPath"] is None
        warmed = set()
        for branch in warm["Branches"]:
            (task,) = branch["States"].values()
            if task["Type"] == "Map":  # the Mesh nodes' copy: an environment per node of the run
                assert task["ItemsPath"] == "$.run.flow.mesh" and task["ItemSelector"] == {"run.$": "$.run"}
                (task,) = task["ItemProcessor"]["States"].values()
            assert task["Parameters"] == {"warm": True, "run.$": "$.run"}, "a warm-up carries the run, nothing else"
            assert task["ResultPath"] is None
            warmed.add(function_of(task))
        called = {function_of(s) for s in _locked_phase(states) if s["Type"] == "Task"}
        failure = function_of(states[BACKUP.handle_failure.state])
        assert called, "the locked phase calls functions"
        assert warmed == called | {failure}, (warmed, called)


def test_no_wait_under_the_lock_takes_seconds_by_default(state_machines: dict[str, StateMachine]) -> None:
    defaults = TimingConfig()
    for sm in state_machines.values():
        waits = [s for s in _locked_phase(sm.definition["States"]) if s["Type"] == "Wait"]
        assert waits, "the drain loop has its Wait state (zero seconds by default)"
        for wait in waits:
            seconds = wait.get("Seconds", 0)
            if "SecondsPath" in wait:
                seconds = getattr(defaults, wait["SecondsPath"].rsplit(".", 1)[-1])
            assert seconds == 0, wait
