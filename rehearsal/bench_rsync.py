"""Benchmark of the rsync home strategy (not a test): is the locked second pass small next to the first?

Generates a Bitbucket-like home of git repositories (bare repositories under shared/data/repositories, written with
`git fast-import`, so the data is real packfiles, loose objects and refs), runs the host script's first `rsync-home`
pass into an empty staging directory, then a pass with nothing changed (the cost of comparing every file: the floor
of the lock window), changes about 1 % of the data (new commits pushed into some repositories) and times the second
pass, the one that runs under Bitbucket's maintenance lock. The same again for a home twice as large with the same
absolute churn: the lock window should follow the changed data, not the size of the home.

    python -m rehearsal.bench_rsync [--size-mb 1024] [--churn-percent 1] [--rounds 3] [--out .build/bench-rsync.json]

The no-op and second passes are repeated (--rounds, each time with new churn) and their medians reported; the disks
are synced before each timed pass. All passes read a warm page cache (the data was just written), which flatters the
first pass; on a real host the first pass reads cold disks or NFS and the ratio is smaller still.

Side by side on the same data (--parallel N, default 4): a second staging copy is kept by the host script's
`--parallel N` passes (the repositories sharded over N rsyncs), and each round times both second passes on the same
churned home, in alternating order. Goal for the sharded locked pass: GOAL_PARALLEL_RATIO of the single first pass.

And the locked pass that lists only what changed (`--scan changed`, `home.locked_pass_scan: changed`): a third
staging copy, its no-op and second passes timed in the same rounds on the same churned home. Goal for it as well:
GOAL_PARALLEL_RATIO of the single first pass.

And with a btrfs snapshot instead of the locked pass (--snapshot, the default as root): the homes are generated on a
btrfs file system on a loop device, in a subvolume, and each round also times the host script's `fs-snapshot` of
the same churned home: what the lock holds with `home.snapshot: btrfs`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rehearsal.hostworld import btrfs_subvolume, btrfs_volume

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "functions" / "host" / "bitbucket-backup-host.sh"
DEFAULT_OUT = ROOT / ".build" / "bench-rsync.json"
GOAL_RATIO = 0.15
GOAL_PARALLEL_RATIO = 0.08
MB = 1024 * 1024
REPO_MB = 5  # average repository size
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


@dataclass
class PassResult:
    wall_s: float
    rsync_s: float
    files_transferred: int
    bytes_transferred: int


@dataclass
class Run:
    home_mb: float
    repositories: int
    files: int
    churn_mb: float
    churned_repositories: int
    first_pass: PassResult
    noop_pass: PassResult
    second_pass: PassResult
    second_pass_samples_s: list[float]
    ratio: float
    meets_goal: bool
    workflow: dict[str, Any]
    parallel: int = 1
    noop_pass_parallel: PassResult | None = None
    second_pass_parallel: PassResult | None = None
    ratio_parallel: float = 0.0
    meets_parallel_goal: bool = False
    noop_pass_changed: PassResult | None = None
    second_pass_changed: PassResult | None = None
    ratio_changed: float = 0.0
    meets_changed_goal: bool = False
    snapshot_s: float | None = None  # median wall time of the btrfs snapshot (the locked step with snapshots)
    snapshot_ratio: float | None = None


def _git(*args: str | Path, stdin: bytes | None = None) -> None:
    subprocess.run(
        # Random blobs do not compress: storing them uncompressed and without delta search makes generation fast.
        ["git", "-c", "core.compression=0", "-c", "pack.compression=0", "-c", "core.fsync=none", *map(str, args)],
        input=stdin,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
    )


def _fast_import_stream(rng: random.Random, total_bytes: int, commits: int, first_mark: int, append: bool) -> bytes:
    """A fast-import stream of `commits` commits on main, together about `total_bytes` of new blobs."""
    parts: list[bytes] = []
    mark = first_mark
    per_commit = max(1, total_bytes // commits)
    when = 1_700_000_000 + first_mark * 60
    for c in range(commits):
        files = []
        remaining = per_commit
        while remaining > 0:
            size = min(remaining, rng.randint(per_commit // 4 + 1, per_commit // 2 + 2))
            remaining -= size
            parts.append(b"blob\nmark :%d\ndata %d\n" % (mark, size) + os.urandom(size) + b"\n")
            files.append((mark, f"dir{rng.randint(0, 9)}/file-{mark}.bin"))
            mark += 1
        message = f"commit {mark}\n".encode()
        header = b"commit refs/heads/main\nmark :%d\ncommitter Bench <bench@example.com> %d +0000\ndata %d\n" % (
            mark,
            when + c,
            len(message),
        )
        parts.append(header + message)
        if append and c == 0:
            parts.append(b"from refs/heads/main^0\n")
        parts.extend(b"M 100644 :%d %s\n" % (m, path.encode()) for m, path in files)
        parts.append(b"\n")
        mark += 1
    return b"".join(parts)


def generate_home(home: Path, size_mb: float, seed: int = 1) -> list[Path]:
    """A home of about size_mb MB: bare repositories of 1-9 MB, each a few dozen commits, plus a few config files."""
    rng = random.Random(seed)
    repos_root = home / "shared" / "data" / "repositories"
    repos_root.mkdir(parents=True)
    (home / "shared" / "bitbucket.properties").write_text("setup.displayName=bench\n")
    for rel in ("caches/idx/x", "log/atlassian-bitbucket.log", "tmp/t"):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_bytes(os.urandom(4096))
    target = int(size_mb * MB)
    written = 0
    repos = []
    repo_id = 1
    while written < target:
        size = min(target - written, rng.randint(1 * MB, (2 * REPO_MB - 1) * MB))
        repo = repos_root / str(repo_id)
        _git("init", "-q", "--bare", repo)
        stream = _fast_import_stream(rng, size, rng.randint(10, 30), 1, False)
        _git("-C", repo, "fast-import", "--quiet", "--depth=0", stdin=stream)
        _git("-C", repo, "tag", "v1", "main")
        _git("-C", repo, "branch", "develop", "main")
        repos.append(repo)
        written += size
        repo_id += 1
    return repos


def churn(repos: list[Path], churn_mb: float, seed: int = 2) -> int:
    """Push about churn_mb MB of new commits into some repositories (about 1 MB each); returns how many."""
    rng = random.Random(seed)
    count = max(1, round(churn_mb))
    chosen = rng.sample(repos, min(count, len(repos)))
    per_repo = int(churn_mb * MB / len(chosen))
    for repo in chosen:
        stream = _fast_import_stream(rng, per_repo, 3, 1_000_000, True)
        _git("-C", repo, "fast-import", "--quiet", "--depth=0", stdin=stream)
    return len(chosen)


def rsync_pass(home: Path, staging: Path, parallel: int = 1, scan: str = "full") -> PassResult:
    start = time.perf_counter()
    flags = ["--parallel", str(parallel), "--scan", scan]
    proc = subprocess.run(
        [str(SCRIPT), "rsync-home", "--home", str(home), "--staging", str(staging), *flags],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"rsync-home failed (exit {proc.returncode}): {proc.stderr.strip()}")
    summary: dict[str, Any] = json.loads(proc.stdout)
    if summary["scan"] != scan:  # the changed scan fell back to a full one: it would not measure what it says
        raise SystemExit(f"rsync-home scanned {summary['scan']} instead of {scan}: {proc.stderr.strip()}")
    return PassResult(
        round(wall, 3), float(summary["seconds"]), summary["files_transferred"], summary["bytes_transferred"]
    )


def _beside(name: str, noops: list[PassResult], seconds: list[PassResult], first: PassResult) -> dict[str, Any]:
    """The medians of a locked pass measured beside the single one (sharded, changed scan), against its goal."""
    second = median_pass(seconds)
    ratio = second.wall_s / first.wall_s if first.wall_s else 0.0
    return {
        f"noop_pass_{name}": median_pass(noops),
        f"second_pass_{name}": second,
        f"ratio_{name}": round(ratio, 4),
        f"meets_{name}_goal": ratio <= GOAL_PARALLEL_RATIO,
    }


def median_pass(samples: list[PassResult]) -> PassResult:
    return sorted(samples, key=lambda p: p.wall_s)[len(samples) // 2]


def snapshot_pass(home: Path, snapshots: Path, name: str) -> float:
    """The btrfs snapshot the lock would hold (timed), then its removal (after the unlock, not timed)."""
    os.sync()
    start = time.monotonic()
    taken = subprocess.run(
        [str(SCRIPT), "fs-snapshot", "--home", str(home), "--snapshots", str(snapshots), "--name", name],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - start
    if taken.returncode != 0:
        raise RuntimeError(f"fs-snapshot failed: {taken.stderr.strip()}")
    subprocess.run(
        [str(SCRIPT), "fs-snapshot", "--snapshots", str(snapshots), "--name", name, "--remove"],
        capture_output=True, check=True,
    )  # fmt: skip
    return seconds


def one_run(
    workdir: Path, size_mb: float, churn_mb: float, rounds: int, parallel: int = 1, snapshot: bool = False
) -> Run:
    """First pass; then, `rounds` times, a no-op pass and a churn + second pass; medians of those. With parallel > 1,
    the same into a second staging copy with `--parallel`, on the same data, in alternating order; and into a third
    with `--scan changed`. With snapshot, all of it on a btrfs file system, and each round also times a snapshot of
    the churned home."""
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=workdir, prefix="bench-rsync-"))
        data = Path(tmp)
        if snapshot:  # the home, its three staging copies and the snapshots on one btrfs file system
            data = stack.enter_context(btrfs_volume(Path(tmp), size_mb=int(size_mb * 5) + 512))
            btrfs_subvolume(data / "home")
        home, staging, sharded = data / "home", data / "staging", data / "staging-sharded"
        changed = data / "staging-changed"
        repos = generate_home(home, size_mb)
        files = sum(len(names) for _dir, _subdirs, names in os.walk(home))
        os.sync()
        first = rsync_pass(home, staging)
        if parallel > 1:
            rsync_pass(home, sharded, parallel)
        rsync_pass(home, changed)  # the live pass is always a full one
        noops: list[PassResult] = []
        seconds: list[PassResult] = []
        noops_p: list[PassResult] = []
        seconds_p: list[PassResult] = []
        noops_c: list[PassResult] = []
        seconds_c: list[PassResult] = []
        churned = 0
        snapshots: list[float] = []
        for i in range(rounds):
            order = [(1, "full", staging, noops, seconds), (1, "changed", changed, noops_c, seconds_c)]
            if parallel > 1:
                order.insert(1, (parallel, "full", sharded, noops_p, seconds_p))
            if i % 2:
                order.reverse()
            for n, scan, target, noop_list, _ in order:
                # In production the first pass ends long before the lock: let its writes reach the disk first, so the
                # timed pass does not compete with their writeback.
                os.sync()
                noop_list.append(rsync_pass(home, target, n, scan))  # nothing changed: the floor of the scan
            churned = churn(repos, churn_mb, seed=100 + i)
            for n, scan, target, _, second_list in order:
                os.sync()
                second_list.append(rsync_pass(home, target, n, scan))
            if snapshot:
                snapshots.append(snapshot_pass(home, data / "snapshots", f"bench-{i}"))
        workflow = workflow_run(home, repos, churn_mb)
    noop, second = median_pass(noops), median_pass(seconds)
    ratio = second.wall_s / first.wall_s if first.wall_s else 0.0
    extra: dict[str, Any] = {}
    if snapshots:
        taken = sorted(snapshots)[len(snapshots) // 2]
        extra |= {
            "snapshot_s": round(taken, 4),
            "snapshot_ratio": round(taken / first.wall_s, 4) if first.wall_s else 0,
        }
    extra |= _beside("changed", noops_c, seconds_c, first)
    if parallel > 1:
        extra |= {"parallel": parallel, **_beside("parallel", noops_p, seconds_p, first)}
    return Run(
        home_mb=size_mb,
        repositories=len(repos),
        files=files,
        churn_mb=churn_mb,
        churned_repositories=churned,
        first_pass=first,
        noop_pass=noop,
        second_pass=second,
        second_pass_samples_s=[p.wall_s for p in seconds],
        ratio=round(ratio, 4),
        meets_goal=ratio <= GOAL_RATIO,
        workflow=workflow,
        **extra,
    )


def workflow_run(home: Path, repos: list[Path], churn_mb: float) -> dict[str, Any]:
    """The whole backup workflow on this home (rsync strategy, no database) in the rehearsal: the live first pass into
    an empty staging directory, churn landing just before the locked pass, the archive after the unlock. Reports the
    lock window the workflow measured (lock to unlock, including the drain and the orchestration)."""
    from rehearsal.local_host import HostCommand
    from rehearsal.runtime import Rehearsal, local_simulator

    def churn_after_live_pass(command: HostCommand) -> None:
        # Users push between the live pass and the lock; the changed data is what the locked pass moves.
        if ".sh rsync-home " in command.script:
            passes.append(time.monotonic())
            if len(passes) == 1:
                churn(repos, churn_mb, seed=999)
                os.sync()

    passes: list[float] = []
    with (
        local_simulator(password="bench-Passw0rd", drain_seconds=0.1) as sim,
        Rehearsal(sim.url, password="bench-Passw0rd", home="rsync", database="none", home_path=home) as r,
    ):
        r.host.after_run.append(churn_after_live_pass)
        result = r.run_backup(timeout=3600)
        output = result.output or {}
        archive = (output.get("archive") or [{}])[0]
        return {
            "status": result.status,
            "lock_window_s": output.get("lock_window_s"),
            "drain_s": output.get("drain_s"),
            "duration_s": output.get("duration_s"),
            "archive_bytes": int(archive.get("size") or 0),
        }


def table(runs: list[Run]) -> str:
    lines = [
        f"{'home':>9} {'repos':>6} {'files':>7} {'churn':>8} {'first pass':>11} {'no-op pass':>11} "
        f"{'second pass':>12} {'moved':>9} {'ratio':>7} {'lock window':>12}  goal <= {GOAL_RATIO:.0%}"
        f"  | sharded: no-op, second pass, ratio (goal <= {GOAL_PARALLEL_RATIO:.0%})"
        f"  | changed scan: no-op, second pass, ratio (goal <= {GOAL_PARALLEL_RATIO:.0%})"
    ]
    for r in runs:
        moved = r.second_pass.bytes_transferred / MB
        verdict = "ok" if r.meets_goal else "MISSED"
        lines.append(
            f"{r.home_mb:>6.0f} MB {r.repositories:>6} {r.files:>7} {r.churn_mb:>5.1f} MB {r.first_pass.wall_s:>9.2f} s"
            f" {r.noop_pass.wall_s:>9.2f} s {r.second_pass.wall_s:>10.2f} s {moved:>6.1f} MB {r.ratio:>7.1%}"
            f" {r.workflow.get('lock_window_s') or 0:>10.2f} s  {verdict}"
            + (
                f"  | x{r.parallel}: {r.noop_pass_parallel.wall_s:.2f} s, {r.second_pass_parallel.wall_s:.2f} s,"
                f" {r.ratio_parallel:.1%} {'ok' if r.meets_parallel_goal else 'MISSED'}"
                if r.noop_pass_parallel and r.second_pass_parallel
                else ""
            )
            + (
                f"  | changed: {r.noop_pass_changed.wall_s:.2f} s, {r.second_pass_changed.wall_s:.2f} s,"
                f" {r.ratio_changed:.1%} {'ok' if r.meets_changed_goal else 'MISSED'}"
                if r.noop_pass_changed and r.second_pass_changed
                else ""
            )
            + (f"  | btrfs snapshot: {r.snapshot_s:.3f} s, {r.snapshot_ratio:.2%}" if r.snapshot_s is not None else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=float, default=1024, help="size of the smaller home (default 1024)")
    parser.add_argument("--churn-percent", type=float, default=1.0, help="data changed between passes (default 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    parser.add_argument("--rounds", type=int, default=3, help="churn + second pass rounds, median reported")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where homes are generated")
    parser.add_argument("--parallel", type=int, default=4, help="shards of the sharded passes (1: single passes only)")
    parser.add_argument(
        "--snapshot",
        action=argparse.BooleanOptionalAction,
        default=os.geteuid() == 0 and shutil.which("mkfs.btrfs") is not None,
        help="also time a btrfs snapshot of the churned home, everything on a btrfs loop device (default: as root)",
    )
    args = parser.parse_args(argv)

    churn_mb = args.size_mb * args.churn_percent / 100
    sizes = (args.size_mb, 2 * args.size_mb)
    runs = [one_run(args.workdir, size, churn_mb, args.rounds, args.parallel, args.snapshot) for size in sizes]
    growth = runs[1].second_pass.wall_s / runs[0].second_pass.wall_s if runs[0].second_pass.wall_s else 0.0
    report = {
        "goal_ratio": GOAL_RATIO,
        "goal_parallel_ratio": GOAL_PARALLEL_RATIO,
        "churn_mb": churn_mb,
        "runs": [asdict(r) for r in runs],
        "second_pass_growth_for_double_home": round(growth, 3),
        "meets_goal": all(r.meets_goal for r in runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(runs))
    print(f"second pass for a home twice as large (same churn): x{growth:.2f}")
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
