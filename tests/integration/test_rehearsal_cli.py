"""`python -m rehearsal` as a user runs it: against a "staging" Bitbucket given by URL, JSON summary, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rehearsal.bitbucket_simulator import BitbucketSimulator

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], password: str, tmp_path: Path) -> tuple[int, str, dict]:
    env = {**os.environ, "BITBUCKET_PASSWORD": password}
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rehearsal", *args, "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr, json.loads(out.read_text()) if out.exists() else {}


@pytest.mark.slow
@pytest.mark.long
def test_rehearsal_against_an_external_bitbucket_succeeds(tmp_path: Path) -> None:
    with BitbucketSimulator(username="backup", password="Staging-Pw-1", drain_seconds=0.2) as staging:
        url = staging.url
        code, output, summary = _run(
            ["--bitbucket-url", staging.url, "--username", "backup", "--poll-interval", "0", "--drain-timeout", "10"],
            "Staging-Pw-1",
            tmp_path,
        )
        assert not staging.locked
    assert code == 0, output
    assert f"[{url}]  INFO: locked with '" in output
    assert "Bitbucket instance unlocked" in output and "Backup progress updated to 100" in output
    assert summary["status"] == "SUCCEEDED" and summary["error"] is None
    assert summary["backup_id"].startswith("demo-")
    assert summary["lock_window_s"] >= summary["drain_s"] > 0
    assert summary["state_transitions"] > 0 and summary["cost_usd"] > 0
    # Every function ran as its own role with moto's IAM on, and none was refused a call.
    assert summary["iam_enforced"] is True and summary["denied_calls"] == []
    assert {s["kind"] for s in summary["snapshots"]} == {"ebs-snapshot", "rds-snapshot"}
    # The backup sent no notification (no failure, and notify_on_success is off).
    assert [n["subject"] for n in summary["notifications"]] == []
    # The rehearsal ends with a restore of the backup it just made, into new resources.
    assert summary["restore"]["status"] == "SUCCEEDED", summary["restore"]
    assert summary["restore"]["output"]["database"]["instance_id"] == "restored-demo"
    assert "Restore of " in output and "next step 1:" in output
    assert "Staging-Pw-1" not in output


@pytest.mark.slow
def test_rehearsal_with_a_wrong_password_exits_1_and_says_why(tmp_path: Path) -> None:
    with BitbucketSimulator(username="backup", password="right-one", drain_seconds=0.1) as staging:
        code, output, summary = _run(["--bitbucket-url", staging.url, "--username", "backup"], "wrong-one", tmp_path)
        assert not staging.locked
    assert code == 1, output
    assert summary["status"] == "FAILED"
    assert summary["error"]["step"] == "validate" and "401" in summary["error"]["message"]
    assert len(summary["notifications"]) == 1
    assert "wrong-one" not in output and "wrong-one" not in json.dumps(summary)
    # In the user's words: no interpreter internals, and the step named once.
    assert "FailureEventException" not in output and " object at 0x" not in output and "Traceback" not in output
    (failed,) = [line for line in output.splitlines() if line.startswith("ERROR: ")]
    assert failed.startswith("ERROR: validate: ") and "401" in failed and failed.count("validate") == 1, failed
    # The last line says whether Bitbucket is unlocked; this run never locked it.
    assert output.rstrip().splitlines()[-1].startswith("Bitbucket unlocked: yes (this run never locked"), output


def test_rehearsal_refuses_nonsense_arguments(tmp_path: Path) -> None:
    code, output, _ = _run(["--home-strategy", "none", "--db-strategy", "none"], "x", tmp_path)
    assert code == 2 and "nothing to back up" in output and "Traceback" not in output


@pytest.mark.slow
@pytest.mark.long
def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")
    }


def test_rehearsal_of_the_host_copy_strategies_moves_real_bytes(tmp_path: Path) -> None:
    """`make demo DEMO_ARGS="--home-strategy rsync --db-strategy postgresql"`: the host script copies a real git home
    (here one the user names, with the locked pass sharded) and dumps a PostgreSQL the rehearsal starts; the summary
    lists the archives; the restore extracts them; the user's home is only read."""
    from rehearsal.hostworld import build_home

    home = build_home(tmp_path, range(1, 7)).root
    before = _tree(home)
    code, output, summary = _run(
        ["--home-strategy", "rsync", "--db-strategy", "postgresql", "--drain-seconds", "0.1", "--poll-interval", "0",
         "--home-path", str(home), "--locked-pass-parallel", "3", "--locked-pass-scan", "changed"],
        "admin",
        tmp_path,
    )  # fmt: skip
    assert code == 0, output
    assert _tree(home) == before
    assert summary["status"] == "SUCCEEDED" and summary["lock_window_s"] > 0
    archives = {a["part"]: a for a in summary["archive"]}
    assert set(archives) == {"home", "database"}
    for archive in archives.values():
        assert archive["bucket"] and archive["key"].startswith(f"demo/{summary['backup_id']}/")
        assert int(archive["size"]) > 0 and len(archive["sha256"]) == 64
    assert "rsync (live) done" in output and "pg_dump done" in output
    # The live pass compared every file; the locked one listed only what changed since the live pass began.
    assert re.search(r"rsync \(live\) done on i-[0-9a-f]+ \(scanned every file\)", output), output
    assert re.search(r"rsync \(locked\) done on i-[0-9a-f]+ \(scanned what changed\)", output), output
    restore = summary["restore"]
    assert restore["status"] == "SUCCEEDED", restore
    assert restore["output"]["home"]["files"] > 0
    assert restore["output"]["database"]["dbname"].endswith("_restored")
    assert "Traceback" not in output


def test_zero_downtime_with_a_host_copy_strategy_is_a_usage_error(tmp_path: Path) -> None:
    code, output, _ = _run(["--zero-downtime", "--home-strategy", "rsync"], "x", tmp_path)
    assert code == 2 and "atomic snapshots" in output and "Traceback" not in output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--home-path", "/"], "need --home-strategy rsync"),
        (["--home-strategy", "rsync", "--home-path", "/nonexistent/home"], "no such directory"),
        (["--home-strategy", "rsync", "--locked-pass-parallel", "0"], "from 1 to 32"),
        (["--locked-pass-scan", "changed"], "need --home-strategy rsync"),
    ],
)
def test_a_home_path_or_a_parallel_locked_pass_outside_rsync_is_a_usage_error(
    tmp_path: Path, args: list[str], said: str
) -> None:
    code, output, _ = _run(args, "x", tmp_path)
    assert code == 2 and said in output and "Traceback" not in output


@pytest.mark.slow
def test_rehearsal_with_mesh_nodes_lists_every_part(tmp_path: Path) -> None:
    code, output, summary = _run(["--mesh-nodes", "2", "--no-restore", "--quiet"], "admin", tmp_path)
    assert code == 0, output
    assert summary["parts"] == ["home", "database", "mesh-node1", "mesh-node2"]
    assert sorted(s["part"] for s in summary["snapshots"]) == sorted(summary["parts"])
    assert summary["cold_starts_in_lock_window"] == [] and summary["denied_calls"] == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--mesh-nodes", "21"], "from 0 to 20"),
        (["--zero-downtime", "--mesh-nodes", "1", "--mesh-strategy", "rsync"], "not with --mesh-strategy rsync"),
    ],
)
def test_mesh_options_out_of_range_are_usage_errors(tmp_path: Path, args: list[str], said: str) -> None:
    code, output, _ = _run(args, "x", tmp_path)
    assert code == 2 and said in output and "Traceback" not in output, output


@pytest.mark.slow
@pytest.mark.long
def test_rehearsal_with_a_search_index_snapshots_and_restores_it(tmp_path: Path) -> None:
    code, output, summary = _run(["--search-strategy", "amazon-opensearch"], "admin", tmp_path)
    assert code == 0, output
    assert summary["parts"] == ["home", "database", "search"]
    assert sorted(s["part"] for s in summary["snapshots"]) == sorted(summary["parts"])
    assert summary["restore"]["status"] == "SUCCEEDED", summary["restore"]
    assert summary["restore"]["output"]["search"]["indices"], summary["restore"]
    assert summary["cold_starts_in_lock_window"] == [] and summary["denied_calls"] == []
