"""`python -m bench [--only SECTION ...]`: run the benchmark sections (SPEC §12)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import Figure, capacity, hostile, live, load, soak
from bench import engine as engine_bench

RESULTS = Path(__file__).resolve().parent / "results.json"

# Every section, in run order. A new one is one more entry.
SECTIONS: dict[str, Callable[[], list[Figure]]] = {
    "engine": engine_bench.run,
    "live": live.run,
    "load": load.run,
    "soak": soak.run,
    "hostile": hostile.run,
    "capacity": capacity.run,
}
# Long sections run only when named with --only.
OPT_IN = {"load", "soak", "capacity"}


def _machine() -> dict[str, object]:
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=RESULTS.parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_device": "cuda" if torch.cuda.is_available() else "cpu",
        "commit": commit,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _table(figures: list[Figure]) -> str:
    lines = [f"{'section':<8} {'figure':<52} {'value':>10} {'unit':<6} {'goal':<10} ok"]
    for f in figures:
        mark = {True: "yes", False: "MISSED", None: ""}[f.ok]
        lines.append(
            f"{f.section:<8} {f.name:<52} {f.value:>10.2f} {f.unit:<6} {f.goal or '':<10} {mark}"
        )
    return "\n".join(lines)


def _merge(machine: dict[str, object], ran: list[str], figures: list[Figure]) -> dict[str, object]:
    """This run's figures, plus other sections' figures kept from the previous report, so that
    `--only load` adds to a full run instead of replacing it. `runs` says which run (machine,
    commit, date) measured each section."""
    kept: list[dict[str, object]] = []
    runs: dict[str, object] = {}
    try:
        previous = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        previous = {}
    if isinstance(previous, dict):
        old_runs = previous.get("runs") or {}
        for fig in previous.get("figures") or []:
            section = fig.get("section")
            if section not in ran:
                kept.append(fig)
                runs[section] = old_runs.get(section, previous.get("machine"))
    for name in ran:
        runs[name] = machine
    return {
        "machine": machine,
        "runs": runs,
        "figures": kept + [f.to_json() for f in figures],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="sections to run")
    args = parser.parse_args(argv)
    figures: list[Figure] = []
    ran: list[str] = []
    for name, section in SECTIONS.items():
        if (args.only and name not in args.only) or (not args.only and name in OPT_IN):
            continue
        print(f"running {name} ...", flush=True)
        figures.extend(section())
        ran.append(name)
    machine = _machine()
    report = _merge(machine, ran, figures)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(figures))
    print(f"wrote {RESULTS}")
    missed = [f for f in figures if f.ok is False]
    for f in missed:
        print(f"goal missed: {f.section} {f.name} = {f.value:.2f} {f.unit} (goal {f.goal})")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
