"""The README's sample outputs, made by real runs, so that they cannot drift from what the tools print.

`python -m rehearsal.readme_samples` (`make readme-samples`) runs each sample's command and writes its output into the
README between `<!-- sample: NAME -->` and `<!-- /sample -->`. tests/integration/test_readme_samples.py runs them again
and checks the README against them: exactly where the output is the same on every run (a configuration error),
line for line with the values that change between runs (ports, ids, times, sizes) masked where it is not (the demo).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- sample: (?P<name>[a-z-]+) -->\n```[a-z]*\n)(?P<body>.*?)(\n```\n<!-- /sample -->)", re.S)


def _run(argv: list[str], env: dict[str, str] | None = None, stderr: bool = False) -> str:
    proc = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600, check=False
    )
    return (proc.stderr if stderr else proc.stdout).rstrip("\n")


def demo() -> str:
    """`make demo` as a newcomer runs it: the backup, then the restore of what it made."""
    return _run([sys.executable, "-m", "rehearsal"])


def config_error() -> str:
    """`cdk synth` (app.py, as the CDK CLI runs it) on cdk.json's example with two mistakes in its first instance."""
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    config = context["bitbucket-backup"]
    first = config["instances"][0]
    first["home"] = {**first["home"], "strategy": "amazon-efs"}
    first["schedule"] = "daily"
    # As `make synth` runs it: jsii's warning about this machine's Node.js version is the Makefile's to silence.
    env = {"CDK_CONTEXT_JSON": json.dumps(context), "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    return _run([sys.executable, "app.py"], env=env, stderr=True)


def operator_guide() -> str:
    """The operator's guide: the command line against the local runtime (as `python -m rehearsal serve` serves it),
    through a backup, the catalog, a stuck lock and its unlock, a restore and a drill. The functions' seed lines
    (stderr) are shown; the progress bar's lines (stderr, one per step polled) are left out: how many there are
    depends on the polls."""
    import contextlib
    import io

    from bitbucket_backup_cli.main import main as command_line
    from rehearsal.fake_account import REGION
    from rehearsal.runtime import Rehearsal, local_simulator
    from rehearsal.serve import LocalEndpoint

    shown: list[str] = []
    with contextlib.ExitStack() as stack:
        simulator = stack.enter_context(local_simulator(drain_seconds=0.5))
        world = stack.enter_context(Rehearsal(simulator.url, drill=True))
        endpoint = stack.enter_context(LocalEndpoint(world))

        def run(*args: str) -> str:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = command_line(["--endpoint-url", endpoint.url, "--region", REGION, *args, *_polls(args)])
            said = [line for line in err.getvalue().splitlines() if not _PROGRESS.match(line)]
            shown.extend([f"$ bitbucket-backup {' '.join(args)}", *said, *out.getvalue().rstrip().splitlines()])
            shown.append(f"(exit {code})" if code else "")
            return out.getvalue()

        made = re.search(r"^Backup (\S+): SUCCEEDED$", run("backup", "--instance", "demo", "--wait"), re.M)
        assert made, shown
        run("list")
        # Bitbucket refuses the unlock (and the failure path's): the run fails with Bitbucket left locked.
        shown.append("# Bitbucket refuses the unlock: the backup fails, and says that Bitbucket is still locked")
        simulator.inject("unlock", status=500, times=None)
        run("backup", "--instance", "demo", "--wait")
        simulator.reset_faults()
        run("status", "--state", "failed")
        run("unlock", "demo")
        run("restore", "--instance", "demo")
        run("restore", made.group(1), "--instance", "demo", "--target-db-id", "restored-demo", "--wait")
        run("drill", "--instance", "demo", "--wait")
    return "\n".join(shown).rstrip()


# A progress line of --wait (stderr): how many are printed depends on the polls.
_PROGRESS = re.compile(r"^(backup|restore|drill)\s+\d+%  ")


def _polls(args: tuple[str, ...]) -> list[str]:
    return ["--poll-interval", "0.2"] if "--wait" in args else []


SAMPLES: dict[str, Callable[[], str]] = {
    "demo": demo,
    "config-error": config_error,
    "operator-guide": operator_guide,
}
# What differs from one run of the same command to the next.
_VOLATILE = [
    (re.compile(r"\bcli-(backup|restore|drill)-[a-z0-9-]+-[0-9a-f]{6}\b"), r"cli-\1-EXECUTION"),
    (re.compile(r"\brehearsal-[0-9a-f]{12}\b"), "rehearsal-EXECUTION"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "UUID"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"'[0-9a-f]{4}…'"), "'TOKEN…'"),
    (re.compile(r"\b[a-z][a-z0-9-]*-\d{8}-\d{6}\b"), "BACKUP-ID"),
    (re.compile(r"\b(snap|vol|i)-[0-9a-f]{8,17}\b"), r"\1-ID"),
    (re.compile(r"\d+(\.\d+)?"), "N"),
    (re.compile(r" +"), " "),
]


# Said only when the first check finds Bitbucket still draining: on a slow machine the drain may be over by then.
_TIMING_DEPENDENT = "INFO: Waiting for DRAINED state… ("


def masked(text: str) -> list[str]:
    """The lines with what changes between runs masked, in order; parallel branches may print in either order, so
    the lines are compared as a sorted list."""
    lines = []
    for line in text.splitlines():
        if _TIMING_DEPENDENT in line:
            continue
        for pattern, replacement in _VOLATILE:
            line = pattern.sub(replacement, line)
        lines.append(line.rstrip())
    return sorted(lines)


def blocks(readme: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in BLOCK.finditer(readme)}


def rewrite(readme: str, samples: dict[str, str]) -> str:
    return BLOCK.sub(lambda m: m.group(1) + samples.get(m["name"], m["body"]) + m.group(4), readme)


def main(argv: list[str] | None = None) -> int:
    names = argv if argv else list(SAMPLES)
    unknown = [n for n in names if n not in SAMPLES]
    if unknown:
        print(f"unknown sample {', '.join(unknown)}; known: {', '.join(SAMPLES)}", file=sys.stderr)
        return 2
    readme = README.read_text()
    missing = [n for n in names if n not in blocks(readme)]
    if missing:
        print(f"README.md has no <!-- sample: {missing[0]} --> block", file=sys.stderr)
        return 1
    made = {}
    for name in names:
        print(f"running the {name} sample …", flush=True)
        made[name] = SAMPLES[name]()
    README.write_text(rewrite(readme, made))
    print(f"README.md: {', '.join(names)} rewritten from real runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
