"""DAG figures on a local cluster of real processes, and the scheduler's own cost.

    python -m bench.dag [--runs 3] [--fanout 500] [--chain 200] [--accept 100000]

- ``fanout_makespan_s``: 500 ``SHELL|true`` jobs, then one fan-in job depending
  on all of them, on 2 workers x 2 slots (separate processes); from the
  SUBMIT_DAG to the answer that the fan-in job is COMPLETED.
- ``chain_makespan_s``: a chain of 200 ``SHELL|true`` jobs, each depending on
  the one before, on the same cluster.
- ``overhead_per_job_ms``: the master core's own CPU per job, in process and
  without IO: admitting a 10 000-job fan-out/fan-in DAG, dispatching every job,
  and handling its RUNNING and COMPLETED reports and the releases they cause.
- ``accept_100k_s``: a client submits a 100 000-job layered DAG (100 layers of
  1 000, each job depending on 1-3 random jobs of the layer above) to a master
  process; from the request to the answer that it was accepted (encoding,
  transfer, validation, cycle check, admission and the WAL write included).

The last line is one JSON object with the medians over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable

from bench.cluster import LocalCluster
from protocol import JobSpec, Register, TaskStatus
from titan.client import TitanClient
from titan.config import ClientSettings, MasterSettings
from titan.jobs import SendTask
from titan.master import MasterState

TRUE = "true"


def shell(job_id: str, *deps: str) -> JobSpec:
    return JobSpec(type="SHELL", data=TRUE, id=job_id, deps=list(deps), max_attempts=1)


def fanout_specs(prefix: str, n: int) -> list[JobSpec]:
    roots = [shell(f"{prefix}-{i}") for i in range(n)]
    return [*roots, shell(f"{prefix}-join", *(spec.id for spec in roots if spec.id))]


def chain_specs(prefix: str, n: int) -> list[JobSpec]:
    return [shell(f"{prefix}-{i}", *([f"{prefix}-{i - 1}"] if i else [])) for i in range(n)]


def layered_specs(n: int, width: int, seed: int = 1) -> list[JobSpec]:
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        layer = i // width
        deps: list[str] = []
        if layer:
            above = (layer - 1) * width
            deps = list(dict.fromkeys(f"L{above + rng.randrange(width)}" for _ in range(rng.randint(1, 3))))
        specs.append(JobSpec(type="SHELL", data=TRUE, id=f"L{i}", deps=deps))
    return specs


async def makespan(client: TitanClient, specs: list[JobSpec]) -> float:
    t0 = time.perf_counter()
    ids = await client.submit_dag(specs)
    (last,) = await client.wait([ids[-1]], timeout_s=300)
    elapsed = time.perf_counter() - t0
    if last.state != "COMPLETED":
        raise RuntimeError(f"{last.id} ended {last.state}: {last.error}")
    return elapsed


async def cluster_figures(fanout: int, chain: int, run: int) -> dict[str, float]:
    async with LocalCluster(workers=2, capacity=2) as cluster:
        async with await TitanClient.connect(ClientSettings(port=cluster.port)) as client:
            await makespan(client, fanout_specs(f"warm{run}", 40))  # interpreters, caches, spare folders
            fan = await makespan(client, fanout_specs(f"fan{run}", fanout))
            line = await makespan(client, chain_specs(f"chain{run}", chain))
    return {"fanout_makespan_s": fan, "chain_makespan_s": line}


async def accept_figure(n: int) -> float:
    specs = layered_specs(n, 1000)
    async with LocalCluster(workers=0) as cluster:
        async with await TitanClient.connect(ClientSettings(port=cluster.port, request_timeout_s=120)) as client:
            t0 = time.perf_counter()
            ids = await client.submit_dag(specs)
            elapsed = time.perf_counter() - t0
    if len(ids) != n:
        raise RuntimeError(f"accepted {len(ids)} of {n}")
    return elapsed


class _Files:
    def resolve(self, name: str) -> str:
        return name

    def handler(self, type_name: str) -> str | None:
        return None

    def handler_types(self) -> list[str]:
        return []


def core_overhead_ms(n: int = 10_000, clock: Callable[[], float] = time.perf_counter) -> float:
    """CPU per job of the pure core for a fan-out/fan-in DAG (see the module docstring)."""
    state = MasterState(MasterSettings(), _Files())
    register = Register(worker_id="w", name="[1]", host="h", port=1, capacity=64, skills=["GENERAL"])
    state.worker_registered(register, 0.0)
    specs = fanout_specs("core", n)
    t0 = clock()
    _, effects = state.submit_dag(specs, 1.0)
    done = 0
    while effects:
        following = []
        for effect in effects:
            if isinstance(effect, SendTask):
                attempt = effect.job.attempts
                state.task_status("w", TaskStatus(job_id=effect.job.id, attempt=attempt, state="RUNNING"), 2.0)
                report = TaskStatus(job_id=effect.job.id, attempt=attempt, state="COMPLETED", exit_code=0)
                following += state.task_status("w", report, 2.0)
                done += 1
        effects = following
    elapsed = clock() - t0
    if done != len(specs):
        raise RuntimeError(f"core ran {done} of {len(specs)} jobs")
    return elapsed / len(specs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fanout", type=int, default=500)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--accept", type=int, default=100_000)
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        result = asyncio.run(cluster_figures(args.fanout, args.chain, i))
        result["overhead_per_job_ms"] = core_overhead_ms()
        result["accept_100k_s"] = asyncio.run(accept_figure(args.accept))
        result = {key: round(value, 4) for key, value in result.items()}
        print(f"run {i + 1}: {result}", flush=True)
        runs.append(result)
    summary: dict[str, object] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    summary.update(fanout=args.fanout, chain=args.chain, accept=args.accept, runs=len(runs), workers=2, capacity=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
