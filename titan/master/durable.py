"""``DurableLog``: the master's write-ahead log in use. Recovery, commits, the output gate, snapshots.

Theory of operation
-------------------
*Recovery* (:meth:`DurableLog.recover`, before the master listens): load the
newest snapshot, replay the good records after it (:mod:`titan.wal` has
already dropped a torn tail and said so), hand the rebuilt job table to
:meth:`MasterState.restore <titan.master.core.MasterState.restore>`.

*Commits*: the core records each change in its :class:`~titan.master.journal.Journal`;
after every stimulus the shell calls :meth:`DurableLog.commit`, which appends
one record without waiting. Records reach the disk in call order, in group
commits shared with every other record of the same batch.

*The output gate*: nothing the master tells a client may reflect a state that
is not durable yet, or a crash could leave a client holding an acknowledgement
that the restarted master has never heard of. So every answer goes out
through :meth:`DurableLog.send`: at once when
everything committed so far is on disk, otherwise held, in order, until the
group commit that covers it completes (the writer calls
:meth:`DurableLog._flushed` synchronously as each batch is settled: no future
per record, nor per batch). Frames released together are written with one
``write`` per connection: with 64 requests in flight that is one syscall for
64 answers instead of 64. A SUBMIT's answer therefore leaves only once
its record is fsynced, and concurrent submissions share one fsync.

*TASK_START goes early* (:meth:`DurableLog.send_early`): a worker may start
an attempt whose dispatch is still on its way to the disk. Holding it back
would put an fsync (over a millisecond when the workers' own files load the
file system's journal) between every finished job and the next start on that
slot, which halved throughput. The window is made safe after a crash rather
than closed: the restarted master has never heard of such an attempt, so when
its worker reconnects and reports it running the master has it killed, and a
result it finished is ignored (``worker_registered`` fences both); the job
runs again. Its number is never reused: at each start, before it dispatches
anything, the master durably logs that every unfinished job's next attempt
skips one more number (``Job.skip_attempts``; two crashes in a row skip two,
since the second master's own unlogged dispatch may have used the first).
At-least-once, as always: such a job may run twice, and one accepted and dispatched in the same
unsynced batch may even run although its client never got the acceptance
(the client, having no answer, submits again).

*Snapshots*: once ``snapshot_every_records`` records (or ``snapshot_every_bytes``)
have been committed since the last one, the whole job table is dumped in the
same step as a WAL cut, written atomically in a thread, and the segments it
covers are deleted. That bounds both replay time and disk use.

A failed write poisons the writer (see :class:`~titan.wal.WalWriteFailed`):
held frames are dropped, never sent, and ``on_failure`` is called so the
master can stop rather than acknowledge what it cannot keep.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from titan.jobs import ACTIVE_STATES, Effect
from titan.wal import DEFAULT_SEGMENT_BYTES, WalError, WalWriter, load
from titan.wal import files as wal_files

from .core import MasterState
from .journal import RESTARTED, Journal, Replay, apply_all, dump, load_snapshot, restart_skips

__all__ = ["DurableLog", "RecoveryReport"]

log = logging.getLogger(__name__)


class Connection(Protocol):
    """Where held frames go (a :class:`titan.net.Peer`)."""

    def write(self, data: bytes) -> bool: ...


@dataclass(frozen=True)
class RecoveryReport:
    """What the master found in its WAL at start."""

    records: int
    jobs: int
    # SCHEDULED/RUNNING jobs now waiting for their workers to come back and report
    awaiting_workers: int
    seconds: float
    snapshot_segment: int | None
    # the torn tail or corruption that was dropped, "" if the log was clean
    problem: str = ""
    # state rows for jobs the log never accepted (only a damaged log has any)
    orphans: int = 0

    def summary(self) -> str:
        """The one line the master logs at start."""
        source = f"snapshot@{self.snapshot_segment} + " if self.snapshot_segment is not None else ""
        text = (
            f"recovered {self.jobs} jobs ({self.awaiting_workers} scheduled or running, awaiting their workers) "
            f"from {source}{self.records} records in {self.seconds:.2f}s"
        )
        if self.orphans:
            text += f"; {self.orphans} changes of unknown jobs skipped"
        return text + (f"; DROPPED {self.problem}" if self.problem else "; log clean")


class DurableLog:
    """The master's WAL; see the module docstring.

    Args:
        directory: the WAL directory (``<workspace>/wal``).
        state: the core; its ``journal`` is set here.
        fsync: ``False`` acknowledges before data reaches the disk (a machine crash may lose it).
        snapshot_every_records, snapshot_every_bytes: snapshot once either is reached.
        commit_delay_s: how long records that no answer waits on may wait to share an fsync
            (:class:`~titan.wal.WalWriter`'s "When nobody waits"); an answer hurries them.
        on_failure: called once if the log cannot be written any more.
    """

    def __init__(
        self,
        directory: Path,
        state: MasterState,
        *,
        fsync: bool = True,
        snapshot_every_records: int = 200_000,
        snapshot_every_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        commit_delay_s: float = 0.0,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.state = state
        self.journal = state.journal = Journal()
        self.fsync = fsync
        self.snapshot_every_records = max(1, snapshot_every_records)
        self.snapshot_every_bytes = max(1, snapshot_every_bytes)
        self.segment_bytes = segment_bytes
        self.commit_delay_s = commit_delay_s
        self.report: RecoveryReport | None = None
        self.last_snapshot_at: float | None = None
        self.snapshots = 0
        self._on_failure = on_failure
        self._writer: WalWriter | None = None
        self._first_segment: int | None = None
        self._appended = 0  # records committed so far
        self._durable = 0  # of those, known to be on disk
        self._held: collections.deque[tuple[int, Connection, bytes]] = collections.deque()
        self._held_by: dict[Connection, int] = {}  # frames held per connection (send_early keeps their order)
        self._since_snapshot = 0
        self._bytes_at_snapshot = 0
        self._snapshot_task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None

    # ------------------------------------------------------------------ lifetime
    def recover(self, now: float) -> list[Effect]:
        """Load snapshot and log, rebuild the state; returns the effects of the rebuild.

        Blocking and CPU-bound (a million records take seconds): call it before serving.
        """
        started = time.perf_counter()
        recovery = load(self.directory)
        limit = self.state.settings.story_limit
        # A million long-lived objects are about to be made: cyclic GC passes over
        # them would cost more than the replay itself.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            if recovery.snapshot is not None:
                replay = load_snapshot(recovery.snapshot, story_limit=limit, now=now)
            else:
                replay = Replay({}, limit)
            apply_all(replay, recovery.records())
            effects = self.state.restore(replay.jobs, failed_attempts=replay.failed_attempts, now=now)
        finally:
            gc.freeze()  # the restored table is long-lived: keep it out of future collections
            if was_enabled:
                gc.enable()
        self._first_segment = recovery.next_segment
        self._since_snapshot = replay.records
        if recovery.snapshot_segment is not None:
            self.last_snapshot_at = _snapshot_mtime(self.directory, recovery.snapshot_segment)
        active = sum(self.state.counts[state] for state in ACTIVE_STATES)  # kept per state: no scan
        self.report = RecoveryReport(
            records=replay.records,
            jobs=len(replay.jobs),
            awaiting_workers=active,
            seconds=time.perf_counter() - started,
            snapshot_segment=recovery.snapshot_segment,
            problem=str(recovery.problem) if recovery.problem is not None else "",
            orphans=replay.orphans,
        )
        if recovery.problem is not None:
            log.error("[wal] %s", self.report.summary())
        else:
            log.info("[wal] %s", self.report.summary())
        if not self.fsync:
            log.warning("[wal] fsync is OFF: acknowledged jobs can be lost if the machine crashes")
        return effects

    async def start(self) -> None:
        """Open a fresh segment after whatever recovery found."""
        writer = WalWriter(
            self.directory,
            fsync=self.fsync,
            segment_bytes=self.segment_bytes,
            first_segment=self._first_segment,
            on_durable=self._flushed,
            commit_delay_s=self.commit_delay_s,
        )
        await writer.start()
        self._writer = writer
        # Before anything is dispatched: every unfinished job's next attempt skips a number, durably,
        # so that a crash soon after this start cannot hand out a number twice (see the module doc).
        restart_skips(self.state.jobs.values())
        self._appended += 1
        await writer.append(RESTARTED)

    async def aclose(self) -> None:
        """Wait for a snapshot in progress, write and sync what is committed, stop. Idempotent."""
        if self._snapshot_task is not None:
            await asyncio.gather(self._snapshot_task, return_exceptions=True)
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            await writer.aclose()
        except WalError as exc:
            log.error("[wal] closing: %s", exc)
        self._release()

    # ------------------------------------------------------------------ commits and the gate
    def commit(self) -> None:
        """Append what the core recorded since the last commit, as one record, without waiting.

        Raises:
            WalError: the log is not open or cannot be written any more.
        """
        record = self.journal.take()
        if record is None:
            return
        writer = self._writer
        if writer is None:
            raise self._failed_error()
        writer.append_nowait(record)
        # This writer is ours alone and starts empty: its record count is ours.
        self._appended += 1
        self._since_snapshot += 1
        if self._snapshot_task is None and (
            self._since_snapshot >= self.snapshot_every_records
            or writer.stats.bytes - self._bytes_at_snapshot >= self.snapshot_every_bytes
        ):
            self._snapshot_task = asyncio.get_running_loop().create_task(self._snapshot(), name="wal-snapshot")

    def send(self, connection: Connection, frame: bytes) -> None:
        """Write ``frame`` once everything committed so far is durable; frames keep their order."""
        if self._failed is not None:
            return  # nothing leaves a master whose log failed
        if self._durable >= self._appended and not self._held:
            connection.write(frame)
            return
        self._hold(connection, frame)

    def send_early(self, connection: Connection, frame: bytes) -> None:
        """Write ``frame`` now, before the records behind it are durable (a TASK_START, see above).

        Only a connection's order is kept: if frames for it are still held,
        ``frame`` waits behind them.
        """
        if self._failed is not None:
            return
        if self._held_by.get(connection):
            self._hold(connection, frame)
            return
        connection.write(frame)

    def _hold(self, connection: Connection, frame: bytes) -> None:
        self._held.append((self._appended, connection, frame))  # the last commit's barrier covers it
        self._held_by[connection] = self._held_by.get(connection, 0) + 1
        writer = self._writer
        if writer is not None:
            writer.hurry()  # an answer waits on this batch: no commit delay for it

    @property
    def held(self) -> int:
        """Frames waiting for a flush."""
        return len(self._held)

    def _flushed(self, durable: int, failure: WalError | None) -> None:
        """The writer's ``on_durable``: the first ``durable`` records are on disk."""
        if failure is not None:
            self._fail(failure)
            return
        self._durable = max(self._durable, durable)
        self._release()

    def _release(self) -> None:
        held, durable = self._held, self._durable
        batches: dict[Connection, list[bytes]] = {}
        while held and held[0][0] <= durable:
            _, connection, frame = held.popleft()
            batch = batches.get(connection)
            if batch is None:
                batches[connection] = [frame]
            else:
                batch.append(frame)
        held_by = self._held_by
        for connection, frames in batches.items():
            left = held_by[connection] - len(frames)
            if left:
                held_by[connection] = left
            else:
                del held_by[connection]
            connection.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def _fail(self, exc: BaseException) -> None:
        if self._failed is not None:
            return
        self._failed = exc
        log.critical("[wal] the log cannot be written (%s): %d frame(s) withheld, stopping", exc, len(self._held))
        self._held.clear()
        self._held_by.clear()
        if self._on_failure is not None:
            self._on_failure(exc)

    def _failed_error(self) -> WalError:
        if isinstance(self._failed, WalError):
            return self._failed
        return WalError("the WAL is not open")

    # ------------------------------------------------------------------ snapshots
    async def _snapshot(self) -> None:
        writer = self._writer
        try:
            if writer is None:
                return
            started = time.perf_counter()
            self.commit()  # nothing may be pending: the dump must match the cut exactly
            upto = writer.cut()
            state = dump(self.state.jobs.values(), failed_attempts=self.state.failed_attempts)
            self._since_snapshot = 0
            self._bytes_at_snapshot = writer.stats.bytes
            await writer.write_snapshot(state, upto)
            self.snapshots += 1
            self.last_snapshot_at = time.time()
            log.info(
                "[wal] snapshot of %d jobs covers segments below %d (%.2fs)",
                len(state["jobs"]),
                upto,
                time.perf_counter() - started,
            )
        except WalError as exc:
            self._fail(exc)
        except OSError as exc:  # the snapshot failed; the log itself is intact, so keep serving
            log.error("[wal] snapshot failed: %s", exc)
        finally:
            self._snapshot_task = None

    # ------------------------------------------------------------------ figures
    def extra(self) -> dict[str, Any]:
        """WAL and recovery figures for ``StatsReply.extra``."""
        figures: dict[str, Any] = {
            "wal_fsync": "on" if self.fsync else "off",
            "wal_bytes": _directory_bytes(self.directory),
            "wal_records_since_snapshot": self._since_snapshot,
            "wal_last_snapshot_at": self.last_snapshot_at,
        }
        writer = self._writer
        if writer is not None:
            wal = writer.stats
            figures.update(
                wal_commits=wal.commits,
                wal_records_per_commit=round(wal.records / wal.commits, 1) if wal.commits else 0.0,
                wal_sync_mean_ms=round(wal.sync_s / wal.syncs * 1000, 3) if wal.syncs else 0.0,
            )
        if not self.fsync:
            figures["wal_warning"] = "fsync is off: acknowledged jobs can be lost if the machine crashes"
        report = self.report
        if report is not None:
            figures.update(
                recovery_records=report.records,
                recovery_jobs=report.jobs,
                recovery_s=round(report.seconds, 3),
                recovery_dropped=report.problem,
            )
        return figures


def _directory_bytes(directory: Path) -> int:
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file():
                    total += entry.stat().st_size
    except FileNotFoundError:
        return 0
    return total


def _snapshot_mtime(directory: Path, segment: int) -> float | None:
    try:
        return (directory / wal_files.snapshot_name(segment)).stat().st_mtime
    except OSError:
        return None
