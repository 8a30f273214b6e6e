"""Small readers of Amazon States Language definitions, shared by the template tests."""

from __future__ import annotations

from typing import Any


def happy_path(definition: dict[str, Any]) -> list[str]:
    """From StartAt along Next, taking the first rule of each Choice (the 'ready' answer)."""
    return path_where(definition, {})


def function_of(task: dict[str, Any]) -> str:
    """The function a payload-only Lambda task invokes (its Resource is the function ARN)."""
    return str(task["Resource"]).rsplit(":", 1)[-1]


def path_where(definition: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """From StartAt along Next, where each Choice takes its first rule that holds for `facts` (variable → value;
    a rule on a variable not in `facts` counts as holding, the 'ready' answer), else its Default."""
    states, name, path = definition["States"], definition["StartAt"], []
    while name not in path:
        path.append(name)
        state = states[name]
        if state["Type"] == "Choice":
            name = next((rule["Next"] for rule in state["Choices"] if _holds(rule, facts)), state.get("Default", ""))
        elif state["Type"] in ("Succeed", "Fail") or state.get("End"):
            break
        else:
            name = state["Next"]
    return path


def _holds(rule: dict[str, Any], facts: dict[str, Any]) -> bool:
    variable = rule["Variable"]
    if variable not in facts:
        return True
    expected = rule.get("BooleanEquals", rule.get("StringEquals"))
    return bool(facts[variable] == expected)
