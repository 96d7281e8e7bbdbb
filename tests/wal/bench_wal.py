"""Micro-benchmarks for the WAL: ``python -m tests.wal.bench_wal [--uvloop]``.

Not collected by pytest (``test_bench_smoke`` runs them at toy sizes). The
figures it prints are the ones quoted in reviews: appends/s with 64 appenders
in flight, fsync on and off, and the time to judge and replay a million records.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from titan.wal import WalWriter, load

RECORD = {"t": "job", "id": "TSK-1a2b3c4d", "type": "SHELL", "data": "true", "p": 1}


async def measure_appends(directory: Path, *, fsync: bool, appenders: int = 64, per_appender: int = 1000) -> float:
    """Records per second with ``appenders`` tasks each awaiting ``per_appender`` appends in turn."""
    async with WalWriter(directory, fsync=fsync) as wal:

        async def appender() -> None:
            for _ in range(per_appender):
                await wal.append(RECORD)

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(appenders):
                group.create_task(appender())
        elapsed = time.perf_counter() - started
    return appenders * per_appender / elapsed


async def write_records(directory: Path, count: int) -> None:
    """Fill ``directory`` with ``count`` small records quickly (fsync off, not awaited)."""
    async with WalWriter(directory, fsync=False) as wal:
        for i in range(count):
            wal.append_nowait({**RECORD, "id": f"TSK-{i:08x}"})
            if i % 10_000 == 0:
                await wal.flush()


def measure_replay(directory: Path) -> tuple[int, float]:
    """(records, seconds) for ``load`` plus iterating every record."""
    started = time.perf_counter()
    recovery = load(directory)
    count = sum(1 for _ in recovery.records())
    return count, time.perf_counter() - started


async def main(records: int, per_appender: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="titan-wal-bench-", dir="."))
    try:
        for round_ in range(2):
            for fsync in (True, False):
                rate = await measure_appends(root / f"a{round_}{fsync}", fsync=fsync, per_appender=per_appender)
                print(f"64 appenders, fsync {'on ' if fsync else 'off'}: {rate:>10,.0f} records/s")
        await write_records(root / "replay", records)
        count, seconds = measure_replay(root / "replay")
        print(f"replay {count:,} records: {seconds:.2f} s ({count / seconds:,.0f} records/s)")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--per-appender", type=int, default=1000)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(main(args.records, args.per_appender))
    else:
        asyncio.run(main(args.records, args.per_appender))
