"""Every benchmark, every target: one table of figures and verdicts.

    python -m bench.report [--sets 1] [--only throughput,dag,...] [--json-only]

Runs each benchmark module as its own process with its default sizes (each one
already reports the median of its own runs), ``--sets`` times over, and checks
each figure against the target the project set for it. A figure is the median
over the sets; the verdict counts the sets that met the target, because on a
shared machine one set can land in a slow minute. A human table goes to stdout;
the last line is one JSON object with every figure, its target, the per-set
values and the verdict.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

from bench.cluster import REPO


@dataclass(frozen=True)
class Target:
    """One figure a benchmark prints, and the bound it must keep."""

    module: str
    key: str
    bound: float
    kind: Literal["at least", "at most"]
    what: str

    def met(self, value: float) -> bool:
        return value >= self.bound if self.kind == "at least" else value <= self.bound


TARGETS = (
    Target("throughput", "completed_ratio", 0.60, "at least", "completed/s over the machine's spawn ceiling"),
    Target("throughput", "latency_p50_ms", 2.0, "at most", "idle submit -> finish p50, ms"),
    Target("throughput", "latency_p99_ms", 5.0, "at most", "idle submit -> finish p99, ms"),
    Target("dag", "fanout_makespan_s", 0.5, "at most", "500-job fan-out + fan-in, s"),
    Target("dag", "accept_100k_s", 2.0, "at most", "accept a 100 000-job DAG, s"),
    Target("durability", "submit_fsync_per_s", 20_000, "at least", "acknowledged submissions/s, fsync on"),
    Target("durability", "fsync_ratio", 0.7, "at least", "fsync on over fsync off"),
    Target("durability", "replay_1m_s", 5.0, "at most", "start with 1M WAL records, s"),
    Target("logs", "captured_ratio", 0.8, "at least", "a printing job's lines/s, captured over not"),
    Target("logs", "first_line_p50_ms", 10.0, "at most", "print -> seen by a follower p50, ms"),
    Target("burst", "ratio", 0.6, "at most", "autoscaled over fixed makespan"),
)
MODULES = tuple(dict.fromkeys(target.module for target in TARGETS))


def run_module(module: str) -> dict[str, Any]:
    """``python -m bench.<module>``; its last line, parsed.

    Raises:
        RuntimeError: it failed, or its last line is not a JSON object.
    """
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}"], cwd=REPO, capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"bench.{module} failed (exit {done.returncode}): {tail}")
    try:
        summary = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"bench.{module}: the last line is not JSON: {lines[-1][:80]}") from exc
    if not isinstance(summary, dict):
        raise RuntimeError(f"bench.{module}: the last line is not a JSON object")
    return summary


def verdicts(sets: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per target: the median over the sets, each set's value, and how many sets met it."""
    rows = []
    for target in TARGETS:
        values = [float(summary[target.key]) for summary in sets.get(target.module, [])]
        if not values:
            continue
        met = sum(target.met(value) for value in values)
        rows.append(
            {
                "benchmark": f"bench.{target.module}",
                "figure": target.key,
                "what": target.what,
                "median": round(statistics.median(values), 3),
                "sets": [round(value, 3) for value in values],
                "target": f"{target.kind} {target.bound:g}",
                "met_sets": met,
                "verdict": "met"
                if met == len(values)
                else ("missed" if met == 0 else f"met in {met} of {len(values)}"),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n")[0])
    parser.add_argument("--sets", type=int, default=1, help="times to run each benchmark (default 1)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(MODULES)}")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(MODULES)
    unknown = sorted(set(chosen) - set(MODULES))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    if args.sets < 1:
        parser.error("--sets must be at least 1")
    sets: dict[str, list[dict[str, Any]]] = {}
    began = time.monotonic()
    for index in range(args.sets):
        for module in chosen:
            try:
                summary = run_module(module)
            except RuntimeError as exc:
                print(f"set {index + 1}: {exc}", flush=True)
                continue
            sets.setdefault(module, []).append(summary)
            print(f"set {index + 1}: bench.{module} {json.dumps(summary)}", flush=True)
    rows = verdicts(sets)
    print()
    print(f"{'figure':<42} {'median':>10}  {'target':<16} verdict")
    for row in rows:
        print(f"{row['what']:<42} {row['median']:>10g}  {row['target']:<16} {row['verdict']}")
    print(json.dumps({"sets": args.sets, "seconds": round(time.monotonic() - began), "figures": rows}))


if __name__ == "__main__":
    main()
