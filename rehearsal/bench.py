"""`make bench`: what the orchestrator itself adds to Bitbucket's downtime, and what a backup costs.

For a simulator whose drain takes D seconds: lock window, drain time, their difference (the orchestrator's own
share of the lock window), state transitions and cost at Step Functions Standard prices; the same with a home
volume and a database a hundred times larger (the share must not grow); and the import time of each handler
module (a cold start pays it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from rehearsal.cli import summarize
from rehearsal.lambda_runtime import ROOT_HANDLERS
from rehearsal.runtime import Rehearsal, local_simulator

GOAL_SHARE_S = 2.0


def one_run(drain_s: float, home_gb: int, db_gb: int, poll_interval_s: int) -> dict[str, Any]:
    with (
        local_simulator(drain_seconds=drain_s) as sim,
        Rehearsal(sim.url, timing={"poll_interval_seconds": poll_interval_s}, sizes=(home_gb, db_gb)) as rehearsal,
    ):
        result = rehearsal.run_backup(timeout=drain_s + 120)
        summary = summarize(result, rehearsal)
    if summary["status"] != "SUCCEEDED":
        raise SystemExit(f"benchmark run failed: {summary['error']}")
    return summary


def import_times() -> dict[str, float]:
    times = {}
    for module in sorted(p.stem for p in ROOT_HANDLERS.glob("*.py") if not p.stem.startswith("_")):
        code = (
            f"import time; t = time.perf_counter(); import functions.handlers.{module}; print(time.perf_counter() - t)"
        )
        samples = [
            float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(3)
        ]
        times[module] = round(min(samples), 3)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.bench")
    parser.add_argument("--drains", default="1,3", help="simulated drain times in seconds (default 1,3)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the median is reported")
    parser.add_argument("--poll-interval", type=int, default=1, help="drain poll interval in seconds (default 1)")
    parser.add_argument("--json", default=".build/bench.json", help="where to write the results")
    args = parser.parse_args(argv)

    cases = []
    for drain in (float(d) for d in args.drains.split(",")):
        for home_gb, db_gb in ((100, 50), (10_000, 5_000)):
            runs = [one_run(drain, home_gb, db_gb, args.poll_interval) for _ in range(args.repeat)]
            cases.append(
                {
                    "drain_configured_s": drain,
                    "home_gb": home_gb,
                    "db_gb": db_gb,
                    "lock_window_s": statistics.median(r["lock_window_s"] for r in runs),
                    "drain_s": statistics.median(r["drain_s"] for r in runs),
                    "orchestrator_share_s": statistics.median(r["lock_window_s"] - r["drain_s"] for r in runs),
                    "state_transitions": runs[0]["state_transitions"],
                    "cost_usd": runs[0]["cost_usd"],
                }
            )
    print(
        f"{'drain':>6} {'home GB':>8} {'db GB':>6} {'lock s':>7} {'drain s':>8} {'share s':>8} "
        f"{'transitions':>11} {'cost USD':>9}"
    )
    for c in cases:
        print(
            f"{c['drain_configured_s']:>6g} {c['home_gb']:>8} {c['db_gb']:>6} {c['lock_window_s']:>7.3f} "
            f"{c['drain_s']:>8.3f} {c['orchestrator_share_s']:>8.3f} {c['state_transitions']:>11} "
            f"{c['cost_usd']:>9.6f}"
        )
    imports = import_times()
    print("\nhandler import time (cold start share), seconds:")
    for module, seconds in imports.items():
        print(f"  {module:<16} {seconds:.3f}")
    worst = max(c["orchestrator_share_s"] for c in cases)
    spread = max(c["orchestrator_share_s"] for c in cases) - min(c["orchestrator_share_s"] for c in cases)
    verdict = "met" if worst < GOAL_SHARE_S else "NOT met"
    print(
        f"\norchestrator share of the lock window: at most {worst:.3f} s (goal < {GOAL_SHARE_S:g} s: {verdict}); "
        f"spread across home/database sizes {spread:.3f} s"
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cases": cases, "import_s": imports, "goal_met": worst < GOAL_SHARE_S}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
