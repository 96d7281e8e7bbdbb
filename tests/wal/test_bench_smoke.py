"""Keep the micro-benchmarks runnable: toy sizes, correctness only, no timing asserts."""

from __future__ import annotations

from pathlib import Path

from .bench_wal import measure_appends, measure_replay, write_records


async def test_benchmarks_run(tmp_path: Path) -> None:
    assert await measure_appends(tmp_path / "on", fsync=True, appenders=4, per_appender=5) > 0
    assert await measure_appends(tmp_path / "off", fsync=False, appenders=4, per_appender=5) > 0
    await write_records(tmp_path / "replay", 1234)
    count, seconds = measure_replay(tmp_path / "replay")
    assert count == 1234 and seconds >= 0
