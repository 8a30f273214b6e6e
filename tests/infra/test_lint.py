"""Linters on what was synthesized: cfn-lint on the template, statelint on each state machine definition, and
cdk-nag (AwsSolutions) with every acknowledgment in stacks/nag.py justified and still needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stacks import nag
from tests.infra.conftest import Synth

BIN = Path(sys.executable).parent
# CDK writes DependsOn on a function's role and policy although the GetAtt already implies the role: harmless.
CFN_LINT_IGNORED = ["W3005"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.long
def test_cfn_lint_finds_no_errors(synth: Synth, tmp_path: Path) -> None:
    path = tmp_path / "template.json"
    path.write_text(json.dumps(synth.template, indent=1))
    result = _run([str(BIN / "cfn-lint"), "--ignore-checks", *CFN_LINT_IGNORED, "--", str(path)])
    # Exit code is a bit mask: 1 fatal, 2 error, 4 warning, 8 informational. Warnings alone are acceptable.
    assert result.returncode in (0, 4, 8, 12), result.stdout + result.stderr


def test_statelint_accepts_each_definition(synth: Synth, state_machines: dict[str, Any], tmp_path: Path) -> None:
    assert len(state_machines) == 2
    paths = []
    for logical, sm in state_machines.items():
        # Every Ref/GetAtt was replaced by a placeholder ARN (a Lambda function ARN for the tasks).
        assert "Fn::" not in sm.definition_json and '"Ref"' not in sm.definition_json
        tasks = re.findall(r'"Resource":\s*"([^"]+)"', sm.definition_json)
        assert tasks and all(t.startswith("arn:aws:lambda:eu-west-1:123456789012:function:") for t in tasks)
        path = tmp_path / f"{logical}.asl.json"
        path.write_text(json.dumps(sm.definition, indent=1))
        paths.append(path)
    # CDK writes BackoffRate as an integer where statelint expects a float: --ignore=FLOAT.
    for path in paths:
        result = _run([str(BIN / "statelint"), "--ignore=FLOAT", str(path)])
        assert result.returncode == 0, f"{path.name}:\n{result.stdout}{result.stderr}"


def test_statelint_is_not_vacuous(tmp_path: Path) -> None:
    """statelint really reports a broken definition (a dangling Next), so a pass above means something."""
    path = tmp_path / "broken.asl.json"
    path.write_text(json.dumps({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}))
    result = _run([str(BIN / "statelint"), "--ignore=FLOAT", str(path)])
    assert result.returncode != 0 and "Nowhere" in result.stdout + result.stderr


def test_cdk_nag_passes(synth: Synth) -> None:
    """The shared synthesis ran with checks=True: app.synth() raises on any finding stacks/nag.py does not
    acknowledge, so getting here means AwsSolutions passed. The report CDK wrote confirms it."""
    assert synth.checks
    assert not synth.violations, json.dumps(synth.violations, indent=1)
    # ... and the pack did look at this stack: it found (and check() acknowledged) findings.
    assert synth.acknowledged


def test_every_acknowledgment_has_a_reason_and_is_used(synth: Synth) -> None:
    acknowledged = synth.acknowledged
    patterns = [pattern for pattern, _ in nag.ACKNOWLEDGMENTS]
    assert len(set(patterns)) == len(patterns), "a pattern is listed twice"
    for pattern, reason in nag.ACKNOWLEDGMENTS:
        re.compile(pattern)
        assert pattern.startswith("AwsSolutions-"), pattern
        assert len(reason) >= 40 and len(reason.split()) >= 8, f"{pattern}: the reason says too little: {reason!r}"
        assert not re.search(r"\b(todo|fixme|tbd|xxx)\b", reason, re.IGNORECASE), reason
    used = {nag.pattern_for(rule) for rule in acknowledged}
    # see test_copy_strategy_config, test_copies_template and test_drill_template
    unused = [p for p in patterns if p not in used and p not in nag.ARCHIVE_ONLY | nag.COPIES_ONLY]
    assert not unused, f"acknowledgments no finding of this stack needs any more (remove them): {unused}"
    # Each acknowledged finding carries the reason of the entry that explains it.
    for rule, reason in acknowledged.items():
        assert reason == nag.reason_for(rule), rule


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("AwsSolutions-IAM5[Resource::*]", r"AwsSolutions-IAM5\[Resource::\*\]"),
        ("AwsSolutions-IAM5[Action::s3:*]", None),
        ("AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::bucket/*]", None),
        # An environment-agnostic stack (`cdk synth` without credentials) names region and account by token.
        (
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:volume/*]",
            nag.pattern_for("AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:eu-west-1:123456789012:volume/*]"),
        ),
        (
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:rds:<AWS::Region>:<AWS::AccountId>:snapshot:*]",
            nag.pattern_for("AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:rds:eu-west-1:123456789012:snapshot:*]"),
        ),
        # (instance/* and db:* are acknowledged for the restore: tests/infra/test_restore_template.py)
        ("AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:eu-west-1:123456789012:network-interface/*]", None),
        ("AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:rds:eu-west-1:123456789012:proxy:*]", None),
        ("AwsSolutions-L1", "AwsSolutions-L1"),
        ("AwsSolutions-L1x", None),
    ],
)
def test_acknowledgment_patterns_match_whole_finding_ids(rule: str, expected: str | None) -> None:
    """Patterns are matched in full: a new kind of wildcard permission is not waved through by accident."""
    assert expected is None or expected in dict(nag.ACKNOWLEDGMENTS)
    assert nag.pattern_for(rule) == expected
