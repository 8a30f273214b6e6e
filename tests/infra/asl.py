"""Small readers of Amazon States Language definitions, shared by the template tests."""

from __future__ import annotations

from typing import Any


def happy_path(definition: dict[str, Any]) -> list[str]:
    """From StartAt along Next, taking the first rule of each Choice (the 'ready' answer)."""
    states, name, path = definition["States"], definition["StartAt"], []
    while name not in path:
        path.append(name)
        state = states[name]
        if state["Type"] == "Choice":
            name = state["Choices"][0]["Next"]
        elif state["Type"] in ("Succeed", "Fail") or state.get("End"):
            break
        else:
            name = state["Next"]
    return path


def function_of(task: dict[str, Any]) -> str:
    """The function a payload-only Lambda task invokes (its Resource is the function ARN)."""
    return str(task["Resource"]).rsplit(":", 1)[-1]
