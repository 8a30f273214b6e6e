"""pyproject.toml lets mypy skip the aws_cdk modules the project does not import (they cost it most of its time on a
fresh clone): every module the project does import must stay in the list that mypy checks in full."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _checked_in_full() -> set[str]:
    overrides = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["overrides"]
    return {m for o in overrides if o.get("follow_imports") == "normal" for m in o["module"]}


def _imported() -> set[str]:
    found = {"aws_cdk"}
    sources = [ROOT / "app.py", *(ROOT / "stacks").rglob("*.py"), *(ROOT / "rehearsal").rglob("*.py")]
    for path in sources:
        text = path.read_text()
        found |= {f"aws_cdk.{m}" for m in re.findall(r"^\s*from aws_cdk import (aws_\w+)", text, re.MULTILINE)}
        found |= set(re.findall(r"^\s*(?:from|import) (aws_cdk\.\w+)", text, re.MULTILINE))
    return found


def test_every_aws_cdk_module_the_project_imports_is_type_checked_in_full() -> None:
    assert _imported() == _checked_in_full()


def test_the_rest_of_aws_cdk_is_skipped() -> None:
    overrides = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["overrides"]
    assert {"module": ["aws_cdk.*"], "follow_imports": "skip"} in overrides
