"""Logs and results at rest: ``<workspace>/jobs/<id>/attempt-<n>/``.

Each attempt's folder in the master's workspace holds:

* ``stdout``, ``stderr``: while the attempt runs, what arrived live over UDP
  (appended as it comes, gaps and all); once the attempt's final TASK_STATUS
  is in, the worker's exact copy replaces them (written to a temporary name
  and renamed, so a reader sees one or the other, never a mix). Over the
  worker's size limit only the tail is there, and ``result.json`` says so.
* ``result.json``: how the attempt ended (state, exit code, error, times,
  worker) and what happened to its logs (``truncated``, ``log_lost``: live
  datagrams that never arrived, ``stdout_bytes``/``stderr_bytes`` stored).
* ``outputs/``: the job's output files (:mod:`titan.master.artifacts`).

A completed attempt with nothing to keep (no output, no file, nothing lost)
gets no folder at all: the job's record says how it ended.

:class:`LogStore` is the only code that writes the first two.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from protocol import TaskStatus
from titan.jobs import Job
from titan.wal.files import write_all

__all__ = ["AttemptLogStats", "LogStore", "Stream"]

log = logging.getLogger(__name__)

# (job id, attempt), its exact logs, the streams with a live copy, its result.json
_Pending = tuple[tuple[str, int], dict[str, bytes], set[str], dict[str, Any]]

Stream = Literal["stdout", "stderr"]
STREAMS: Final[tuple[Stream, Stream]] = ("stdout", "stderr")
RESULT_FILE: Final = "result.json"
_APPEND: Final = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
_REPLACE: Final = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class AttemptLogStats:
    """What STATUS shows about an attempt's logs."""

    log_lost: int = 0
    truncated: bool = False


class LogStore:
    """The attempt folders under ``<workspace>/jobs``.

    Args:
        workspace: the master's workspace.
        write_delay_s: how long ended attempts may wait to be written together (see :meth:`store_ended`).
    """

    def __init__(self, workspace: Path, *, write_delay_s: float = 0.005) -> None:
        self.jobs_dir = Path(workspace).absolute() / "jobs"
        self.write_delay_s = write_delay_s
        self._stats: dict[tuple[str, int], AttemptLogStats] = {}
        # exact logs handed to the writer thread and not yet on disk
        self._unwritten: dict[tuple[str, int], dict[str, bytes]] = {}
        # (job id, attempt, stream) with a live copy on disk, which the exact log must replace atomically
        self._live: set[tuple[str, int, str]] = set()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="titan-logstore")
        # ended attempts for the writer thread, oldest first; a turn of the thread is pending or running
        self._queue: collections.deque[_Pending] = collections.deque()
        self._turn_pending = False

    def attempt_dir(self, job_id: str, attempt: int) -> Path:
        return self.jobs_dir / job_id / f"attempt-{attempt}"

    # ------------------------------------------------------------------ live copies
    def read_range(self, job_id: str, attempt: int, stream: Stream, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` of a live copy on disk (fewer if it is shorter; b"" if there is none)."""
        try:
            fd = os.open(self.attempt_dir(job_id, attempt) / stream, os.O_RDONLY)
        except OSError:
            return b""
        try:
            return os.pread(fd, end - start, start)
        except OSError:
            return b""
        finally:
            os.close(fd)

    def size(self, job_id: str, attempt: int, stream: Stream) -> int:
        """The bytes of a stored log or live copy on disk (0 if there is none)."""
        try:
            return (self.attempt_dir(job_id, attempt) / stream).stat().st_size
        except OSError:
            return 0

    def open_live(self, job_id: str, attempt: int, stream: Stream) -> int:
        """An fd appending to the attempt's live copy of ``stream`` (folders made as needed).

        Raises:
            OSError: the disk refused.
        """
        directory = self.attempt_dir(job_id, attempt)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / stream, _APPEND, 0o644)
        self._live.add((job_id, attempt, stream))
        return fd

    # ------------------------------------------------------------------ at rest
    def store_ended(self, status: TaskStatus, job: Job | None, stats: AttemptLogStats) -> None:
        """Store an ended attempt's exact logs and its ``result.json``.

        The files are written by one background thread, in order, so the event
        loop never waits on the disk for the hottest message of all (thousands of
        attempts end per second). The thread takes whatever has queued up since
        its last turn and tells the loop once per turn, not once per attempt;
        a turn starts ``write_delay_s`` after the attempt that found the thread
        idle, so that busy masters write several attempts per turn, and so that
        the files do not compete with the WAL's fsync of the same report, which
        the client waits on.
        Until it has written them, :meth:`read` answers from the bytes held
        here; :meth:`flush` waits for the thread.
        """
        key = (status.job_id, status.attempt)
        exact = {
            stream: data for stream, data in (("stdout", status.stdout), ("stderr", status.stderr)) if data is not None
        }
        if _nothing_to_keep(status, exact, stats) and not self._has_live_copy(key):
            return  # :meth:`read` and :meth:`stats` answer b"" and zeros for a folder that is not there
        self._stats[key] = stats
        self._unwritten[key] = exact
        live = {stream for stream in exact if (*key, stream) in self._live}
        self._live.difference_update((*key, stream) for stream in live)
        self._queue.append((key, exact, live, self._result(status, job, stats)))
        if not self._turn_pending:
            self._schedule_turn()

    def _has_live_copy(self, key: tuple[str, int]) -> bool:
        return (*key, "stdout") in self._live or (*key, "stderr") in self._live

    def _schedule_turn(self) -> None:
        self._turn_pending = True
        loop = asyncio.get_running_loop()
        loop.call_later(self.write_delay_s, self._start_turn, loop)

    def _start_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._writer.submit(self._turn, loop)
        except RuntimeError:
            pass  # closed meanwhile: close() wrote what was queued

    def _turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Runs on the writer thread: write what is queued, then tell the loop what is on disk."""
        written = self._write_queued()
        try:
            loop.call_soon_threadsafe(self._turn_done, written)
        except RuntimeError:
            pass  # the loop is gone: nobody is left to read from memory

    def _turn_done(self, written: list[tuple[str, int]]) -> None:
        for key in written:
            self._unwritten.pop(key, None)
        self._turn_pending = False
        if self._queue:  # queued after the thread's last look
            self._schedule_turn()

    def _write_queued(self) -> list[tuple[str, int]]:
        written = []
        queue = self._queue
        while queue:
            key, exact, live, result = queue.popleft()  # deque pops are atomic: the loop only appends
            self._write(self.jobs_dir, key, exact, live, result)
            written.append(key)
        return written

    def _result(self, status: TaskStatus, job: Job | None, stats: AttemptLogStats) -> dict[str, Any]:
        """``result.json`` of an ended attempt; the job's record (if it has one for it) wins over the report."""
        runs = job.runs if job is not None else ()
        run = next((run for run in reversed(runs) if run.attempt == status.attempt), None)
        return {
            "job_id": status.job_id,
            "attempt": status.attempt,
            "state": run.state if run is not None and run.state not in ("SCHEDULED", "RUNNING") else status.state,
            "exit_code": status.exit_code,
            "error": (run.error if run is not None and run.error else status.error),
            "started_at": status.started_at if status.started_at is not None else (run and run.started_at),
            "finished_at": status.finished_at if status.finished_at is not None else (run and run.finished_at),
            "worker": run.worker if run is not None else (job.worker_name if job is not None else None),
            "truncated": stats.truncated,
            "log_lost": stats.log_lost,
            "outputs": sorted(status.outputs),
        }

    @staticmethod
    def _write(
        jobs_dir: Path, key: tuple[str, int], exact: dict[str, bytes], live: set[str], result: dict[str, Any]
    ) -> None:
        """Runs on the writer thread: replace the live copies, then write the result.

        Thousands of attempts end per second, and every file created or renamed
        here lands in the file system's journal, which the WAL's fsync has to
        flush too: so a log is renamed into place only over a live copy (``live``:
        a reader outside the master might be reading it), and is written
        straight to its name otherwise. Readers inside the master never see a partial
        file: :meth:`read` answers from memory until this has returned.
        """
        job_dir = f"{jobs_dir}/{key[0]}"
        path = f"{job_dir}/attempt-{key[1]}"
        try:
            if not live:  # a live copy made the folders already
                try:
                    if key[1] == 1:
                        _mkdir(job_dir)
                    _mkdir(path)
                except FileNotFoundError:  # no jobs/ yet, or a later attempt's job folder is gone
                    os.makedirs(path, exist_ok=True)
            for stream, data in exact.items():
                final = f"{path}/{stream}"
                if stream in live:
                    tmp = f"{path}/.{stream}.tmp"
                    _write_file(tmp, data)
                    os.replace(tmp, final)
                else:
                    _write_file(final, data)
            for stream in STREAMS:
                result[f"{stream}_bytes"] = len(exact[stream]) if stream in exact else _size(f"{path}/{stream}")
            _write_file(f"{path}/{RESULT_FILE}", (json.dumps(result, indent=2) + "\n").encode())
        except OSError as exc:
            log.warning("%s attempt %d: cannot store its logs and result: %s", key[0], key[1], exc)

    def flush(self) -> None:
        """Block until every attempt handed to :meth:`store_ended` is on disk."""
        self._writer.submit(self._write_queued).result()

    def close(self) -> None:
        """Finish the pending writes and stop the writer thread."""
        self._writer.submit(self._write_queued)
        self._writer.shutdown(wait=True)

    def stats(self, job_id: str, attempt: int) -> AttemptLogStats:
        """The log figures of an ended attempt (from memory, else its ``result.json``; zeros if none)."""
        key = (job_id, attempt)
        found = self._stats.get(key)
        if found is None:
            found = AttemptLogStats()
            try:
                saved = json.loads((self.attempt_dir(job_id, attempt) / RESULT_FILE).read_text(encoding="utf-8"))
                found = AttemptLogStats(int(saved.get("log_lost", 0)), bool(saved.get("truncated", False)))
            except (OSError, ValueError, TypeError, AttributeError):
                pass
            self._stats[key] = found
        return found

    def read(self, job_id: str, attempt: int, stream: Stream) -> bytes:
        """A stored log, or b"" if there is none."""
        unwritten = self._unwritten.get((job_id, attempt))
        if unwritten is not None and stream in unwritten:
            return unwritten[stream]
        try:
            return (self.attempt_dir(job_id, attempt) / stream).read_bytes()
        except OSError:
            return b""

    def forget(self, job_id: str) -> None:
        """Drop what is remembered about a job whose folder is gone (gc)."""
        for key in [key for key in self._stats if key[0] == job_id]:
            del self._stats[key]
        for key in [key for key in self._unwritten if key[0] == job_id]:
            del self._unwritten[key]


def _nothing_to_keep(status: TaskStatus, exact: dict[str, bytes], stats: AttemptLogStats) -> bool:
    """A completed attempt that printed nothing, wrote no outputs and lost nothing gets no folder.

    Its record in the job table already holds everything its ``result.json``
    would say, and most jobs of a busy cluster are like that: their folders
    were five file system operations each, all in the journal that the WAL's
    fsync flushes. Failed attempts keep theirs, for a person to look at.
    """
    return status.state == "COMPLETED" and not status.outputs and not any(exact.values()) and stats == AttemptLogStats()


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, _REPLACE, 0o644)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        pass  # a rerun of the attempt, or a folder the live log made
