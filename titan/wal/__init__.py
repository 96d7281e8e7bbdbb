"""The master's write-ahead log: record framing, the group-commit writer, snapshots, recovery.

Typical use by the master::

    recovery = load(workspace / "wal")          # judge and repair
    state = restore(recovery.snapshot)          # None on a fresh workspace
    for record in recovery.records():
        state.apply(record)
    log.info("[wal] %s", recovery.summary())
    async with WalWriter(workspace / "wal", first_segment=recovery.next_segment) as wal:
        await wal.append({"t": "job", ...})     # returns once on disk
        wal.append_nowait({"t": "state", ...})  # ordered, not awaited
        await wal.snapshot(state.dump())        # cut + snapshot + drop covered segments
"""

from __future__ import annotations

from titan.wal.errors import WalClosed, WalCorrupt, WalError, WalWriteFailed
from titan.wal.files import write_snapshot
from titan.wal.log import DEFAULT_SEGMENT_BYTES, WalStats, WalWriter
from titan.wal.record import (
    MAX_RECORD_BYTES,
    Damage,
    DecodeResult,
    Record,
    decode_records,
    encode_record,
)
from titan.wal.recovery import Recovery, SegmentSpan, WalProblem, load

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "MAX_RECORD_BYTES",
    "Damage",
    "DecodeResult",
    "Record",
    "Recovery",
    "SegmentSpan",
    "WalClosed",
    "WalCorrupt",
    "WalError",
    "WalProblem",
    "WalStats",
    "WalWriteFailed",
    "WalWriter",
    "decode_records",
    "encode_record",
    "load",
    "write_snapshot",
]
