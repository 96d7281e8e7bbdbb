"""The WAL directory on disk: file names, listing, and the blocking file operations.

Everything here blocks: the writer calls it inline (a segment's write and fsync) or from a
thread (opening the first segment, snapshots). Layout of
``<workspace>/wal/``::

    wal-000000000007.log          segments, appended in order of their number
    snapshot-000000000007.msgpack the state as of the start of segment 7
    snapshot-000000000009.msgpack.tmp   a snapshot being written (or a crash's leftover)
    wal-000000000004.log.damaged  bytes set aside by recovery, never read again

A snapshot is named for the first segment it does *not* cover, so recovery
loads the newest snapshot and replays segments from that number on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from titan.wal.record import pack_snapshot_body, snapshot_header

__all__ = [
    "Listing",
    "fsync_directory",
    "list_directory",
    "open_segment",
    "prune",
    "segment_name",
    "set_aside",
    "snapshot_name",
    "write_all",
    "write_snapshot",
    "write_snapshot_body",
]

SEGMENT_RE: Final = re.compile(r"wal-(\d{12})\.log")
SNAPSHOT_RE: Final = re.compile(r"snapshot-(\d{12})\.msgpack")
TEMP_SUFFIX: Final = ".tmp"
DAMAGED_SUFFIX: Final = ".damaged"


def segment_name(seq: int) -> str:
    return f"wal-{seq:012d}.log"


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:012d}.msgpack"


@dataclass(frozen=True)
class Listing:
    """What a WAL directory holds, each kind sorted by sequence number."""

    segments: list[tuple[int, Path]] = field(default_factory=list)
    snapshots: list[tuple[int, Path]] = field(default_factory=list)
    temps: list[tuple[int, Path]] = field(default_factory=list)

    def next_segment(self) -> int:
        """The first segment number a new writer may create here."""
        last_segment = self.segments[-1][0] if self.segments else 0
        last_snapshot = self.snapshots[-1][0] if self.snapshots else 1
        return max(last_segment + 1, last_snapshot, 1)


def list_directory(directory: Path) -> Listing:
    """List segments, snapshots and leftover temp files; a missing directory is empty."""
    listing = Listing()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return listing
    for name in names:
        if match := SEGMENT_RE.fullmatch(name):
            listing.segments.append((int(match[1]), directory / name))
        elif match := SNAPSHOT_RE.fullmatch(name):
            listing.snapshots.append((int(match[1]), directory / name))
        elif name.endswith(TEMP_SUFFIX) and (match := SNAPSHOT_RE.fullmatch(name[: -len(TEMP_SUFFIX)])):
            listing.temps.append((int(match[1]), directory / name))
    listing.segments.sort()
    listing.snapshots.sort()
    listing.temps.sort()
    return listing


def fsync_directory(directory: Path) -> None:
    """Make creations, renames and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_segment(directory: Path, seq: int, *, durable: bool) -> int:
    """Create segment ``seq`` and return a raw append-only descriptor for it.

    ``O_EXCL`` because a segment number is never reused: finding the file
    already there means two writers, or a writer that skipped recovery. With
    ``durable`` the directory is fsynced so the new name survives a power cut
    before any record in it is acknowledged.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
    fd = os.open(directory / segment_name(seq), flags, 0o644)
    if durable:
        try:
            fsync_directory(directory)
        except BaseException:
            os.close(fd)
            raise
    return fd


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte is written (regular files rarely write short, but may)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_snapshot_body(directory: Path, body: bytes, upto_segment: int, *, durable: bool = True) -> Path:
    """Atomically write an already packed snapshot body (see :func:`write_snapshot`)."""
    final = directory / snapshot_name(upto_segment)
    temp = final.with_name(final.name + TEMP_SUFFIX)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, snapshot_header(body))
        write_all(fd, body)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    # rename is atomic: readers see the old set of snapshots or the new one,
    # never a half-written file under the final name.
    os.replace(temp, final)
    if durable:
        fsync_directory(directory)
    return final


def write_snapshot(directory: Path, state: Mapping[str, Any], upto_segment: int, *, durable: bool = True) -> Path:
    """Write ``state`` as the snapshot that covers every segment before ``upto_segment``.

    Temp file, fsync, rename, fsync of the directory: after a crash the
    snapshot is either wholly there or absent. Blocks; call it from a thread.
    Does not delete anything; :func:`prune` does that once this has returned.
    """
    return write_snapshot_body(directory, pack_snapshot_body(state, upto_segment), upto_segment, durable=durable)


def prune(directory: Path, upto_segment: int, *, durable: bool = True) -> list[Path]:
    """Delete what the snapshot ``upto_segment`` makes redundant.

    Segments numbered below it, older snapshots, and leftover temp files of
    snapshots up to it. Returns the deleted paths.
    """
    listing = list_directory(directory)
    doomed = [path for seq, path in listing.segments if seq < upto_segment]
    doomed += [path for seq, path in listing.snapshots if seq < upto_segment]
    doomed += [path for seq, path in listing.temps if seq <= upto_segment]
    for path in doomed:
        path.unlink(missing_ok=True)
    if doomed and durable:
        fsync_directory(directory)
    return doomed


def set_aside(path: Path, data: bytes | None = None) -> Path:
    """Keep damaged bytes for a person to look at, out of the log's way.

    With ``data``, write it to a new ``.damaged`` file next to ``path``;
    without, rename ``path`` itself. Never overwrites an earlier one.
    """
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}.{n}")
    if data is None:
        os.rename(path, target)
    else:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    return target
