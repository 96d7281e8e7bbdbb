"""What durability costs: acknowledged submissions per second, and replay time at start.

    python -m bench.durability [--n 20000] [--runs 3] [--replay-records 1000000]

``submit_fsync_per_s`` / ``submit_nofsync_per_s``: one client keeps 64
SUBMITs in flight against a real ``python -m titan.master`` process (no
workers, so only admission, the WAL and the answers are measured); a
submission counts once its answer arrived, which with fsync on means its
record was fsynced (group commit shares one fsync among all records of a
batch).

``replay_1m_s``: a WAL holding 1 000 000 job-acceptance records in the real
format (one SUBMIT each, written through ``Journal`` and ``WalWriter``), then
the time from starting the master process until it prints "listening".

The last line is one JSON object with the medians over the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.cluster import REPO, LocalCluster
from protocol import JobSpec
from titan.client import TitanClient
from titan.config import ClientSettings, MasterSettings
from titan.master.admission import Admission
from titan.master.files import PermFiles
from titan.master.journal import Journal
from titan.wal import WalWriter

IN_FLIGHT = 64
RECOVERED = re.compile(r"from (?:snapshot@\d+ \+ )?(\d+) records in ([\d.]+)s")


async def submit_rate(fsync: bool, n: int) -> float:
    args = ["--fsync", "on" if fsync else "off", "--log-level", "WARNING"]
    async with LocalCluster(workers=0, master_args=args) as cluster:
        async with await TitanClient.connect(ClientSettings(port=cluster.port)) as client:
            spec = JobSpec(type="SHELL", data="true")
            await asyncio.gather(*(client.submit(spec) for _ in range(IN_FLIGHT)))  # warm up
            remaining = iter(range(n))

            async def lane() -> None:
                for _ in remaining:
                    await client.submit(spec)

            started = time.perf_counter()
            await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
            elapsed = time.perf_counter() - started
        shutil.rmtree(cluster.workspace, ignore_errors=True)
    return n / elapsed


async def write_wal(directory: Path, records: int) -> None:
    """``records`` SUBMIT records, as the master writes them (one accepted job each)."""
    settings = MasterSettings()
    admission = Admission(
        PermFiles(REPO / "perm_files", max_bytes=settings.max_payload_bytes),
        rng=random.Random(1),
        max_payload_bytes=settings.max_payload_bytes,
        story_limit=settings.story_limit,
    )
    now = time.time()
    job = admission.build(JobSpec(type="SHELL", data="echo hello"), seq=1, now=now, taken=())
    journal = Journal()
    async with WalWriter(directory, fsync=False) as wal:
        for i in range(records):
            job.id, job.seq, job.submitted_at = f"TSK-{i:08x}", i + 1, now + i * 1e-5
            journal.accepted(job)
            record = journal.take()
            assert record is not None
            wal.append_nowait(record)
            if i % 50_000 == 0:
                await wal.flush()


async def start_time(workspace: Path) -> tuple[float, float]:
    """Seconds from spawning the master to "listening", and the replay time it logged."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "titan.master", "--port", "0", "--workspace", str(workspace),
        "--perm-files", str(REPO / "perm_files"), "--log-level", "INFO",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    line = await proc.stdout.readline()
    elapsed = time.perf_counter() - started
    if b"listening" not in line:
        raise RuntimeError(f"master did not start: {line!r}")
    proc.terminate()
    _, err = await proc.communicate()
    match = RECOVERED.search(err.decode())
    return elapsed, float(match.group(2)) if match else float("nan")


async def main_async(n: int, runs: int, replay_records: int) -> dict[str, float]:
    fsync_rates, nofsync_rates, starts, replays = [], [], [], []
    for run in range(runs):
        fsync_rates.append(await submit_rate(True, n))
        nofsync_rates.append(await submit_rate(False, n))
        print(f"run {run + 1}: fsync on {fsync_rates[-1]:.0f}/s, off {nofsync_rates[-1]:.0f}/s", flush=True)
    base = Path(tempfile.mkdtemp(prefix="titan-replay-"))
    try:
        t0 = time.perf_counter()
        await write_wal(base / "wal", replay_records)
        size = sum(path.stat().st_size for path in (base / "wal").iterdir())
        print(f"wrote {replay_records} records ({size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s", flush=True)
        for run in range(runs):
            workspace = base / f"run-{run}"
            shutil.copytree(base / "wal", workspace / "wal")
            total, replay = await start_time(workspace)
            shutil.rmtree(workspace)
            starts.append(total)
            replays.append(replay)
            print(f"run {run + 1}: start to listening {total:.2f}s (recovery {replay:.2f}s)", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    fsync_median, nofsync_median = statistics.median(fsync_rates), statistics.median(nofsync_rates)
    return {
        "submit_fsync_per_s": round(fsync_median, 1),
        "submit_nofsync_per_s": round(nofsync_median, 1),
        "fsync_ratio": round(fsync_median / nofsync_median, 3),
        "replay_records": replay_records,
        "replay_1m_s": round(statistics.median(starts), 3),
        "replay_only_s": round(statistics.median(replays), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.durability", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="submissions per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replay-records", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args.n, args.runs, args.replay_records))))


if __name__ == "__main__":
    main()
