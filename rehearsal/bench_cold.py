"""`make bench` (cold starts): what each Lambda handler costs to start, against `import boto3` alone.

Each sample is a fresh interpreter started as the rehearsal's Lambda workers start (`-I -S -B`, only the bundled
asset and the runtime's boto3 on the path, nothing written into the asset) that imports one handler module and
answers the warm-up event `{"warm": true}` for each of its steps (what the warm-up before the lock pays, so that
nothing of it is left for the lock window). Side by side in one run: the asset as it is deployed (its modules
compiled to hash-checked bytecode, stacks/asset.py) and the same asset with its sources only, as it was deployed
before (Lambda's task root is read-only, so each cold start compiled every module again). `import boto3` alone,
the same way, is the yardstick, sampled between the handler's samples. Medians of --runs samples are reported, as
a table and as JSON. Goal: every handler within GOAL_RATIO x boto3.

A third yardstick, LIBRARIES: the libraries the handlers are built on (design.md: Powertools, pydantic models for
the inputs, requests for Bitbucket), imported the same way with nothing of ours. What a handler costs beyond them is
ours to shrink; what they cost together bounds the ratio any handler on them can reach. pydantic imports its model
machinery only when a first model is defined: the yardstick imports it (`pydantic.main`, `pydantic.fields`), so that
it holds what any handler with a model pays.

Two interpreters, side by side in one run: this machine's Python with the rehearsal's asset (what the rehearsal's
workers run), and, when this machine has one, a Python of the Lambda runtime's version with the asset as synth
bundles it for deployment and the runtime's boto3 installed for that version (what Lambda runs).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from functions.models.steps import BACKUP, WORKFLOWS
from rehearsal.lambda_asset import BUILD, LOCAL_PYTHON, RUNTIME_DISTRIBUTIONS, built_asset, runtime_site
from rehearsal.lambda_runtime import INTERPRETER
from stacks.asset import PLATFORM, PYTHON_VERSION, bytecode_python, compile_bytecode

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "functions" / "handlers"
GOAL_RATIO = 1.5
# The handler modules of the steps between the lock and the unlock, and the failure path (warmed before the lock).
LOCKED_PHASE = {step.module for step in BACKUP.locked_phase}
# Each handler module's step handlers, which the probe warms.
STEP_HANDLERS = {
    f"functions.handlers.{m}": [f.name for w in WORKFLOWS.values() for f in w.functions if f.module == m]
    for m in {f.module for w in WORKFLOWS.values() for f in w.functions}
}

# The libraries alone, as the handlers import them (Powertools' logger, metrics and secrets provider).
LIBRARIES = (
    "boto3,pydantic.main,pydantic.fields,requests,aws_lambda_powertools.logging,aws_lambda_powertools.metrics,"
    "aws_lambda_powertools.utilities.parameters.secrets"
)

# A fresh process: time the import of argv[3] (modules separated by commas; the last is answered a warm-up for each
# of argv[4:], when it is a handler), print JSON.
_PROBE = """
import json, sys, time
started = time.perf_counter()
sys.path[:0] = sys.argv[1:3]  # the asset, then the runtime's boto3
for name in sys.argv[3].split(","):
    module = __import__(name, fromlist=["_"])
imported = time.perf_counter() - started
for name in sys.argv[4:]:  # each step handler of the module
    assert getattr(module, name)({"warm": True}, None)["warm"] is True
print(json.dumps({"s": time.perf_counter() - started, "import_s": imported, "modules": len(sys.modules)}))
"""


@dataclass(frozen=True)
class Runtime:
    """An interpreter to sample with, the asset it runs and the directory with the runtime's boto3."""

    python: str
    interpreter: tuple[str, ...]
    asset: Path
    site: Path


def rehearsal_runtime() -> Runtime:
    return Runtime(LOCAL_PYTHON, INTERPRETER, built_asset(), runtime_site())


def deployed_runtime() -> Runtime | None:
    """A Python of the Lambda runtime's version (stacks/asset.py finds it), the asset bundled as synth bundles it for
    deployment, and the runtime's boto3 (this environment's pinned versions) installed and compiled for it; None
    when this machine has no such Python."""
    python = bytecode_python(PYTHON_VERSION)
    if python is None or PYTHON_VERSION == LOCAL_PYTHON:
        return None
    asset = built_asset(python_version=PYTHON_VERSION)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in RUNTIME_DISTRIBUTIONS]
    site = BUILD / "bench-cold" / f"runtime-boto3-{importlib.metadata.version('boto3')}-py{PYTHON_VERSION}"
    if not (site / ".complete").exists():
        shutil.rmtree(site, ignore_errors=True)
        platform_ = ["--platform", PLATFORM, "--python-version", PYTHON_VERSION, "--only-binary=:all:"]
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-t", str(site), *pins, *platform_],
            check=True,
        )
        compile_bytecode(site, PYTHON_VERSION)  # Lambda's runtime ships its boto3 compiled
        (site / ".complete").touch()
    return Runtime(PYTHON_VERSION, (python, "-I", "-S", "-B"), asset, site)


def sources_only(asset: Path) -> Path:
    """The asset without its bytecode: what a deployment without an interpreter of the runtime's version ships."""
    target = BUILD / "bench-cold" / f"{asset.name}.sources-only"
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(asset, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (target / ".complete").touch()
    return target


def sample(module: str, runtime: Runtime, asset: Path | None = None) -> dict[str, Any]:
    asset = asset or runtime.asset
    handlers = STEP_HANDLERS.get(module, [])
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "LAMBDA_TASK_ROOT": str(asset),
        "AWS_LAMBDA_FUNCTION_NAME": "bench-cold",  # as Lambda sets it (functions/handlers/__init__.py reads it)
    }
    proc = subprocess.run(
        [*runtime.interpreter, "-c", _PROBE, str(asset), str(runtime.site), module, *handlers],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=asset,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench_cold: importing {module} failed: {proc.stderr.strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure(module: str, runs: int, runtime: Runtime, plain: Path) -> dict[str, Any]:
    """Samples of `module` (with and without bytecode) interleaved with samples of `import boto3`, so that a busy
    machine slows all three alike."""
    boto3, libraries, samples, uncompiled = [], [], [], []
    for _ in range(runs):
        boto3.append(sample("boto3", runtime)["s"])
        libraries.append(sample(LIBRARIES, runtime)["s"])
        samples.append(sample(module, runtime))
        uncompiled.append(sample(module, runtime, plain)["s"])
    cold = statistics.median(s["s"] for s in samples)
    return {
        "cold_start_s": round(cold, 3),
        "without_bytecode_s": round(statistics.median(uncompiled), 3),
        "boto3_s": round(statistics.median(boto3), 3),
        "libraries_s": round(statistics.median(libraries), 3),
        "ratio": round(cold / statistics.median(boto3), 2),
        "libraries_ratio": round(statistics.median(libraries) / statistics.median(boto3), 2),
        "modules": samples[-1]["modules"],
    }


def handler_modules() -> list[str]:
    return sorted(p.stem for p in HANDLERS.glob("*.py") if not p.stem.startswith("_"))


def measure_runtime(runtime: Runtime, runs: int, only: list[str] | None) -> dict[str, Any]:
    plain = sources_only(runtime.asset)
    handlers = {}
    for name in only or handler_modules():
        found = measure(f"functions.handlers.{name}", runs, runtime, plain)
        found["locked_phase"] = name in LOCKED_PHASE
        handlers[name] = found
    locked = [h for h in handlers.values() if h["locked_phase"]]
    return {
        "python": runtime.python,
        "interpreter": runtime.interpreter[0],
        "boto3_s": round(statistics.median(h["boto3_s"] for h in handlers.values()), 3),
        "libraries_s": round(statistics.median(h["libraries_s"] for h in handlers.values()), 3),
        "libraries_ratio": round(statistics.median(h["libraries_ratio"] for h in handlers.values()), 2),
        "cold_start_s": {name: h["cold_start_s"] for name, h in handlers.items()},
        "handlers": handlers,
        "worst_ratio": max(h["ratio"] for h in handlers.values()),
        "worst_locked_phase_ratio": max((h["ratio"] for h in locked), default=0.0),
    }


def run(runs: int, only: list[str] | None = None, deployed: bool = True) -> dict[str, Any]:
    runtimes = [rehearsal_runtime()]
    if deployed:
        lambda_runtime = deployed_runtime()
        if lambda_runtime is not None:
            runtimes.append(lambda_runtime)
        else:
            print(f"bench_cold: no Python {PYTHON_VERSION} here: only this machine's Python {LOCAL_PYTHON} is measured")
    measured = [measure_runtime(r, runs, only) for r in runtimes]
    return {
        "runs": runs,
        "machine": platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "goal_ratio": GOAL_RATIO,
        "runtimes": measured,
        "worst_ratio": max(m["worst_ratio"] for m in measured),
        # Every function the locked phase calls is warmed before the lock (the definition's warm-up state).
        "cold_starts_in_lock_window": 0,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"cold start: import of each handler + its warm-up answers, a fresh interpreter as a Lambda worker, median "
        f"of {result['runs']} ({result['machine']}, load {result['load_average'][0]})",
    ]
    for runtime in result["runtimes"]:
        role = (
            "the Lambda runtime's version, asset as deployed"
            if runtime["python"] == PYTHON_VERSION
            else ("the rehearsal's workers")
        )
        lines += [
            f"Python {runtime['python']} ({role}):",
            f"{'handler':<22}{'cold_start_s':>13}{'x boto3':>9}{'no bytecode':>13}{'modules':>9}  locked phase",
            f"{'(import boto3 alone)':<22}{runtime['boto3_s']:>13.3f}{1:>9.2f}{'':>13}   (median; each ratio is "
            "against the boto3 samples taken between that handler's)",
            f"{'(the libraries alone)':<22}{runtime['libraries_s']:>13.3f}{runtime['libraries_ratio']:>9.2f}"
            f"{'':>13}   (boto3, pydantic, requests, Powertools: nothing of ours)",
        ]
        for name, h in runtime["handlers"].items():
            mark = "yes" if h["locked_phase"] else ""
            flag = "  over goal" if h["ratio"] > result["goal_ratio"] else ""
            lines.append(
                f"{name:<22}{h['cold_start_s']:>13.3f}{h['ratio']:>9.2f}{h['without_bytecode_s']:>13.3f}"
                f"{h['modules']:>9}  {mark}{flag}"
            )
    lines.append(f"goal: each handler within {result['goal_ratio']} x boto3; worst {result['worst_ratio']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal.bench_cold")
    parser.add_argument("--runs", type=int, default=3, help="fresh interpreters per module; the median is reported")
    parser.add_argument("--handler", action="append", help="only this handler module (repeatable)")
    parser.add_argument("--json", default=".build/bench_cold.json", help="where to write the results")
    parser.add_argument(
        "--local-only", action="store_true", help=f"this machine's Python only, not also a Python {PYTHON_VERSION}"
    )
    args = parser.parse_args(argv)
    result = run(max(1, args.runs), args.handler, deployed=not args.local_only)
    print(table(result))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
