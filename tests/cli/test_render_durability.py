"""The STATS panel shows the WAL and the last recovery from ``StatsReply.extra``."""

from __future__ import annotations

from rich.console import Console

from protocol import StatsReply
from titan.cli.render import durability_rows, stats_view


def text(rows: list[tuple[str, object]]) -> str:
    return " | ".join(f"{name}: {value}" for name, value in rows)


def test_wal_and_recovery_figures() -> None:
    extra = {
        "wal_fsync": "on",
        "wal_bytes": 2_500_000,
        "wal_last_snapshot_at": 1000.0,
        "recovery_records": 1234,
        "recovery_jobs": 500,
        "recovery_s": 0.42,
        "recovery_dropped": "torn tail in wal-000000000003.log at offset 77",
    }
    shown = text(durability_rows(extra, now=1090.0))
    assert "WAL: 2.5 MB, snapshot 1m" in shown and "fsync on" in shown
    assert "Recovered: 500 jobs from 1234 records in 0.42s; dropped torn tail" in shown


def test_fsync_off_is_loud_and_a_master_without_wal_shows_nothing() -> None:
    shown = text(durability_rows({"wal_fsync": "off", "wal_warning": "fsync is off: jobs can be lost"}, now=0.0))
    assert "fsync off (fsync is off: jobs can be lost)" in shown and "no snapshot yet" in shown
    assert durability_rows({}) == []
    stats = StatsReply(0, 0, 0, 0, 0, 0, 0, 0, 0, [], extra={"wal_fsync": "off", "wal_bytes": 10})
    console = Console(record=True, width=120)
    console.print(stats_view(stats))
    assert "fsync off" in console.export_text()
