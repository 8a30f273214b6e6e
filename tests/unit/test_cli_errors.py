"""The command line's errors: with --json one JSON object on stdout (exit code unchanged), usage errors included;
without it one line on stderr, never a traceback."""

from __future__ import annotations

import json

import pytest

from bitbucket_backup_cli.base import USAGE
from bitbucket_backup_cli.main import main


def _json_error(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out, err = capsys.readouterr()
    assert err == ""
    answer = json.loads(out)
    assert set(answer) == {"error"}
    error: dict[str, object] = answer["error"]
    return error


def test_a_usage_error_is_json_with_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["restore", "--json"]) == USAGE  # --instance is required
    error = _json_error(capsys)
    assert error["code"] == USAGE and "--instance" in str(error["message"])


def test_a_refusal_is_json_with_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "backup", "--instance", "prod", "--wait", "--poll-interval", "0"]) == USAGE
    error = _json_error(capsys)
    assert error == {"code": USAGE, "message": "--poll-interval must be more than 0 and --limit at least 1"}


def test_without_json_an_error_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backup", "--instance", "prod", "--wait", "--poll-interval", "0"]) == USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "bitbucket-backup: error: --poll-interval must be more than 0 and --limit at least 1\n"


def test_without_json_a_usage_error_is_argparse_s(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["restore"]) == USAGE
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: bitbucket-backup restore") and "--instance" in err
