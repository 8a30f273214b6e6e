"""The table of steps (functions/models/steps.py): every handler and logic it names exists, every handler is in it,
and README.md's table of steps is rendered from it (`python -m tests.unit.test_steps` prints the table)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import functions.handlers
from functions.models.steps import BACKUP, DRILL, FAILED_PREFIX, RESTORE, WORKFLOWS, Function, Stage, failed_label

ROOT = Path(__file__).resolve().parents[2]
BEGIN = "<!-- steps: generated from functions/models/steps.py, checked by tests/unit/test_steps.py -->"
END = "<!-- end of steps -->"


def _resolve(dotted: str) -> Callable[..., Any]:
    module, _, attribute = dotted.rpartition(".")
    found = getattr(importlib.import_module(module), attribute)
    assert callable(found), dotted
    return found  # type: ignore[no-any-return]


def render_markdown() -> str:
    lines = [
        BEGIN,
        "| Workflow | Step | State | Handler | Logic | Timeout |",
        "|---|---|---|---|---|---|",
    ]
    for workflow, steps in WORKFLOWS.items():
        for row in steps.rows:
            state = getattr(row, "state", "— (an EventBridge rule or schedule calls it)")
            if isinstance(row, Stage):
                handler, logic, timeout = "— (a Parallel or nested execution)", "—", "—"
            else:
                handler, logic, timeout = f"`{row.handler}`", f"`{row.logic}`", f"{row.timeout_s} s"
            lines.append(f"| {workflow} | `{row.name}` | {state} | {handler} | {logic} | {timeout} |")
    return "\n".join([*lines, END])


def test_the_readme_table_of_steps_is_the_table() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    assert readme[start:end] == render_markdown(), (
        "README.md's table of steps is stale: python -m tests.unit.test_steps"
    )


@pytest.mark.parametrize("row", [f for w in WORKFLOWS.values() for f in w.functions], ids=lambda f: f.handler)
def test_each_step_names_its_handler_and_logic(row: Function) -> None:
    handler = _resolve(row.handler)
    assert hasattr(handler, "__wrapped__"), f"{row.handler} is not a @step handler"
    assert handler.__name__ == row.name
    _resolve(row.logic)


def test_every_handler_is_a_step_of_the_table() -> None:
    listed = {f.handler for w in WORKFLOWS.values() for f in w.functions}
    found = set()
    for info in pkgutil.iter_modules(functions.handlers.__path__):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"functions.handlers.{info.name}")
            found |= {
                f"{module.__name__}.{name}"
                for name, obj in inspect.getmembers(module, callable)
                if hasattr(obj, "__wrapped__") and obj.__module__ == module.__name__
            }
    assert found == listed


def test_names_and_labels_are_unique_within_a_workflow() -> None:
    for steps in WORKFLOWS.values():
        names = [row.name for row in steps.rows]
        assert len(names) == len(set(names)) == len({row.label for row in steps.rows})
        assert all(name.isidentifier() and name == name.lower() for name in names)


def test_a_failed_state_leads_back_to_its_step() -> None:
    assert BACKUP.failed(FAILED_PREFIX + "copy-regions") is BACKUP.copy_regions
    assert BACKUP.failed(BACKUP.copy.failed_state) is BACKUP.copy
    assert RESTORE.failed("Failed: restore-home") is RESTORE.restore_home
    assert DRILL.failed(DRILL.restore.failed_state) is DRILL.restore
    assert BACKUP.failed(BACKUP.lock.state) is None and failed_label(BACKUP.lock.state) is None
    assert failed_label("Failed: wait-drained") == BACKUP.wait_drained.label == "wait-drained"


def test_the_fault_matrix_names_steps_of_the_table() -> None:
    """The step each fault fails at, as tests and docs/fault-matrix.md spell it, is a backup step's label."""
    from tests.integration import fault_matrix

    labels = {row.label for row in BACKUP.rows}
    assert {f.step for f in fault_matrix.FAULTS if f.step} <= labels


if __name__ == "__main__":
    print(render_markdown())
