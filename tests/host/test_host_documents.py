"""The stack's SSM documents run for real (issue 10, finding 2): rendered as SSM would render them and run with `sh`,
as the SSM agent runs them. The host script is installed into a directory of its own (0700, the running user's) and
checked before every run; a copy with the right hash but another owner or a wider mode is refused, and so are work
directories another user owns or may enter. Here the "root" of a real host is the user running the tests
(the checks compare with `id -u`); giving a file to another user needs root, which CI has.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from functions.models.host_operations import (
    DIR_VARIABLE,
    NOT_INSTALLED,
    OPERATIONS,
    UNSAFE,
    body,
    content,
    script,
)
from rehearsal.ssm_documents import InvalidParameters, render_content
from tests.host.conftest import SCRIPT, run

NOBODY = 65534
Host = tuple[Path, Callable[..., subprocess.CompletedProcess[str]]]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root (CI runs as root)")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """The install directory of this test's host, and a function that runs a document there."""
    install_dir = tmp_path / "opt" / "bitbucket-diy-backup"

    def send(operation: str, **parameters: str) -> subprocess.CompletedProcess[str]:
        rendered = render_content(content(OPERATIONS[operation]), operation, {k: [v] for k, v in parameters.items()})
        return subprocess.run(
            ["sh", "-c", rendered.script],
            env={**os.environ, DIR_VARIABLE: str(install_dir)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return install_dir, send


def installed(install_dir: Path) -> Path:
    return install_dir / script()[2]


def drill_check(
    send: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """A document that runs the host script (a home without repositories passes its check)."""
    (tmp_path / "restored").mkdir(exist_ok=True)
    return send("DrillCheck", home=str(tmp_path / "restored"), sample="3")


def test_install_makes_a_private_directory_and_every_run_checks_the_script(host: Host, tmp_path: Path) -> None:
    install_dir, send = host
    assert drill_check(send, tmp_path).returncode == NOT_INSTALLED

    first = send("InstallScript")
    assert first.returncode == 0, first.stderr
    path = installed(install_dir)
    assert path.read_bytes() == SCRIPT.read_bytes()
    assert (install_dir.stat().st_mode & 0o777, path.stat().st_mode & 0o777) == (0o700, 0o700)
    assert install_dir.stat().st_uid == path.stat().st_uid == os.geteuid()
    assert send("InstallScript").returncode == 0  # the same copy: nothing to do

    ran = drill_check(send, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert '"subcommand": "drill-check"' in ran.stdout


def test_a_changed_script_is_refused_before_it_runs(host: Host, tmp_path: Path) -> None:
    install_dir, send = host
    assert send("InstallScript").returncode == 0
    path = installed(install_dir)
    marker = tmp_path / "ran"
    path.write_text(f"#!/bin/bash\ntouch {marker}\n")
    ran = drill_check(send, tmp_path)
    assert ran.returncode == UNSAFE and "does not match its SHA-256" in ran.stderr
    assert not marker.exists()
    # Installing again replaces the changed copy (the directory is still the tool's own).
    assert send("InstallScript").returncode == 0 and drill_check(send, tmp_path).returncode == 0


@needs_root
def test_a_copy_with_the_right_hash_but_another_owner_is_refused(host: Host, tmp_path: Path) -> None:
    install_dir, send = host
    assert send("InstallScript").returncode == 0
    path = installed(install_dir)
    os.chown(path, NOBODY, NOBODY)
    ran = drill_check(send, tmp_path)
    assert ran.returncode == UNSAFE and f"belongs to uid {NOBODY}" in ran.stderr, ran.stderr


def test_a_copy_with_the_right_hash_but_a_wider_mode_is_refused(host: Host, tmp_path: Path) -> None:
    install_dir, send = host
    assert send("InstallScript").returncode == 0
    installed(install_dir).chmod(0o720)  # group-writable
    ran = drill_check(send, tmp_path)
    assert ran.returncode == UNSAFE and "mode 720" in ran.stderr, ran.stderr
    installed(install_dir).chmod(0o700)
    install_dir.chmod(0o755)  # anyone may enter the directory
    ran = drill_check(send, tmp_path)
    assert ran.returncode == UNSAFE and "mode 755" in ran.stderr, ran.stderr


def test_a_symbolic_link_in_place_of_the_script_is_refused(host: Host, tmp_path: Path) -> None:
    install_dir, send = host
    assert send("InstallScript").returncode == 0
    path = installed(install_dir)
    elsewhere = tmp_path / "elsewhere.sh"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    ran = drill_check(send, tmp_path)
    assert ran.returncode == UNSAFE and "symbolic link" in ran.stderr


@needs_root
def test_install_refuses_a_directory_another_user_prepared(host: Host, tmp_path: Path) -> None:
    """Today's flaw: a file with the right hash was accepted whoever put it there."""
    install_dir, send = host
    install_dir.mkdir(parents=True, mode=0o700)
    installed(install_dir).write_bytes(SCRIPT.read_bytes())
    os.chown(install_dir, NOBODY, NOBODY)
    os.chown(installed(install_dir), NOBODY, NOBODY)
    ran = send("InstallScript")
    assert ran.returncode == UNSAFE and f"belongs to uid {NOBODY}" in ran.stderr, ran.stderr
    assert installed(install_dir).stat().st_uid == NOBODY  # untouched


def test_install_refuses_a_directory_under_a_parent_others_may_write(host: Host, tmp_path: Path) -> None:
    install_dir, send = host
    install_dir.parent.mkdir(parents=True)
    install_dir.parent.chmod(0o777)  # not sticky: another user could rename the directory away and put theirs there
    ran = send("InstallScript")
    assert ran.returncode == UNSAFE and "other users may write to the parent" in ran.stderr, ran.stderr


# ------------------------------------------------------------------------------------------------ work directories


def test_work_directories_are_created_private(tmp_path: Path) -> None:
    work = tmp_path / "new" / "work"
    summary = run("workdir", "--path", work).summary
    assert summary["path"] == str(work)
    assert work.stat().st_mode & 0o777 == 0o700 and work.stat().st_uid == os.geteuid()


def test_a_world_writable_work_directory_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)
    result = run("workdir", "--path", work)
    result.assert_error(UNSAFE, "workdir")
    assert "mode 777" in result.stderr
    # The archive step writes into its work directory: refused there too (today it wrote into it).
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    (staging / "f").write_text("x")
    result = run("archive", "--staging", staging, "--out", work / "a.tar.gz", "--backup-id", "b-1", "--instance", "i")
    result.assert_error(UNSAFE, "archive")
    assert list(work.iterdir()) == []


@needs_root
def test_a_staging_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    home, staging = tmp_path / "home", tmp_path / "staging"
    home.mkdir()
    (home / "f").write_text("x")
    staging.mkdir(mode=0o700)
    os.chown(staging, NOBODY, NOBODY)
    result = run("rsync-home", "--home", home, "--staging", staging)
    result.assert_error(UNSAFE, "rsync-home")
    assert f"belongs to uid {NOBODY}" in result.stderr
    assert list(staging.iterdir()) == []


def test_a_dump_directory_under_a_world_writable_parent_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = run("workdir", "--path", shared / "dumps")
    result.assert_error(UNSAFE, "workdir")
    assert f"other users may write to {shared}" in result.stderr


def test_the_staging_directory_stays_private_after_rsync(tmp_path: Path) -> None:
    """rsync gives the staging directory the home's mode (0755); the script makes it private again."""
    home, staging = tmp_path / "home", tmp_path / "staging"
    home.mkdir(mode=0o755)
    (home / "f").write_text("x")
    for _ in range(2):
        run("rsync-home", "--home", home, "--staging", staging).ok()
        assert staging.stat().st_mode & 0o777 == 0o700


# ------------------------------------------------------------------------------------------------ the documents


def test_no_temporary_name_is_ever_reserved_without_creating_it() -> None:
    """mktemp -u hands out a name another user can take first (a link where the download goes): gone."""
    texts = [body(op) for op in OPERATIONS.values()] + [SCRIPT.read_text()]
    assert not any("mktemp -u" in t for t in texts)
    assert "mktemp -d '{{ workPath }}'/.restore-home." in body(OPERATIONS["RestoreHome"])


def test_a_value_outside_its_allowed_pattern_is_refused_before_anything_runs() -> None:
    doc = content(OPERATIONS["RestoreHome"])
    good = {"bucket": ["bkt"], "key": ["demo/b/b-home.tar.gz"], "workPath": ["/w"], "target": ["/t"], "owner": ["bb"]}
    assert "--target '/t'" in render_content(doc, "RestoreHome", good).script
    for field, value in [("target", "/t'; rm -rf / #"), ("owner", "root\nid"), ("key", "$(id)")]:
        with pytest.raises(InvalidParameters, match=f"Parameter {field} value"):
            render_content(doc, "RestoreHome", good | {field: [value]})
    with pytest.raises(InvalidParameters, match="does not support parameters: commands"):
        render_content(doc, "RestoreHome", good | {"commands": ["id"]})
    with pytest.raises(InvalidParameters, match="requires parameter target"):
        render_content(doc, "RestoreHome", {k: v for k, v in good.items() if k != "target"})
