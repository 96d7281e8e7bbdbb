"""A burst of CPU-bound jobs on one small worker, with and without the autoscaler.

    python -m bench.burst [--jobs 100] [--cpu 0.25] [--runs 1] [--max-workers 3]

A master and one worker of capacity 1 run as separate processes. The burst is
``--jobs`` jobs of ``--cpu`` seconds of CPU work each (``perm_files/burn.py``),
submitted at once; the makespan runs from the first submission to the last
finish. The fixed cluster keeps its one worker; the autoscaled one runs the
master with ``--autoscale`` (short delays, at most ``--max-workers`` workers),
which spawns child workers while the queue outgrows the free slots. The peak
counts the healthy workers seen while the burst ran (polled every 0.1 s).

The last line is one JSON object: ``fixed_makespan_s``, ``autoscaled_makespan_s``
and ``peak_workers`` (medians over ``--runs``), with the ratio and the settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from bench.cluster import LocalCluster
from protocol import JobSpec
from titan.client import TitanClient
from titan.config import ClientSettings

FAST = ["--heartbeat-timeout", "3", "--heartbeat-interval", "0.5"]


def autoscale_args(max_workers: int) -> list[str]:
    return [
        "--autoscale",
        "--autoscale-max-workers", str(max_workers),
        "--autoscale-up-after", "0.2",
        "--autoscale-cooldown", "0.3",
        "--autoscale-interval", "0.1",
        "--autoscale-step", str(max_workers),
        "--autoscale-idle", "30",
    ]  # fmt: skip


async def one_burst(jobs: int, cpu_s: float, master_args: list[str]) -> tuple[float, int]:
    """Run the burst on a fresh cluster; returns (makespan, peak healthy workers)."""
    cluster = LocalCluster(
        workers=1, capacity=1, master_args=[*FAST, *master_args], worker_args=["--heartbeat-interval", "0.5"]
    )
    async with cluster:
        async with await TitanClient.connect(ClientSettings(port=cluster.port)) as client:
            peak = 1
            done = asyncio.Event()

            async def watch() -> None:
                nonlocal peak
                while not done.is_set():
                    workers = (await client.stats()).workers
                    peak = max(peak, sum(1 for w in workers if w.health == "HEALTHY"))
                    await asyncio.sleep(0.1)

            spec = JobSpec(type="RUN", data="burn.py", args=[str(cpu_s)], max_attempts=1)
            t0 = time.time()
            ids = await asyncio.gather(*(client.submit(spec) for _ in range(jobs)))
            watcher = asyncio.create_task(watch())
            finished = await client.wait(ids, timeout_s=600)
            done.set()
            await watcher
            bad = [job for job in finished if job.state != "COMPLETED"]
            if bad:
                raise RuntimeError(f"{len(bad)} jobs did not complete, e.g. {bad[0]}")
            makespan = max(job.finished_at or time.time() for job in finished) - t0
    leftovers = processes_under(cluster.workspace)
    if leftovers:
        raise RuntimeError(f"processes left behind after teardown: {leftovers}")
    return makespan, peak


def processes_under(folder: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if str(folder).encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


async def main(args: argparse.Namespace) -> dict[str, object]:
    fixed: list[float] = []
    scaled: list[float] = []
    peaks: list[int] = []
    for run in range(args.runs):
        makespan, _ = await one_burst(args.jobs, args.cpu, [])
        fixed.append(makespan)
        makespan, peak = await one_burst(args.jobs, args.cpu, autoscale_args(args.max_workers))
        scaled.append(makespan)
        peaks.append(peak)
        print(f"run {run + 1}: fixed {fixed[-1]:.2f}s, autoscaled {scaled[-1]:.2f}s, peak {peak} workers", flush=True)
    fixed_s, scaled_s = statistics.median(fixed), statistics.median(scaled)
    return {
        "fixed_makespan_s": round(fixed_s, 3),
        "autoscaled_makespan_s": round(scaled_s, 3),
        "peak_workers": int(statistics.median(peaks)),
        "ratio": round(scaled_s / fixed_s, 3),
        "jobs": args.jobs,
        "job_cpu_s": args.cpu,
        "max_workers": args.max_workers,
        "runs": args.runs,
        "cpus": os.cpu_count(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--cpu", type=float, default=0.25, help="CPU seconds per job")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--max-workers", type=int, default=3, help="the autoscaler's limit")
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args()))))
