"""`extract`'s target, run for real: only what was extracted is re-owned (never a directory that was there before),
and a target reached through a symbolic link is refused (the Lambda checked the path as given against the allowed
restore roots; the link could point anywhere)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.host.conftest import EXIT_REFUSED, BitbucketHome, run
from tests.host.test_host_script import archive


def archived(home: BitbucketHome, tmp_path: Path) -> Path:
    staging, out = tmp_path / "staging", tmp_path / "b.tar.gz"
    run("rsync-home", "--home", home.root, "--staging", staging).ok()
    archive(staging, out)
    return out


def test_a_pre_existing_empty_target_keeps_its_owner(home: BitbucketHome, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    out = archived(home, tmp_path)
    target = tmp_path / "existing"
    target.mkdir(mode=0o750)
    before = target.stat()
    run("extract", "--archive", out, "--target", target, "--owner", "nobody").ok()
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True, check=True).stdout)
    # Everything extracted belongs to the owner; the directory somebody made beforehand stays theirs.
    assert sorted(p.name for p in target.iterdir()) == ["home", "manifest.json"]
    assert {p.stat().st_uid for p in target.rglob("*")} == {nobody}
    after = target.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)


@pytest.mark.parametrize("via", ["link", "dotdot"])
def test_a_target_that_is_not_a_plain_path_is_refused(home: BitbucketHome, tmp_path: Path, via: str) -> None:
    out = archived(home, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "allowed").mkdir()
    if via == "link":
        (tmp_path / "allowed" / "link").symlink_to(elsewhere)
        target = f"{tmp_path}/allowed/link/restored"
    else:
        target = f"{tmp_path}/allowed/../elsewhere/restored"
    result = run("extract", "--archive", out, "--target", target)
    result.assert_error(EXIT_REFUSED, "extract")
    assert "not a plain path" in result.stderr
    assert list(elsewhere.iterdir()) == []
