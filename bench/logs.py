"""Live logs: how fast a job can print under Titan, and how soon a follower sees a line.

    python -m bench.logs [--lines 1000000] [--latency-n 30] [--runs 3]

Three figures, each the median over the runs:

* ``uncaptured_lines_per_s``: a Python job printing ``--lines`` lines as fast as
  it can, run directly with its stdout on ``/dev/null``; the job times its own
  print loop. ``uncaptured_file_lines_per_s`` is the same with its stdout on a
  plain file (``job > out.log``), for reference.

The jobs run with Python's default block-buffered stdout (``PYTHONUNBUFFERED``
is removed from the environment). With ``--unbuffered`` every line is its own
``write`` syscall: then any real sink, a file or a pipe, costs several times
what ``/dev/null`` does, and the fair baseline is the plain-file figure.
* ``captured_lines_per_s``: the same job submitted to a local cluster of real
  processes (a master and one worker), with a follower attached over
  ``LOGS -f`` for the whole run: its output goes to the attempt's files, is
  shipped live over UDP and fanned out to the follower. The stored log is
  checked to be the job's exact output (its exact tail: 1M lines are over the
  default 4 MiB limit, so ``truncated`` must be set too).
* ``first_line_p50_ms``: a job that prints one line holding ``time.time()``;
  the follower subtracts it from the time the line reaches it. p50 (and p99) over
  ``--latency-n`` jobs.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cluster import LocalCluster
from protocol import JobSpec
from titan.client import TitanClient
from titan.config import ClientSettings

PRINTER = b"""
import sys, time
n = int(sys.argv[1])
t0 = time.perf_counter()
for i in range(n):
    print("line", i)
elapsed = time.perf_counter() - t0
sys.stdout.flush()
print(f"RATE {n / elapsed:.1f}", file=sys.stderr)
"""

STAMPER = b"""
import time
time.sleep(0.05)
print(repr(time.time()), flush=True)
time.sleep(0.05)
"""


def uncaptured(lines: int, *, to_file: bool = False) -> float:
    with tempfile.TemporaryDirectory(prefix="titan-bench-") as folder:
        script = Path(folder) / "printer.py"
        script.write_bytes(PRINTER)
        with open(Path(folder) / "out.log", "wb") if to_file else open(os.devnull, "wb") as sink:
            done = subprocess.run(
                [sys.executable, str(script), str(lines)], stdout=sink, stderr=subprocess.PIPE, check=True
            )
    return _rate(done.stderr)


def _rate(stderr: bytes) -> float:
    for line in stderr.splitlines():
        if line.startswith(b"RATE "):
            return float(line.split()[1])
    raise RuntimeError(f"the job printed no rate: {stderr[-200:]!r}")


async def captured(client: TitanClient, workspace: Path, lines: int) -> float:
    job_id = await client.submit(JobSpec(type="RUN", data="printer.py", payload=PRINTER, args=[str(lines)]))
    stderr = bytearray()
    async with client.logs(job_id, follow=True) as stream:
        async for chunk in stream:
            if chunk.stream == "stderr":
                stderr += chunk.data
    (job,) = await client.wait([job_id], timeout_s=120)
    if job.state != "COMPLETED":
        raise RuntimeError(f"printer ended {job.state}: {job.error}")
    folder = workspace / "master" / "jobs" / job_id / "attempt-1"
    # the master stores an ended attempt's exact log on a writer thread, result.json last: until
    # that is there, the file may still be the live copy (the whole output, not its tail)
    for _ in range(1000):
        if (folder / "result.json").exists():
            break
        await asyncio.sleep(0.01)
    stored = (folder / "stdout").read_bytes()
    expected = "".join(f"line {i}\n" for i in range(lines)).encode()
    # over the worker's size limit only the tail is kept, exactly
    truncated = (await client.status(job_id)).runs[-1].truncated
    if not stored or not expected.endswith(stored) or (len(stored) < len(expected)) != truncated:
        raise RuntimeError(f"the stored log ({len(stored)} bytes) is not the job's output or its tail")
    return _rate(bytes(stderr))


async def first_line(client: TitanClient, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        job_id = await client.submit(JobSpec(type="RUN", data="stamper.py", payload=STAMPER))
        seen: float | None = None
        async with client.logs(job_id, follow=True) as stream:
            async for chunk in stream:
                if seen is None and chunk.stream == "stdout" and chunk.data:
                    seen = time.time()
                    samples.append((seen - float(chunk.data.split(b"\n")[0])) * 1000)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def one_run(lines: int, latency_n: int) -> dict[str, float]:
    async with LocalCluster(workers=1, capacity=2) as cluster:
        async with await TitanClient.connect(ClientSettings(port=cluster.port)) as client:
            await first_line(client, 3)  # warm up: interpreters, the payload caches
            rate = await captured(client, cluster.workspace, lines)
            samples = await first_line(client, latency_n)
    return {
        "captured_lines_per_s": round(rate, 1),
        "uncaptured_lines_per_s": round(uncaptured(lines), 1),
        "uncaptured_file_lines_per_s": round(uncaptured(lines, to_file=True), 1),
        "first_line_p50_ms": round(percentile(samples, 50), 3),
        "first_line_p99_ms": round(percentile(samples, 99), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--latency-n", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--unbuffered", action="store_true", help="run the jobs with PYTHONUNBUFFERED=1")
    args = parser.parse_args()
    # the jobs inherit this process's environment (the cluster's processes pass it on)
    if args.unbuffered:
        os.environ["PYTHONUNBUFFERED"] = "1"
    else:
        os.environ.pop("PYTHONUNBUFFERED", None)
    runs = []
    for i in range(args.runs):
        result = asyncio.run(one_run(args.lines, args.latency_n))
        print(f"run {i + 1}: {result}", flush=True)
        runs.append(result)
    summary: dict[str, object] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    captured_rate = float(summary["captured_lines_per_s"])  # type: ignore[arg-type]
    summary["captured_ratio"] = round(captured_rate / float(summary["uncaptured_lines_per_s"]), 3)  # type: ignore[arg-type]
    summary.update(lines=args.lines, latency_n=args.latency_n, runs=len(runs), unbuffered=args.unbuffered)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
