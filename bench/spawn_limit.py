"""How fast can this machine spawn and reap processes from Python?

``python -m bench.spawn_limit [--n 2000] [--concurrency 4] [--runs 3]``

Each figure is the median of a few runs, measured with each way Python can
start a process -- ``os.posix_spawn`` (glibc) and ``_posixsubprocess.fork_exec``
(CPython's own, what ``subprocess`` and stock asyncio use, and what the worker
uses; see ``titan/worker/process.py``) -- and the best of them is the one
reported, so that Titan is always compared with the most the machine allows:

* ``spawn_per_s``: the machine's own ceiling -- ``/bin/true`` with its exit
  watched through a pidfd on a stock asyncio loop, ``--concurrency`` in
  flight, nothing else (DESIGN §5a). ``spawn_method`` says which method gave
  it; ``posix_spawn_per_s`` and ``fork_exec_per_s`` are each method's own.
* ``spawn_latency_p50_ms``: one ``/bin/true`` at a time, from the spawn to its
  exit seen through the pidfd, back to back; and
  ``spawn_latency_idle_p50_ms``: the same with the process idle for 1 ms
  before each spawn, as a worker on an idle cluster is between one job's
  report and the next job. On a virtual machine an idle CPU is halted and
  the next spawn finds it cold, which costs a third more or worse: that is
  the floor under an idle job's submit -> finish latency, however fast the
  orchestrator around it.
* ``runner_per_s``: the same ``/bin/true`` jobs through the worker's
  :class:`~titan.worker.engine.ProcessRunner`, including what a real attempt
  costs on top: its directory (recycled once it ends, as the worker does),
  ``outputs/``, the stdout/stderr files and the job's environment.

A human line per run goes to stdout; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from protocol import TaskStart
from titan.worker.engine import ProcessRunner
from titan.worker.process import FORK_EXEC, fork_exec_spawn

TRUE = shutil.which("true") or "/bin/true"

Spawn = Callable[[], int]


def bare_spawns() -> dict[str, Spawn]:
    """Each way to start ``/bin/true`` in a session of its own with nothing around it; each returns the pid."""
    env = dict(os.environ)
    argv = [TRUE]
    spawns: dict[str, Spawn] = {"posix_spawn": lambda: os.posix_spawn(TRUE, argv, env, setsid=True)}
    if FORK_EXEC is not None:
        encoded = [os.fsencode(TRUE)]
        env_list = [os.fsencode(f"{name}={value}") for name, value in env.items()]
        # no fds closed or redirected: the least it can do (the worker adds both, see process.py)
        spawns["fork_exec"] = lambda: fork_exec_spawn(encoded, env_list, close_fds=False)
    return spawns


def _default_spawn() -> Spawn:
    return bare_spawns()["posix_spawn"]


async def _pump(n: int, concurrency: int, launch: Callable[[int, Callable[[], None]], None]) -> float:
    """Keep ``concurrency`` spawns in flight until ``n`` have been reaped; returns spawns per second."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    counters = {"next": 0, "left": n}

    def one_done() -> None:
        counters["left"] -= 1
        if counters["left"] == 0:
            finished.set_result(None)
        elif counters["next"] < n:
            start_one()

    def start_one() -> None:
        index = counters["next"]
        counters["next"] += 1
        launch(index, one_done)

    began = time.perf_counter()
    for _ in range(min(concurrency, n)):
        start_one()
    await finished
    return n / (time.perf_counter() - began)


async def raw_rate(n: int, concurrency: int, spawn: Spawn | None = None) -> float:
    """``spawn`` (default: posix_spawn) + pidfd reader, no directories: the ceiling."""
    loop = asyncio.get_running_loop()
    start = spawn or _default_spawn()

    def launch(_: int, done: Callable[[], None]) -> None:
        pid = start()
        fd = os.pidfd_open(pid)

        def on_exit() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            os.waitpid(pid, os.WNOHANG)
            done()

        loop.add_reader(fd, on_exit)

    return await _pump(n, concurrency, launch)


IDLE_BEFORE_SPAWN_S = 0.001


def _settle_once(future: asyncio.Future[None]) -> None:
    # a pidfd stays readable until its reader is removed: a second call before then must be harmless
    if not future.done():
        future.set_result(None)


async def raw_latency(n: int, idle_s: float = 0.0, spawn: Spawn | None = None) -> list[float]:
    """One spawn at a time, each awaited through its pidfd: milliseconds from spawn to exit seen.

    ``idle_s``: sleep that long before each spawn (see ``spawn_latency_idle_p50_ms``).
    ``spawn``: how (default: posix_spawn).
    """
    loop = asyncio.get_running_loop()
    start = spawn or _default_spawn()
    samples = []
    for _ in range(n):
        if idle_s:
            await asyncio.sleep(idle_s)
        began = time.perf_counter()
        pid = start()
        fd = os.pidfd_open(pid)
        exited: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _settle_once, exited)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        os.waitpid(pid, 0)
        samples.append((time.perf_counter() - began) * 1000)
    return samples


async def runner_rate(n: int, concurrency: int, workspace: Path) -> float:
    """The same through ProcessRunner, with a fresh job directory per spawn."""
    runner = ProcessRunner(workspace, worker_id="bench")
    run_id = time.monotonic_ns()
    try:

        def launch(index: int, done: Callable[[], None]) -> None:
            task = TaskStart(job_id=f"B{run_id}-{index}", attempt=1, kind="SHELL", data="true")
            attempt = runner.start(task)

            def reported(_: object) -> None:
                runner.release(attempt)  # as the worker does once the final report is built
                done()

            attempt.result.add_done_callback(reported)

        return await _pump(n, concurrency, launch)
    finally:
        await runner.aclose()


class Ceiling(NamedTuple):
    """One reading of the machine with the best method for each figure (see the module docstring)."""

    spawn_per_s: float
    method: str
    per_method: dict[str, float]
    latency_p50_ms: float
    idle_latency_p50_ms: float


async def ceiling(n: int, concurrency: int, latency_n: int) -> Ceiling:
    """Every method's rate and one-at-a-time latencies; the best of each."""
    rates: dict[str, float] = {}
    latencies: list[float] = []
    idle_latencies: list[float] = []
    for name, spawn in bare_spawns().items():
        rates[name] = await raw_rate(n, concurrency, spawn)
        latencies.append(statistics.median(await raw_latency(latency_n, spawn=spawn)))
        idle_latencies.append(statistics.median(await raw_latency(latency_n, IDLE_BEFORE_SPAWN_S, spawn)))
    method = max(rates, key=rates.__getitem__)
    return Ceiling(rates[method], method, rates, min(latencies), min(idle_latencies))


async def _main(n: int, concurrency: int, runs: int, workspace: Path) -> dict[str, object]:
    readings: list[Ceiling] = []
    through_runner: list[float] = []
    for i in range(runs):
        reading = await ceiling(n, concurrency, 200)
        readings.append(reading)
        rates = ", ".join(f"{name} {rate:.0f}" for name, rate in reading.per_method.items())
        print(
            f"run {i + 1}: one at a time      {reading.latency_p50_ms:7.3f} ms from spawn to exit (p50 of 200); "
            f"{reading.idle_latency_p50_ms:.3f} ms idle for 1 ms before each (best method)"
        )
        print(f"run {i + 1}: spawn+pidfd        {rates} spawns/s  ({n} x true, {concurrency} in flight)")
        rate = await runner_rate(n, concurrency, workspace)
        through_runner.append(rate)
        print(f"run {i + 1}: ProcessRunner      {rate:7.0f} spawns/s  (with attempt dirs and output files)")
    best = [reading.spawn_per_s for reading in readings]
    methods = [reading.method for reading in readings]
    summary: dict[str, object] = {
        "spawn_per_s": round(statistics.median(best)),
        "spawn_method": max(set(methods), key=methods.count),
    }
    for name in readings[0].per_method:
        summary[f"{name}_per_s"] = round(statistics.median(reading.per_method[name] for reading in readings))
    summary.update(
        runner_per_s=round(statistics.median(through_runner)),
        spawn_latency_p50_ms=round(statistics.median(reading.latency_p50_ms for reading in readings), 3),
        spawn_latency_idle_p50_ms=round(statistics.median(reading.idle_latency_p50_ms for reading in readings), 3),
        runs=[round(rate) for rate in best],
        runner_runs=[round(rate) for rate in through_runner],
        n=n,
        concurrency=concurrency,
        python=sys.version.split()[0],
        cpus=os.cpu_count(),
    )
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spawn_limit", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="spawns per run (default 2000)")
    parser.add_argument("--concurrency", type=int, default=4, help="processes in flight (default 4)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind (default 3)")
    parser.add_argument(
        "--workspace", type=Path, default=None, help="where attempt directories go (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.runs < 1:
        parser.error("--n, --concurrency and --runs must be at least 1")
    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="titan-bench-"))
    try:
        # stock asyncio on purpose: the ceiling is measured without uvloop
        summary = asyncio.run(_main(args.n, args.concurrency, args.runs, workspace))
    finally:
        if args.workspace is None:
            shutil.rmtree(workspace, ignore_errors=True)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
