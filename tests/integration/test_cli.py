"""`bitbucket-backup` against the local runtime over HTTP: a rehearsal world served by moto's ThreadedMotoServer in
this process (rehearsal/serve.py), the command line's `main` called with --endpoint-url, its output captured."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bitbucket_backup_cli.base import AWS_ERROR, FAILED, NOT_FOUND, OK, USAGE
from bitbucket_backup_cli.executions import expected_path
from bitbucket_backup_cli.main import main
from functions.models.steps import BACKUP
from rehearsal.bitbucket_simulator import BitbucketSimulator
from rehearsal.fake_account import REGION, set_fake_credentials
from rehearsal.runtime import Rehearsal
from rehearsal.serve import LocalEndpoint
from tests.integration.conftest import PASSWORD, World, wait_for, waiting_in

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Local:
    sim: BitbucketSimulator
    r: Rehearsal
    endpoint: LocalEndpoint
    # The backup every test here starts from, made with `backup --instance demo --wait`.
    backup: tuple[int, str, str]
    backup_id: str
    execution: str

    def args(self, *more: str) -> list[str]:
        return ["--endpoint-url", self.endpoint.url, "--region", REGION, *more]


def _captured(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def local() -> Iterator[Local]:
    set_fake_credentials()
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(BitbucketSimulator(password=PASSWORD, drain_seconds=0.05))
        r = stack.enter_context(Rehearsal(sim.url, password=PASSWORD))
        endpoint = stack.enter_context(LocalEndpoint(r))
        argv = ["--endpoint-url", endpoint.url, "--region", REGION, "backup", "--instance", "demo", "--wait"]
        code, out, err = _captured([*argv, "--poll-interval", "0.05"])
        made = re.search(r"^Backup (demo-\d{8}-\d{6}): SUCCEEDED$", out, re.MULTILINE)
        started = re.search(r"execution (cli-backup-demo-\S+)", err)
        assert code == OK and made and started, (code, out, err)
        yield Local(sim, r, endpoint, (code, out, err), made.group(1), started.group(1))


def cli(capsys: pytest.CaptureFixture[str], local: Local, *args: str) -> tuple[int, str, str]:
    code = main(local.args(*args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bitbucket-backup: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- the commands -------------------------------------------------------------------------------------------------


def test_backup_wait_follows_the_execution_and_prints_the_summary(local: Local) -> None:
    code, out, err = local.backup
    assert code == OK
    assert re.search(r"ebs-snapshot\s+snap-\w+\s+home\s+100 GB\s+completed\s+complete", out), out
    assert re.search(rf"rds-snapshot\s+{local.backup_id}\s+database\s+50 GB\s+completed\s+complete", out), out
    assert "lock window" in out
    # The progress bar (stderr, not a terminal: one line per step) ends at 100 % on the path's last state.
    percentages = [int(p) for p in re.findall(r"^backup\s+(\d+)%  ", err, re.MULTILINE)]
    assert len(percentages) >= 2 and percentages == sorted(percentages) and percentages[-1] == 100, err
    assert re.search(r"\nbackup 100%  Backup complete(  \(\+\d+ s\))?$", err.rstrip()), err
    # While running, each line has the time since the start; while Bitbucket is locked, the lock clock as well.
    lines = [line for line in err.splitlines() if re.match(r"^backup\s+\d+%  ", line)][:-1]
    assert all(re.search(r"  \(\+\d+ s(, Bitbucket locked \d+\.\d s)?\)$", line) for line in lines), err
    assert any("Bitbucket locked" in line for line in lines) and "Bitbucket locked" not in lines[0], err
    assert not local.sim.locked
    assert PASSWORD not in out + err


def test_list_shows_the_backup_complete_with_both_parts(local: Local, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, local, "list", "--json")
    assert code == OK
    rows = {row["backup_id"]: row for row in json.loads(out)["backups"]}
    row = rows[local.backup_id]
    assert row["status"] == "complete" and row["instance"] == "demo"
    assert row["parts"] == ["home", "database"] and row["missing_parts"] == []
    assert row["size_gb"] == {"home": 100, "database": 50}
    assert row["region"] == REGION and row["time"].startswith(local.backup_id[5:9])
    assert {a["kind"] for a in row["artifacts"]} == {"ebs-snapshot", "rds-snapshot"}

    code, out, _ = cli(capsys, local, "--json", "list", "--instance", "demo")  # global option before the command
    assert code == OK and local.backup_id in {r["backup_id"] for r in json.loads(out)["backups"]}

    code, out, _ = cli(capsys, local, "list")
    assert code == OK
    line = next(line for line in out.splitlines() if local.backup_id in line)
    assert "complete" in line and "home 100 GB, database 50 GB" in line and f"{REGION}: snap-" in line


def test_restore_without_a_backup_id_lists_the_restorable_backups(
    local: Local, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, local, "restore", "--instance", "demo")
    assert code == USAGE  # nothing was restored
    assert out.startswith("Restorable backups of demo (give one as BACKUP_ID):")
    out_text = out
    line = next(line for line in out.splitlines() if local.backup_id in line)
    assert "complete" in line and "home 100 GB, database 50 GB" in line
    code, out, _ = cli(capsys, local, "--json", "restore", "--instance", "demo")
    rows = json.loads(out)["backups"]
    assert code == USAGE and local.backup_id in {r["backup_id"] for r in rows}
    assert {r["status"] for r in rows} == {"complete"}
    # When each will be pruned: the rehearsal keeps 2, so the newest goes after 2 more backups, the next after 1.
    assert [r["prune_after_backups"] for r in rows[:2]] == [2, 1][: len(rows[:2])]
    assert "after 2 more backups" in next(line for line in out_text.splitlines() if rows[0]["backup_id"] in line)


def test_status_of_one_execution_and_of_the_recent_ones(local: Local, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, local, "status", local.execution)
    assert code == OK
    assert "SUCCEEDED" in out and f"Backup id  {local.backup_id}" in out and "100%" in out

    code, out, _ = cli(capsys, local, "status", local.execution, "--json")
    record = json.loads(out)
    assert code == OK
    assert record["status"] == "SUCCEEDED" and record["kind"] == "backup" and record["instance"] == "demo"
    assert record["backup_id"] == local.backup_id and record["progress"] == 100
    assert record["output"]["status"] == "complete"

    arn = record["execution_arn"]
    code, out, _ = cli(capsys, local, "status", arn, "--json")  # by ARN as well as by name
    assert code == OK and json.loads(out)["execution"] == local.execution

    code, out, _ = cli(capsys, local, "status", "--json")
    assert code == OK
    assert local.execution in {e["execution"] for e in json.loads(out)["executions"]}
    code, out, _ = cli(capsys, local, "status")
    assert code == OK and local.execution in out and "SUCCEEDED" in out


def test_status_follow_prints_each_step_with_the_lock_clock_then_the_result(
    local: Local, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, local, "status", local.execution, "--follow", "--poll-interval", "0.1")
    assert code == OK
    # The steps' lines (the functions' own lines among them are the next test's).
    lines = [line for line in out.splitlines() if "]  INFO: " not in line]
    locked = next(i for i, line in enumerate(lines) if line.endswith(f"{BACKUP.lock.state}: done  (Bitbucket locked)"))
    unlocked = next(
        i for i, line in enumerate(lines) if f"{BACKUP.unlock.state}: done  (Bitbucket unlocked after" in line
    )
    assert locked < unlocked
    # Every step finished while locked carries the lock clock; none before the lock or after the unlock does.
    assert all("[locked " in line for line in lines[locked + 1 : unlocked])
    assert not any("[locked " in line for line in lines[:locked] + lines[unlocked:])
    assert all(re.match(r"^\+ *\d+\.\d s  ", line) for line in lines[: lines.index("")])
    assert f"Backup {local.backup_id}: SUCCEEDED" in out and "backup succeeded" in out

    code, out, _ = cli(capsys, local, "status", local.execution, "--follow", "--json")
    record = json.loads(out)
    assert code == OK and record["status"] == "SUCCEEDED" and record["timeline"][-1].endswith("backup succeeded")

    code, _, err = cli(capsys, local, "status", "--follow")
    assert code == USAGE and "--follow needs an EXECUTION" in err


def test_cancel_stops_a_running_backup_and_the_safety_net_unlocks(
    local: Local, capsys: pytest.CaptureFixture[str]
) -> None:
    original = dict(local.r.instance_config)
    with BitbucketSimulator(password=PASSWORD, drain_seconds=None) as never_drains:
        # The same stored configuration a redeploy would write: this Bitbucket never drains, so the run waits.
        local.r.configure(
            base_url=never_drains.url,
            timing={**original["timing"], "poll_interval_seconds": 1, "drain_poll_slice_seconds": 1},
        )
        try:
            code, out, _ = cli(capsys, local, "backup", "--instance", "demo", "--json")
            assert code == OK
            started = json.loads(out)
            wait_for(lambda: waiting_in(World(never_drains, local.r), started["execution_arn"], "Wait for drain"))
            assert never_drains.locked

            code, out, err = cli(capsys, local, "cancel", started["execution"])
            assert code == OK, err
            assert f"Stopped backup execution {started['execution']}." in out
            assert "safety net unlocks Bitbucket" in out

            # The status change reaches the safety net (EventBridge's part, done by the endpoint's delivery thread).
            def netted() -> bool:
                subjects = [n["subject"] or "" for n in local.r.notifications()]
                return any("ABORTED" in s and "safety net" in s for s in subjects)

            wait_for(netted)
            assert not never_drains.locked and local.r.run_record() is None
            assert never_drains.task and never_drains.task["state"] == "CANCELLED"

            code, out, _ = cli(capsys, local, "status", started["execution"], "--json")
            assert code == OK and json.loads(out)["status"] == "ABORTED"
            code, out, err = cli(capsys, local, "cancel", started["execution"])
            assert code == FAILED and "not running" in one_error_line(err) and out == ""
        finally:
            local.r.configure(base_url=original["base_url"], timing=original["timing"])


def test_restore_into_new_resources(local: Local, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["restore", local.backup_id, "--instance", "demo", "--target-db-id", "restored-demo-cli", "--wait"]
    code, out, err = cli(capsys, local, *args, "--poll-interval", "0.05")
    assert code == OK, out + err
    assert f"Restore of {local.backup_id}: SUCCEEDED" in out
    assert "database: RDS instance restored-demo-cli" in out and "Next steps:" in out
    assert "restore 100%  Restore complete" in err
    rds = local.r.client("rds").describe_db_instances(DBInstanceIdentifier="restored-demo-cli")["DBInstances"]
    assert rds[0]["DBInstanceStatus"] == "available"
    # The home volumes went to the original host's zone (the default without --availability-zone).
    volumes = re.search(r"home: volumes (vol-\w+) \(/dev/xvdf\) in (\S+)", out)
    assert volumes and volumes.group(2) == local.r.resources["zone"], out

    # The same target again: the state machine refuses it before creating anything; the command fails (1).
    code, out, err = cli(capsys, local, *args, "--poll-interval", "0.05", "--json")
    record = json.loads(out)
    assert code == FAILED
    assert record["status"] == "FAILED" and record["failed_step"] == "validate" and "already in use" in record["cause"]
    # Without --json: the cause names the step, so the title does not name it again.
    code, out, _ = cli(capsys, local, *args, "--poll-interval", "0.05")
    assert code == FAILED
    assert f"Restore of {local.backup_id}: FAILED\n" in out and "RestoreRefused: validate: " in out, out
    assert out.count("validate") == 1, out


# --- errors: one line on stderr, a documented exit code ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["list", "--instance", "nope"], NOT_FOUND, "no instance 'nope'"),
        (["backup", "--instance", "nope"], NOT_FOUND, "configured: demo"),
        (["status", "no-such-execution"], NOT_FOUND, "no execution 'no-such-execution'"),
        (["cancel", "no-such-execution"], NOT_FOUND, "no execution 'no-such-execution'"),
        (["status", "not an execution"], USAGE, "neither an execution ARN nor an execution name"),
        (
            ["restore", "demo-20200101-000000", "--instance", "demo", "--target-db-id", "new-db"],
            NOT_FOUND,
            "no backup 'demo-20200101-000000' of instance 'demo'; available: demo-",
        ),
        (["restore", "demo-20200101-000000", "--instance", "demo"], USAGE, "give --target-db-id"),
        (
            ["restore", "demo-20200101-000000", "--instance", "demo", "--target-db-id", "bad_name"],
            USAGE,
            "--target-db-id: String should match pattern",  # the flag typed, not the execution input's field path
        ),
        (["--stack-name", "Other", "list"], NOT_FOUND, "no instances configured under /bitbucket-diy-backup/Other/"),
    ],
)
def test_errors_are_one_line_with_their_exit_code(
    local: Local, capsys: pytest.CaptureFixture[str], args: list[str], code: int, says: str
) -> None:
    got, out, err = cli(capsys, local, *args)
    assert got == code, err
    assert says in one_error_line(err)
    assert out == ""


def test_usage_errors_exit_2(local: Local, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, local, "backup")
    assert code == USAGE and "--instance" in err
    code, _, err = cli(capsys, local, "frobnicate")
    assert code == USAGE and "invalid choice" in err


def test_aws_errors_exit_4(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code = main(["--endpoint-url", "http://127.0.0.1:9", "--region", REGION, "list"])
    assert code == AWS_ERROR and "cannot reach" in one_error_line(capsys.readouterr().err)

    code = main(["--profile", "no-such-profile", "--region", REGION, "list"])
    assert code == AWS_ERROR and "no-such-profile" in one_error_line(capsys.readouterr().err)

    for name in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "SESSION_TOKEN", "SECURITY_TOKEN", "PROFILE"):
        monkeypatch.delenv(f"AWS_{name}", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code = main(["--region", REGION, "list"])
    assert code == AWS_ERROR and "no AWS credentials" in one_error_line(capsys.readouterr().err)


def test_expected_path_is_the_successful_run(local: Local) -> None:
    backup = next(d for name, d in local.r.definitions.items() if name.startswith("Backup"))
    path = expected_path(backup)
    assert path[:4] == ["Start", BACKUP.validate.state, BACKUP.prepare.state, "Host preparation done?"]
    assert path[-1] == "Backup complete"
    assert path.index(BACKUP.lock.state) < path.index(BACKUP.copy.state) < path.index(BACKUP.unlock.state)
    assert not [s for s in path if s.startswith(("Failed", "Wait", "Skipped", "Handle"))]


@pytest.mark.slow
def test_help_from_the_console_script_and_the_module() -> None:
    commands = [[sys.executable, "-m", "bitbucket_backup_cli", "--help"]]
    script = Path(sys.executable).parent / "bitbucket-backup"  # what `make venv` installs (pip install -e .)
    if script.exists():
        commands.append([str(script), "--help"])
    for command in commands:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        words = ("list", "backup", "status", "restore", "cancel", "--endpoint-url", "Exit codes:", "3    not found")
        assert all(word in proc.stdout for word in words), proc.stdout


@pytest.mark.slow
@pytest.mark.long
def test_rehearsal_serve_is_an_endpoint_for_the_command_line_in_another_process() -> None:
    """With the host-copy strategies: an archive backup and its restore, practised with the command line."""
    server = subprocess.Popen(
        [
            *[sys.executable, "-m", "rehearsal", "serve", "--quiet", "--drain-seconds", "0.1"],
            *["--home-strategy", "rsync", "--db-strategy", "postgresql"],
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = restore_hint = None
        for line in server.stdout:  # bounded by the server's own start-up; the test's timeout guards the rest
            found = re.search(r"Local AWS endpoint: (http://127\.0\.0\.1:\d+)", line)
            url = found.group(1) if found else url
            if " restore BACKUP_ID " in line:
                restore_hint = line.split(" restore BACKUP_ID --instance demo ", 1)[1].split()
                break
        assert url and restore_hint, "the server printed no endpoint or no restore hint"
        argv = [sys.executable, "-m", "bitbucket_backup_cli", "--endpoint-url", url, "--region", REGION, "--json"]
        # An operator's shell without AWS credentials: the local endpoint (IAM enforced) knows the CLI's local ones.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        proc = subprocess.run(
            [*argv, "backup", "--instance", "demo", "--wait", "--poll-interval", "0.1"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
        assert proc.returncode == OK, proc.stdout + proc.stderr
        record = json.loads(proc.stdout)
        assert record["status"] == "SUCCEEDED" and record["output"]["status"] == "complete"
        proc = subprocess.run([*argv, "list"], capture_output=True, text=True, timeout=60, check=False, env=env)
        assert proc.returncode == OK, proc.stderr
        (listed,) = json.loads(proc.stdout)["backups"]
        assert listed["status"] == "complete" and listed["parts"] == ["home", "database"], listed
        # The restore the server suggests: the home extracted on its host, the dump restored into a new database.
        restore = [*argv, "restore", listed["backup_id"], "--instance", "demo", *restore_hint]
        proc = subprocess.run(
            [*restore, "--poll-interval", "0.1"], capture_output=True, text=True, timeout=180, check=False, env=env
        )
        assert proc.returncode == OK, proc.stdout + proc.stderr
        restored = json.loads(proc.stdout)
        assert restored["status"] == "SUCCEEDED", restored
        assert restored["output"]["home"]["files"] > 0, restored
        assert restored["output"]["database"]["dbname"] == "demo_restored", restored
        extracted = Path(restore_hint[restore_hint.index("--target-path") + 1], "home")
        assert (extracted / "shared" / "bitbucket.properties").is_file()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def test_logs_merges_the_functions_seed_lines_with_the_steps_under_the_lock_clock(
    local: Local, capsys: pytest.CaptureFixture[str]
) -> None:
    """`logs` (= `status EXECUTION --follow`) reads the functions' lines from CloudWatch Logs, where the local
    runtime delivers them as Lambda does, and prints them in order among the steps with both clocks."""
    code, out, _ = cli(capsys, local, "logs", local.execution, "--poll-interval", "0.1")
    assert code == OK, out
    lines = out[: out.index("\n\n")].splitlines()
    seeds = [line for line in lines if "]  INFO: " in line]
    said = [line.split("]  INFO: ", 1)[1] for line in seeds]
    assert said[0].startswith(f"prepared backup {local.backup_id}")
    assert any(s.startswith("locked with '") for s in said) and "Bitbucket instance unlocked" in said
    assert said.index("Backup progress updated to 100") < said.index("Bitbucket instance unlocked")
    assert any(s.startswith("Waiting for DRAINED state… done (") for s in said), said
    assert any(s.startswith("snapshots completed: home snap-") for s in said), said
    assert said[-1].startswith(f"backup {local.backup_id} complete")
    taken = next(i for i, line in enumerate(lines) if "INFO: locked with '" in line)
    released = next(i for i, line in enumerate(lines) if line.endswith("INFO: Bitbucket instance unlocked"))
    # The lock clock runs from the lock's own line to the unlock's, on the steps' lines and the functions' alike.
    assert all("[locked " in line or line.endswith("(Bitbucket locked)") for line in lines[taken : released + 1])
    assert not any("[locked " in line for line in lines[:taken] + lines[released + 1 :])
    times = [float(re.match(r"^\+ *(\d+\.\d) s  ", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert times == sorted(times)

    # `backup --wait` printed the same lines as they came, on stderr (plain lines: not a terminal).
    waited = local.backup[2].splitlines()
    assert any("[locked " in line and "INFO: locked with '" in line for line in waited), local.backup[2]
    assert any(line.endswith("INFO: Bitbucket instance unlocked") for line in waited)

    code, out, _ = cli(capsys, local, "logs", local.execution, "--json")
    record = json.loads(out)
    assert code == OK and [line for line in record["lines"] if "]  INFO: " in line] == seeds
