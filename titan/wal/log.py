"""``WalWriter``: the group-commit task that owns the open segment.

Theory of operation
-------------------
Appenders never touch the file. ``append`` frames the record on the loop, adds
the bytes to the *open batch* (one ``bytearray``), parks a future in it,
schedules the writer (see "Who writes") and hands the future back to be
awaited. The writer takes the whole open batch at once, writes it with one
``write``, makes it durable with one ``fdatasync``, then resolves every
future of the batch. Everything appended during one turn of the loop shares
that fsync, and requests that arrive while it runs wait in their sockets and
share the next: the busier the log, the bigger the batches, and the cost per
record stays one ``bytearray`` extend plus one future.

Order is the order of the calls: the open batch is only ever appended to,
sealed batches form a FIFO, and they are written one after the other, by one
writer at a time (the end-of-turn callback or the task, see "Who writes").

Segment boundaries are decided on the loop, at append time, not by the writer:
when a record would push the segment past ``segment_bytes`` the open batch is
sealed with "start segment N+1 after me" and a new open batch begins.
:meth:`WalWriter.cut` does the same on demand, which gives snapshots an exact
cut: the state serialized in the same step covers precisely the segments
before the one ``cut`` returns. A sealed batch that ends a segment is always
fsynced before the next segment is created, so no record can become durable
before the records ahead of it.

Where the fsync runs depends on who waits for it. A batch somebody waits on
(an :meth:`append`, :meth:`flush`, :meth:`barrier` or :meth:`hurry` since
the last commit) is written on the loop: an ``fdatasync`` takes a fraction of
a millisecond when the machine is idle, and while it runs the next requests
queue in the sockets and join the next batch, so nothing is lost by waiting. A thread would overlap the fsync with the loop's work, but
handing the GIL to it and back, and the wake-up that reports the commit, cost
more per batch than the overlap saves: measured with 64 submissions in flight,
the master spent about 55 µs per acknowledged submission with the fsync in a
thread and 40 µs with it inline, and acknowledged 1.5 times as many per second.
A batch nobody waits on (a worker's report, a dispatch: see below) is written
by a helper thread instead, while the loop goes on serving. Under load such a
commit takes one to two milliseconds, and a loop blocked for that long leaves
every worker slot that frees up meanwhile idle, with its next TASK_START
unsent. There are few such commits (they linger to grow, see below), so the
handoff costs little. Commits still run one at a time, in order.

Who writes: every append or hurry schedules one callback for the end of the
loop turn (:meth:`WalWriter._kick`), however many records the turn added. If
somebody waits, that callback writes and syncs everything right there, unless
the helper thread is busy with an earlier batch: then the task writes the rest
on the loop when the thread is done. Otherwise it wakes the writer task, which
lingers and commits in the helper thread. Writing from the callback rather
than from the task spares each awaited commit an event, a task switch and a
loop turn: on an idle cluster that is the WAL's whole cost besides the
fsync, and in six alternating runs of ``bench.throughput`` it raised the
completed jobs per second by about 4%.

When nobody waits: with ``commit_delay_s`` set, a batch that no caller is
waiting on (only :meth:`WalWriter.append_nowait` records) is held for up to
that long so later records share its fsync; anything that waits on the open
batch (:meth:`append`, :meth:`flush`, :meth:`barrier`, :meth:`hurry`) has it
written at once. Under load most of the master's records (a worker's report,
a dispatch) have no one waiting, and each fsync there took one to two
milliseconds of a blocked loop, because the workers' own files fill the
file system's journal that the fsync must flush too.

Cancellation: a record is in the batch the moment ``append`` is called;
cancelling the caller only stops it waiting. Cancelling the writer can never
interrupt a commit: one on the loop is a synchronous step, and one in the
helper thread is waited for (blocking, at most one fsync) before the writer
stops. A batch is either written and acknowledged, or never written and
failed with :class:`WalClosed`.

A failed write or fsync poisons the writer (see :class:`WalWriteFailed`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from titan.wal import files
from titan.wal.errors import WalClosed, WalError, WalWriteFailed
from titan.wal.record import encode_record, encode_seal, pack_snapshot_body

__all__ = ["DEFAULT_SEGMENT_BYTES", "WalStats", "WalWriter"]

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES: Final = 16 * 1024 * 1024

# fdatasync skips the inode timestamps but still flushes the size a file needs
# to be read back, which is all an append-only file cares about.
_DEFAULT_SYNC: Final[Callable[[int], None]] = getattr(os, "fdatasync", os.fsync)


@dataclass
class WalStats:
    """Running totals, for logs and benchmarks."""

    records: int = 0
    bytes: int = 0
    commits: int = 0
    syncs: int = 0
    sync_s: float = 0.0
    max_batch_records: int = 0
    segments_opened: int = 0
    snapshots: int = 0


@dataclass(slots=True)
class _Batch:
    data: bytearray = field(default_factory=bytearray)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    records: int = 0
    # set when this batch ends its segment: the writer opens this one next
    next_segment: int | None = None
    # shared by everyone who asked for it (see WalWriter.barrier)
    barrier: asyncio.Future[None] | None = None


class WalWriter:
    """Appends records to the segmented log in ``directory`` with group commit.

    Call :func:`titan.wal.load` first: it repairs a torn tail, and the writer
    always starts a fresh segment (``recovery.next_segment``), so appends
    never land behind damaged bytes.

    Args:
        directory: the WAL directory, created if missing.
        fsync: ``False`` writes without fsync: an acknowledged record survives
            the process dying but not the machine.
        segment_bytes: start a new segment once the current one would exceed
            this (one record bigger than it gets a segment of its own).
        first_segment: number of the segment to create; by default the one
            after everything already in ``directory``.
        sync: the data-sync function, ``os.fdatasync`` by default (tests count calls).
        clock: for ``stats.sync_s``.
        commit_delay_s: how long a batch nobody waits on may wait for company
            (see "When nobody waits"); 0 writes every batch at once.
        on_durable: called on the loop, synchronously, right after each
            batch is settled: ``on_durable(records, None)`` when the first
            ``records`` records appended are durable, ``on_durable(records,
            failure)`` once when the writer stops with records unwritten.
            Cheaper than a future per batch, and one loop iteration sooner.
    """

    _loop: asyncio.AbstractEventLoop

    def __init__(
        self,
        directory: Path,
        *,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        first_segment: int | None = None,
        sync: Callable[[int], None] = _DEFAULT_SYNC,
        clock: Callable[[], float] = time.perf_counter,
        on_durable: Callable[[int, WalError | None], None] | None = None,
        commit_delay_s: float = 0.0,
    ) -> None:
        if segment_bytes < 1:
            raise ValueError("segment_bytes must be positive")
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.stats = WalStats()
        self._first_segment = first_segment
        self._sync = sync
        self._clock = clock
        self._segment = 0  # the segment the open batch goes to
        self._fill = 0  # bytes already planned for that segment
        self._open = _Batch()
        self._sealed: collections.deque[_Batch] = collections.deque()
        self._fd = -1
        # checksum and record count of what the open segment holds so far, for its seal
        self._segment_crc = 0
        self._segment_records = 0
        self._wake = asyncio.Event()
        self.commit_delay_s = commit_delay_s
        self._urgent = asyncio.Event()  # someone waits on the open batch: write it now
        self._task: asyncio.Task[None] | None = None
        # appends and hurries since the last kick (see "Who writes"): one callback per loop turn
        self._kick_scheduled = False
        self._hurried = False
        self._linger_over = asyncio.Event()  # ends a linger early: its batch was written, or we stop
        self._in_thread = False  # the task's helper thread is writing a batch
        self._accepting = False
        self._failure: WalError | None = None
        self._on_durable = on_durable
        self._helper: concurrent.futures.ThreadPoolExecutor | None = None  # made on first use

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Create the first segment and start the writer task."""
        if self._task is not None:
            raise RuntimeError("WalWriter.start() called twice")
        self._loop = asyncio.get_running_loop()
        self._fd, self._segment = await asyncio.to_thread(self._open_first)
        self.stats.segments_opened += 1
        self._accepting = True
        self._task = self._loop.create_task(self._run(), name=f"wal-writer {self.directory}")

    def _open_first(self) -> tuple[int, int]:
        self.directory.mkdir(parents=True, exist_ok=True)
        seq = self._first_segment or files.list_directory(self.directory).next_segment()
        return files.open_segment(self.directory, seq, durable=self.fsync), seq

    async def aclose(self) -> None:
        """Write and sync everything appended so far, then stop. Idempotent.

        Raises:
            WalWriteFailed: the log could not be made durable.
        """
        self._accepting = False
        if self._task is not None:
            self._urgent.set()
            self._wake.set()
            self._linger_over.set()
            # The writer drains every batch before it returns; shield it so a
            # cancelled shutdown still ends with the file closed.
            await asyncio.shield(self._task)
        if self._failure is not None:
            raise self._failure

    async def __aenter__(self) -> WalWriter:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def segment(self) -> int:
        """The segment the next append goes to."""
        return self._segment

    @property
    def failure(self) -> WalError | None:
        """Why the writer stopped, if a write or fsync failed."""
        return self._failure

    # -- appending (the hot path) --------------------------------------------

    def append(self, record: Mapping[str, Any]) -> asyncio.Future[None]:
        """Append ``record``; the returned future resolves once it is durable.

        The top-level key ``"seal"`` is reserved for the segment seals.

        ``await wal.append(record)``. Not a coroutine on purpose: the record
        takes its place in the log when this is *called*, so wrapping the
        wait in a task cannot reorder it behind a later ``append_nowait``.
        The fsync is shared with every append of the same batch.

        Raises:
            WalClosed: the writer is not running.
            ValueError, TypeError: the record cannot be encoded (nothing was appended).

        The future fails with :class:`WalWriteFailed` if the batch could not be written.
        """
        batch = self._put(encode_record(record))
        waiter = self._loop.create_future()
        batch.waiters.append(waiter)
        self.hurry()
        return waiter

    def append_nowait(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` without waiting: same order, same writer, no acknowledgement.

        The record goes out with the next batch, durable within about one
        fsync (plus ``commit_delay_s`` if nobody waits) unless the writer fails.
        """
        self._put(encode_record(record))

    def _put(self, frame: bytes) -> _Batch:
        if not self._accepting:
            raise self._failure or WalClosed("the WAL writer is not running")
        size = len(frame)
        if self._fill and self._fill + size > self.segment_bytes:
            self._seal(self._segment + 1)
        self._fill += size
        batch = self._open
        batch.data += frame
        batch.records += 1
        if not self._kick_scheduled:
            self._kick_scheduled = True
            self._loop.call_soon(self._kick)
        return batch

    def flush(self) -> asyncio.Future[None]:
        """A future that resolves once everything appended so far (``append_nowait`` too) is durable."""
        if not self._accepting:
            raise self._failure or WalClosed("the WAL writer is not running")
        waiter = self._loop.create_future()
        self._open.waiters.append(waiter)
        self.hurry()
        return waiter

    def hurry(self) -> None:
        """Write the open batch now: somebody is waiting for it (see "When nobody waits")."""
        self._hurried = True
        if not self._kick_scheduled:
            self._kick_scheduled = True
            self._loop.call_soon(self._kick)

    def barrier(self) -> asyncio.Future[None]:
        """One future per batch: resolves once everything in the open batch so far is durable.

        Calling it after every :meth:`append_nowait` costs one future per
        *batch*, not per record: callers learn which records are durable by
        counting. The future is shared, so attach callbacks to it; never
        cancel it or ``await`` it from a task that may be cancelled.
        """
        if not self._accepting:
            raise self._failure or WalClosed("the WAL writer is not running")
        batch = self._open
        if batch.barrier is None:
            batch.barrier = self._loop.create_future()
            batch.waiters.append(batch.barrier)
            self.hurry()
        return batch.barrier

    # -- segments and snapshots ---------------------------------------------

    def cut(self) -> int:
        """End the current segment here; later appends go to the returned segment number.

        Synchronous, so a state captured in the same step as the call reflects
        exactly the records of the segments before the returned number.
        """
        if not self._accepting:
            raise self._failure or WalClosed("the WAL writer is not running")
        self._seal(self._segment + 1)
        self._wake.set()
        return self._segment

    def _seal(self, next_segment: int) -> None:
        self._open.next_segment = next_segment
        self._sealed.append(self._open)
        self._open = _Batch()
        self._segment = next_segment
        self._fill = 0

    async def write_snapshot(self, state: Mapping[str, Any], upto_segment: int) -> Path:
        """Write ``state`` as covering every segment before ``upto_segment``, then delete those segments.

        ``state`` is serialized before this coroutine first suspends, so pass a
        dict built in the same step as the :meth:`cut` that returned
        ``upto_segment`` (or use :meth:`snapshot`). The file is written in a
        thread: temp file, fsync, rename, fsync of the directory. Covered
        segments are deleted only after that, and only once the writer has
        moved past them.
        """
        if upto_segment > self._segment:
            raise ValueError(f"segment {upto_segment} has not been cut yet (current is {self._segment})")
        body = pack_snapshot_body(state, upto_segment)
        await self.flush()
        # Shielded: the snapshot is either wholly written or not at all, and a
        # cancelled caller must not leave the prune half done.
        path = await asyncio.shield(asyncio.to_thread(self._snapshot_sync, body, upto_segment))
        self.stats.snapshots += 1
        return path

    def _snapshot_sync(self, body: bytes, upto_segment: int) -> Path:
        path = files.write_snapshot_body(self.directory, body, upto_segment, durable=self.fsync)
        files.prune(self.directory, upto_segment, durable=self.fsync)
        return path

    async def snapshot(self, state: Mapping[str, Any]) -> int:
        """:meth:`cut` and :meth:`write_snapshot` in one step; returns the snapshot's segment number."""
        upto = self.cut()
        await self.write_snapshot(state, upto)
        return upto

    # -- who writes -------------------------------------------------------------

    def _kick(self) -> None:
        """After a loop turn's appends: write what somebody waits on here and now, or wake the task."""
        self._kick_scheduled = False
        hurried, self._hurried = self._hurried, False
        task = self._task
        if task is None or task.done() or task.cancelling() or self._failure is not None:
            return  # not started, or stopping: the task's own shutdown settles what is left
        if hurried and not self._in_thread:
            # a linger over the batch just written ends (a later batch lingers afresh); after a failure
            # the task ends and settles whatever is left
            self._linger_over.set()
            if not self._commit_here():
                self._wake.set()
            return
        if hurried:
            self._urgent.set()  # the thread is writing: the task writes the rest on the loop when it returns
        self._wake.set()

    def _commit_here(self) -> bool:
        """Write and sync every batch so far, synchronously, on the loop (see "Who writes").

        Returns False if a write failed (the writer is poisoned).
        """
        while (batch := self._take()) is not None:
            try:
                self._commit(batch)
            except OSError as exc:
                self._settle(batch, exc)
                return False
            self._settle(batch, None)
        return True

    # -- the writer task ------------------------------------------------------

    def _may_linger(self) -> bool:
        """Whether the open batch may wait for company: nobody waits on it, nothing is sealed."""
        return bool(
            self.commit_delay_s and self._accepting and self._open.data and not (self._sealed or self._urgent.is_set())
        )

    def _take(self) -> _Batch | None:
        if self._sealed:
            return self._sealed.popleft()
        batch = self._open
        if batch.data or batch.waiters:
            self._open = _Batch()
            return batch
        return None

    async def _run(self) -> None:
        lingered = False
        try:
            while self._failure is None:
                if self._may_linger() and not lingered:
                    self._linger_over.clear()
                    try:
                        await asyncio.wait_for(self._linger_over.wait(), self.commit_delay_s)
                    except TimeoutError:
                        pass
                    # cut short because its batch was written: whatever came since may linger afresh
                    lingered = not self._linger_over.is_set()
                    continue  # whatever happened meanwhile (a failure, a cut) is looked at again
                lingered = False
                awaited = self._urgent.is_set()
                self._urgent.clear()  # the batch about to be written serves whoever waited
                batch = self._take()
                if batch is None:
                    if not self._accepting:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                try:
                    if awaited or not batch.data or not self.fsync:  # without an fsync a write is quick
                        self._commit(batch)
                    else:
                        self._in_thread = True
                        try:
                            await self._commit_in_thread(batch)
                        finally:
                            self._in_thread = False
                except OSError as exc:
                    self._settle(batch, exc)
                else:
                    self._settle(batch, None)
        finally:
            self._shutdown()

    async def _commit_in_thread(self, batch: _Batch) -> None:
        """:meth:`_commit` on the helper thread (see "Where the fsync runs"); raises what it raised."""
        if self._helper is None:
            self._helper = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="titan-wal")
        done = self._helper.submit(self._commit, batch)
        try:
            await asyncio.shield(asyncio.wrap_future(done, loop=self._loop))
        except asyncio.CancelledError:
            # The thread is writing this batch to the open segment: let it finish before
            # _shutdown closes the file, and settle the batch as it went.
            self._settle(batch, done.exception())
            raise

    def _commit(self, batch: _Batch) -> None:
        """Write, sync and maybe rotate, in one synchronous step (see "Where the fsync runs")."""
        if batch.data:
            files.write_all(self._fd, batch.data)
            self._segment_crc = zlib.crc32(batch.data, self._segment_crc)
            self._segment_records += batch.records
        if batch.data and self.fsync:
            started = self._clock()
            self._sync(self._fd)
            self.stats.sync_s += self._clock() - started
            self.stats.syncs += 1
        if batch.next_segment is not None:
            self._rotate(batch.next_segment)

    def _rotate(self, next_segment: int) -> None:
        # The seal lets recovery prove this segment whole with one checksum (see record.py).
        files.write_all(self._fd, encode_seal(self._segment_records, self._segment_crc))
        if self.fsync:
            self._sync(self._fd)
        self._segment_crc = self._segment_records = 0
        os.close(self._fd)
        self._fd = -1
        self._fd = files.open_segment(self.directory, next_segment, durable=self.fsync)
        self.stats.segments_opened += 1

    def _settle(self, batch: _Batch, exc: BaseException | None) -> None:
        if exc is None:
            self.stats.commits += 1
            self.stats.records += batch.records
            self.stats.bytes += len(batch.data)
            self.stats.max_batch_records = max(self.stats.max_batch_records, batch.records)
            for waiter in batch.waiters:
                if not waiter.done():  # its caller may have been cancelled
                    waiter.set_result(None)
            if batch.records:
                self._tell(None)
            return
        failure = WalWriteFailed(f"WAL write to {self.directory} failed: {exc}")
        failure.__cause__ = exc
        self._poison(failure)
        self._fail(batch, failure)

    def _poison(self, failure: WalError) -> None:
        if self._failure is None:
            self._failure = failure
            log.error("[wal] %s; no more records will be accepted", failure)
        self._accepting = False

    def _fail(self, batch: _Batch, exc: WalError) -> None:
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    def _shutdown(self) -> None:
        """Fail whatever was never written, close the segment."""
        self._accepting = False
        leftover = WalClosed("the WAL writer stopped before this record was written")
        unwritten = False
        for batch in (*self._sealed, self._open):
            self._fail(batch, self._failure or leftover)
            unwritten = unwritten or batch.records > 0
        self._sealed.clear()
        self._open = _Batch()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._helper is not None:
            self._helper.shutdown(wait=False)  # idle: its last commit was awaited
        if unwritten or self._failure is not None:
            self._tell(self._failure or leftover)

    def _tell(self, failure: WalError | None) -> None:
        if self._on_durable is None:
            return
        try:
            self._on_durable(self.stats.records, failure)
        except Exception:  # a listener's bug must not stop the commits
            log.exception("[wal] on_durable listener failed")
