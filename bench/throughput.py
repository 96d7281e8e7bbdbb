"""Throughput and latency of one-off jobs on a local cluster of real processes.

    python -m bench.throughput [--n 2000] [--latency-n 200] [--runs 3]

A master and 2 workers of capacity 2 run as separate processes. Phase one
submits N ``SHELL|true`` jobs as fast as one client can (many requests in
flight) and waits for all: ``submitted_per_s`` and ``completed_per_s`` (first
submission to last finish). Phase two runs 200 jobs one after the other on the
idle cluster, each submitted and awaited: submit -> finish latency p50/p99.
The client runs on uvloop where it is installed, as the ``titan`` commands do.
Each run ends by measuring this machine's spawn ceiling right then, as
``bench.spawn_limit`` does (``spawn_limit_per_s``: spawn + reap of ``/bin/true``,
4 in flight, nothing else running, the best of the ways Python can spawn;
``spawn_method`` names it), and ``completed_ratio`` is
that run's completed/s over it: the machine's speed drifts, so the ratio is
the figure to compare across runs. For latency the same reading gives
``spawn_latency_p50_ms``: ``/bin/true`` spawned and awaited one at a time with
nothing around it, back to back, and ``spawn_latency_idle_p50_ms``: the same
with the process idle for 1 ms before each spawn, as a worker on an idle
cluster is -- the floor under any idle job. ``latency_overhead_p50_ms`` is
what Titan adds on top (latency p50 minus that idle floor). The last line is one
JSON object with the medians over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import titan.runtime
from bench.cluster import LocalCluster
from bench.spawn_limit import ceiling
from protocol import JobSpec
from titan.client import TitanClient
from titan.config import ClientSettings

WINDOW = 256  # submissions in flight
SPAWN_CONCURRENCY = 4  # as bench.spawn_limit: the 4 slots of 2 workers x 2


async def burst(client: TitanClient, n: int) -> tuple[float, float]:
    spec = JobSpec(type="SHELL", data="true", max_attempts=1)
    semaphore = asyncio.Semaphore(WINDOW)

    async def one() -> str:
        async with semaphore:
            return await client.submit(spec)

    t0 = time.time()
    ids = await asyncio.gather(*(one() for _ in range(n)))
    submitted = time.time()
    jobs = await client.wait(ids, timeout_s=300)
    bad = [job for job in jobs if job.state != "COMPLETED"]
    if bad:
        raise RuntimeError(f"{len(bad)} jobs did not complete, e.g. {bad[0]}")
    last_finish = max(job.finished_at or time.time() for job in jobs)
    return n / (submitted - t0), n / (last_finish - t0)


async def latency(client: TitanClient, n: int) -> list[float]:
    spec = JobSpec(type="SHELL", data="true", max_attempts=1)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        job_id = await client.submit(spec)
        (job,) = await client.wait([job_id], timeout_s=30)
        samples.append((time.perf_counter() - t0) * 1000)
        if job.state != "COMPLETED":
            raise RuntimeError(f"latency job ended {job.state}")
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def cluster_run(n: int, latency_n: int) -> tuple[float, float, list[float]]:
    async with LocalCluster(workers=2, capacity=2) as cluster:
        async with await TitanClient.connect(ClientSettings(port=cluster.port)) as client:
            await latency(client, 20)  # warm up interpreters and caches
            submitted_per_s, completed_per_s = await burst(client, n)
            samples = await latency(client, latency_n)
    return submitted_per_s, completed_per_s, samples


def one_run(n: int, latency_n: int) -> dict[str, Any]:
    # The client runs on the loop Titan's own commands use (uvloop where installed); the
    # ceiling is measured on a stock asyncio loop, as bench.spawn_limit does, once the
    # cluster is gone: the machine alone.
    submitted_per_s, completed_per_s, samples = titan.runtime.run(cluster_run(n, latency_n))
    machine = asyncio.run(ceiling(n, SPAWN_CONCURRENCY, latency_n))
    spawn_limit = machine.spawn_per_s
    spawn_latency = machine.latency_p50_ms
    idle_spawn_latency = machine.idle_latency_p50_ms
    return {
        "submitted_per_s": round(submitted_per_s, 1),
        "completed_per_s": round(completed_per_s, 1),
        "latency_p50_ms": round(percentile(samples, 50), 3),
        "latency_p99_ms": round(percentile(samples, 99), 3),
        "spawn_limit_per_s": round(spawn_limit),
        "spawn_method": machine.method,
        "completed_ratio": round(completed_per_s / spawn_limit, 3),
        "spawn_latency_p50_ms": round(spawn_latency, 3),
        "spawn_latency_idle_p50_ms": round(idle_spawn_latency, 3),
        # what Titan adds to the bare spawn of a process that was idle before it, as a worker on
        # an idle cluster is: the part of latency_p50_ms that is the orchestrator's
        "latency_overhead_p50_ms": round(percentile(samples, 50) - idle_spawn_latency, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--latency-n", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        result = one_run(args.n, args.latency_n)
        print(f"run {i + 1}: {result}", flush=True)
        runs.append(result)
    summary: dict[str, object] = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        # the method that gave the ceiling most often; every other figure is a median
        summary[key] = max(values, key=values.count) if key == "spawn_method" else statistics.median(values)
    summary.update(n=args.n, latency_n=args.latency_n, runs=len(runs), workers=2, capacity=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
