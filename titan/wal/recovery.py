"""Recovery: the newest valid snapshot, then every provably good record after it.

Theory of operation
-------------------
:func:`load` works in two passes so the master can trust what it is told
before it applies anything:

1. *Judge* (eager): pick the newest snapshot that decodes (a leftover
   ``.tmp`` from a crash mid-snapshot is never considered), then walk the
   segments from the snapshot's number on, checking framing and checksums
   (:func:`~titan.wal.record.scan_frames`, no unpacking). A segment that
   ends with a seal whose checksum matches is proven whole by that one
   checksum, without the walk (every segment but the last one written). The
   walk stops at the first problem. With ``repair`` the directory is then fixed so that a
   new writer appends right behind the last good record.
2. *Replay* (lazy): :meth:`Recovery.records` re-reads the good prefix of each
   segment and yields its records one by one, so a million-record log costs a
   segment's worth of bytes in memory, not a million dicts at once. One
   checksum of the whole prefix, taken by the judge, proves the bytes read
   again are the ones it checked, so the records are not checksummed twice.

We never skip over a hole. Records after a damaged one may depend on it
(a job finished that was never submitted), so replay stops at the first
problem, wherever it is, and says so. Two kinds:

* ``torn tail``: damage in the last segment with nothing valid after it: the
  writer died in the middle of a batch, whose records were therefore never
  acknowledged. Expected after a crash. Repair truncates it.
* ``corrupt``: damage followed by valid records, in an older segment, or a
  missing segment. Acknowledged records are behind the hole and will not be
  replayed. Repair moves them aside into ``*.damaged`` files (never deletes
  them) and truncates the damaged segment, so the log is consistent again;
  the master should say so loudly.

Repair also deletes what a snapshot already covers (segments below it, older
snapshots and temp files), which an interrupted prune may have left behind.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from titan.wal import files
from titan.wal.errors import WalCorrupt
from titan.wal.record import (
    Record,
    Snapshot,
    decode_snapshot,
    find_next_frame,
    iter_records,
    looks_like_seal,
    read_seal,
    scan_frames,
)

__all__ = ["Recovery", "SegmentSpan", "WalProblem", "load"]

ProblemKind = Literal["torn tail", "corrupt"]


@dataclass(frozen=True)
class WalProblem:
    """Where replay stopped early, and why."""

    kind: ProblemKind
    path: Path
    offset: int
    reason: str
    # bytes of the log not replayed: the rest of this file plus later segments
    dropped_bytes: int
    # where repair put them (corrupt only), for a person to look at
    set_aside: tuple[Path, ...] = ()

    def __str__(self) -> str:
        text = f"{self.kind} in {self.path.name} at offset {self.offset}: {self.reason} ({self.dropped_bytes} bytes not replayed)"
        if self.set_aside:
            text += "; kept in " + ", ".join(path.name for path in self.set_aside)
        return text


@dataclass(frozen=True)
class SegmentSpan:
    """The good prefix of one segment: what replay reads."""

    seq: int
    path: Path
    length: int
    records: int
    # crc32 of those ``length`` bytes: replay reads them again and must find the same ones
    digest: int | None = None


@dataclass(frozen=True)
class Recovery:
    """What :func:`load` found. Replay with :meth:`records`; ``problem`` says if it stops early."""

    directory: Path
    snapshot: dict[str, Any] | None
    # the first segment the snapshot does not cover
    snapshot_segment: int | None
    spans: tuple[SegmentSpan, ...]
    problem: WalProblem | None
    # where a new WalWriter should start
    next_segment: int
    # files found but not used: unreadable snapshots, leftover temp files
    ignored: tuple[Path, ...]
    repaired: bool

    @property
    def records_count(self) -> int:
        return sum(span.records for span in self.spans)

    @property
    def bytes_count(self) -> int:
        return sum(span.length for span in self.spans)

    def records(self) -> Iterator[Record]:
        """Yield the good records after the snapshot, across segments, in order.

        Reads the files again, so iterate before a writer prunes them.

        Raises:
            WalCorrupt: a frame that passed the checksum does not unpack (only
                a writer bug or a 2**-32 checksum collision can cause it).
        """
        for span in self.spans:
            with open(span.path, "rb") as handle:
                data = handle.read(span.length)
            same = span.digest is not None and len(data) == span.length and zlib.crc32(data) == span.digest
            if span.digest is not None and not same:
                raise WalCorrupt(0, f"{span.path.name} changed after it was checked")
            yield from iter_records(data, checked=same)

    def summary(self) -> str:
        """One line for the master's startup log."""
        snap = f"snapshot@{self.snapshot_segment}" if self.snapshot is not None else "no snapshot"
        text = f"{snap}, {self.records_count} records in {len(self.spans)} segments ({self.bytes_count} bytes)"
        if self.problem is not None:
            text += f"; {self.problem}"
        return text


def load(directory: Path, *, repair: bool = True) -> Recovery:
    """Judge the WAL in ``directory`` and, with ``repair``, make it safe to append to.

    Never raises on damaged content; only on IO errors. See the module
    docstring for what counts as a torn tail and what as corruption.
    """
    directory = Path(directory)
    listing = files.list_directory(directory)
    ignored: list[Path] = [path for _, path in listing.temps]
    snapshot: Snapshot | None = None
    for seq, path in reversed(listing.snapshots):
        found = decode_snapshot(path.read_bytes())
        if found is not None and found.upto_segment == seq:
            snapshot = found
            break
        ignored.append(path)

    start = snapshot.upto_segment if snapshot else 1
    live = [(seq, path) for seq, path in listing.segments if seq >= start]
    spans, damaged = _judge(live, start)
    problem = damaged.problem if damaged else None
    if damaged is not None and repair:
        problem = _repair(damaged, live)
    if repair:
        _drop_covered(directory, listing, start)
    if repair or problem is None:
        next_segment = spans[-1].seq + 1 if spans else start
    else:
        # Unrepaired: never hand out a number that is still on disk.
        next_segment = live[-1][0] + 1
    return Recovery(
        directory=directory,
        snapshot=snapshot.state if snapshot else None,
        snapshot_segment=snapshot.upto_segment if snapshot else None,
        spans=tuple(spans),
        problem=problem,
        next_segment=next_segment,
        ignored=tuple(ignored),
        repaired=repair,
    )


@dataclass(frozen=True)
class _Damaged:
    problem: WalProblem
    # position in ``live`` of the file where replay stops
    index: int
    # that file's bytes; None when the problem is that a segment is missing
    data: bytes | None


def _judge(live: list[tuple[int, Path]], start: int) -> tuple[list[SegmentSpan], _Damaged | None]:
    """Scan segments in order, up to the first problem."""
    spans: list[SegmentSpan] = []
    for index, (seq, path) in enumerate(live):
        expected = start + index
        if seq != expected:
            reason = f"segment {files.segment_name(expected)} is missing"
            problem = WalProblem("corrupt", path, 0, reason, _size(live[index:]))
            return spans, _Damaged(problem, index, None)
        data = path.read_bytes()
        seal = read_seal(data)
        if seal is not None:
            digest = zlib.crc32(memoryview(data)[: seal.covered])
            if digest == seal.crc:  # the whole segment at C speed: no walk needed
                spans.append(SegmentSpan(seq, path, seal.covered, seal.records, digest))
                continue
        frames, good, damage = scan_frames(data)
        is_last = index == len(live) - 1
        if seal is not None and damage is None:
            # every frame checks out but the seal's sum does not: keep the records, not the seal
            good, frames = seal.covered, frames - 1
        elif damage is not None and not is_last and looks_like_seal(data, good):
            damage = None  # only the seal is damaged; every record before it passed its own checksum
        spans.append(SegmentSpan(seq, path, good, frames, zlib.crc32(memoryview(data)[:good])))
        if damage is None:
            continue
        resumes = find_next_frame(data, good + 1)
        kind: ProblemKind = "torn tail" if is_last and resumes is None else "corrupt"
        reason = str(damage)
        if resumes is not None:
            reason += f", valid records resume at offset {resumes}"
        elif not is_last:
            reason += ", and later segments follow"
        problem = WalProblem(kind, path, good, reason, len(data) - good + _size(live[index + 1 :]))
        return spans, _Damaged(problem, index, data)
    return spans, None


def _size(segments: list[tuple[int, Path]]) -> int:
    return sum(path.stat().st_size for _, path in segments)


def _repair(damaged: _Damaged, live: list[tuple[int, Path]]) -> WalProblem:
    """Make the log end at the last good record; keep corrupt leftovers aside."""
    problem, index, data = damaged.problem, damaged.index, damaged.data
    path = live[index][1]
    kept: list[Path] = []
    if problem.kind == "corrupt":
        if data is None:
            kept.append(files.set_aside(path))  # the first file past the hole
        else:
            kept.append(files.set_aside(path, data[problem.offset :]))
        kept += [files.set_aside(later) for _, later in live[index + 1 :]]
    if data is not None:
        # Only after the bytes are safe elsewhere: a crash here loses nothing.
        with open(path, "r+b") as handle:
            handle.truncate(problem.offset)
            os.fsync(handle.fileno())
    files.fsync_directory(path.parent)
    return WalProblem(problem.kind, problem.path, problem.offset, problem.reason, problem.dropped_bytes, tuple(kept))


def _drop_covered(directory: Path, listing: files.Listing, start: int) -> None:
    stale = [path for seq, path in listing.segments if seq < start]
    stale += [path for seq, path in listing.snapshots if seq < start]
    stale += [path for _, path in listing.temps]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        files.fsync_directory(directory)
