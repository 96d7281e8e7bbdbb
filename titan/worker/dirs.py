"""Attempt directories: made when an attempt starts, recycled once it is reported.

Every attempt runs in ``jobs/<job_id>/attempt-<n>/``, with an ``outputs/``
directory and its ``stdout``/``stderr`` files. Making that tree costs five
metadata operations (200-700 us of kernel time on the ext4 disks we measured,
more than the spawn itself), and every one of them lands in the file system's
journal, which the master's WAL fsync has to flush too when both share a disk.

But a worker's copy of an attempt is scratch: once the attempt has ended, the
final TASK_STATUS carries its exact logs and output files, and the master
keeps them (``<master workspace>/jobs/<id>/attempt-<n>/``). So the worker
*recycles* the tree: :meth:`AttemptDirs.release` renames a pristine job tree
(``attempt-1/`` with nothing but ``stdout``, ``stderr`` and an empty
``outputs/``, and no process left holding those two files open: see
:func:`_unshared`) into a pool under ``<workspace>/.spare/``, and the next new job
takes it back with one ``rename``; the spawn truncates the files it opens. A
worker running short jobs back to back thus does two renames per attempt and
creates nothing, and its ``jobs/`` holds just what is running.

Anything else -- a retry (``attempt-2``), a job that left other files behind or
wrote outputs, a pool already full -- is renamed into ``<workspace>/.trash/``
and deleted there by a helper thread, so a job never finds another job's files
in its directory and the workspace does not grow with every attempt. An
attempt whose report could not carry everything (logs over the size limit,
outputs over theirs) is kept where it is, for someone to look at, and so are
the folders of attempts a killed run of the worker never reported: both for
``keep_attempts_s`` (a week by default) after the last change in them, then the
runner's sweep (at start and every so often) sends them to the trash.

A process that leaves its attempt's session (``setsid``) escapes the group
kill, here as it always did. The lease check keeps its open log files from
being handed on; a file it creates in its old directory later, though, could
still appear in the directory of a later job.

New jobs find the pool empty only until as many attempts have ended as run at
once; they then make their tree in place. Spares left at shutdown are reused by
the next runner; leftover trash is deleted.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Final

__all__ = ["AttemptDirs", "untouched_job_folders", "workspace_problem"]

log = logging.getLogger(__name__)

_FIRST: Final = "attempt-1"
# what a first attempt's directory may hold and still be handed to another job
_PRISTINE: Final = frozenset({"stdout", "stderr", "outputs"})
_LOGS: Final = ("stdout", "stderr")


class AttemptDirs:
    """Creates and recycles attempt directories (absolute paths only: see the engine's note on chdir).

    Args:
        workspace: absolute workspace path; ``jobs/``, ``.spare/`` and ``.trash/`` go under it.
        max_spares: the most recycled trees to keep (0: never recycle, delete instead).
    """

    def __init__(self, workspace: str, *, max_spares: int = 64) -> None:
        self.jobs_dir = f"{workspace}/jobs"
        self.spare_dir = f"{workspace}/.spare"
        self.trash_dir = f"{workspace}/.trash"
        self._max = max_spares
        self._ready: collections.deque[str] = collections.deque()
        self._prefix = secrets.token_hex(4)
        self._named = 0
        self._loop = asyncio.get_running_loop()
        self._emptying: asyncio.Future[None] | None = None
        self._trash_pending = False
        os.makedirs(self.jobs_dir, exist_ok=True)
        os.makedirs(self.spare_dir, exist_ok=True)
        os.makedirs(self.trash_dir, exist_ok=True)
        self._adopt_leftovers()

    @property
    def spares_ready(self) -> int:
        return len(self._ready)

    def make(self, job_id: str, attempt: int) -> str:
        """Return the attempt directory, created, with ``outputs/`` in it.

        Raises:
            OSError: the file system refused.
        """
        job_dir = f"{self.jobs_dir}/{job_id}"
        directory = f"{job_dir}/attempt-{attempt}"
        if attempt == 1 and self._ready:
            spare = self._ready.pop()  # the most recently used: its inodes are the likeliest cached
            try:
                os.rename(spare, job_dir)
                return directory
            except FileNotFoundError:
                pass  # the spare is gone (removed by hand): forget it
            except OSError:
                # the job directory exists already (a rerun on this worker): keep the spare
                self._ready.append(spare)
        # One mkdir per level, no stat first: each costs tens of microseconds or more.
        if attempt <= 1:
            _mkdir(job_dir)
        try:
            _mkdir(directory)
        except FileNotFoundError:
            _mkdir(job_dir)
            _mkdir(directory)
        _mkdir(f"{directory}/outputs")
        return directory

    def release(self, directory: str, *, keep: bool = False, outputs_empty: bool = False) -> None:
        """The attempt in ``directory`` has ended and been reported: recycle its tree, or delete it.

        ``keep`` leaves it where it is (its report could not carry everything).
        ``outputs_empty``: ``outputs/`` was found empty once the attempt's group was
        gone, so it need not be read again. Never raises: a directory that cannot
        be recycled or moved is left alone.
        """
        if keep:
            return
        job_dir, _, leaf = directory.rpartition("/")
        try:
            if (
                leaf == _FIRST
                and len(self._ready) < self._max
                and _pristine(job_dir, directory, outputs_empty=outputs_empty)
            ):
                spare = self._new_name(self.spare_dir)
                os.rename(job_dir, spare)
                self._ready.append(spare)
                return
            os.rename(directory, self._new_name(self.trash_dir))
        except OSError as exc:
            log.debug("cannot recycle %s: %s", directory, exc)
            return
        try:
            os.rmdir(job_dir)  # the job's last attempt here: its folder goes too
        except OSError:
            self._trash_job_folder(job_dir)
        self._empty_trash()

    def discard(self, job_dir: str) -> bool:
        """Move a job folder left in ``jobs/`` to the trash (deleted by the helper thread); False if it is gone."""
        try:
            os.rename(job_dir, self._new_name(self.trash_dir))
        except OSError as exc:
            log.debug("cannot discard %s: %s", job_dir, exc)
            return False
        self._empty_trash()
        return True

    def _trash_job_folder(self, job_dir: str) -> None:
        """A job folder that is not empty: trash it too unless an attempt is still in there."""
        try:
            if any(name.startswith("attempt-") for name in os.listdir(job_dir)):
                return
            os.rename(job_dir, self._new_name(self.trash_dir))
        except OSError as exc:
            log.debug("cannot clear %s: %s", job_dir, exc)

    def _new_name(self, folder: str) -> str:
        """A path in ``folder`` no other tree has or will have (this runner's prefix and a count)."""
        self._named += 1
        return f"{folder}/{self._prefix}-{self._named}"

    async def aclose(self) -> None:
        """Wait for the trash to be emptied; spares stay on disk for the next runner."""
        while self._emptying is not None:
            emptying = self._emptying
            if emptying.done():
                # its callback, which clears it or starts the next round, has yet to run; awaiting
                # a finished future never yields to the loop, so this would spin forever
                await asyncio.sleep(0)
            else:
                await asyncio.shield(emptying)

    # ------------------------------------------------------------------ the trash
    def _empty_trash(self) -> None:
        # one helper-thread job at a time, however many trees arrive meanwhile
        if self._emptying is not None:
            self._trash_pending = True
            return
        self._trash_pending = False
        self._emptying = self._loop.run_in_executor(None, _remove_contents, self.trash_dir)
        self._emptying.add_done_callback(self._emptied)

    def _emptied(self, future: asyncio.Future[None]) -> None:
        self._emptying = None
        if not future.cancelled() and future.exception() is not None:
            log.warning("cannot empty %s: %s", self.trash_dir, future.exception())
        if self._trash_pending:
            self._empty_trash()

    def _adopt_leftovers(self) -> None:
        for entry in os.listdir(self.spare_dir):
            path = f"{self.spare_dir}/{entry}"
            if len(self._ready) < self._max and os.path.isdir(f"{path}/{_FIRST}/outputs"):
                self._ready.append(path)
            else:
                os.rename(path, self._new_name(self.trash_dir))
        if os.listdir(self.trash_dir):
            self._empty_trash()


def untouched_job_folders(jobs_dir: str, since: float) -> list[str]:
    """Folders in ``jobs_dir`` in which nothing changed after ``since`` (a time.time()); for a helper thread.

    A job folder, its attempt folders and what lies directly in those are looked at:
    a log still being written, or an attempt added, keeps the folder young.
    """
    found: list[str] = []
    try:
        jobs = [entry.path for entry in os.scandir(jobs_dir) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return found
    for job_dir in jobs:
        try:
            if _newest_change(job_dir) < since:
                found.append(job_dir)
        except OSError:
            continue  # gone meanwhile, or unreadable: left alone
    return found


def _newest_change(job_dir: str) -> float:
    newest = os.stat(job_dir).st_mtime
    with os.scandir(job_dir) as attempts:
        for attempt in attempts:
            newest = max(newest, attempt.stat(follow_symlinks=False).st_mtime)
            if attempt.is_dir(follow_symlinks=False):
                with os.scandir(attempt.path) as entries:
                    for entry in entries:
                        newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def workspace_problem(workspace: Path) -> str | None:
    """Why ``workspace`` must not be a worker's, or None.

    A worker recycles and deletes the attempt folders under its ``jobs/``; in
    the master's workspace (it holds the write-ahead log, ``wal/``) those are
    the master's records of every job.
    """
    if (workspace / "wal").is_dir():
        return f"workspace {workspace} is a master's (it holds wal/): give each worker a folder of its own"
    return None


def _pristine(job_dir: str, directory: str, *, outputs_empty: bool) -> bool:
    """Would a new job find nothing of this one's in the tree? (Two or three directory reads, two leases.)"""
    with os.scandir(job_dir) as entries:
        if [entry.name for entry in entries] != [_FIRST]:
            return False
    with os.scandir(directory) as entries:
        names = {entry.name for entry in entries}
    if not names <= _PRISTINE or "outputs" not in names:
        return False
    if not outputs_empty:
        with os.scandir(f"{directory}/outputs") as entries:
            if next(entries, None) is not None:
                return False
    return all(_unshared(f"{directory}/{name}") for name in _LOGS if name in names)


def _unshared(path: str) -> bool:
    """True if no process has ``path`` open.

    The next job gets these very log files (truncated), so one that a process
    of the ended job still holds -- it left the attempt's session with
    ``setsid``, so the group kill missed it -- must not be handed on: it would
    write into the next job's log. The kernel grants a write lease only when
    nobody else has the file open, which answers that in three syscalls (closing
    the descriptor gives the lease back); where leases are not available the
    tree is simply not reused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _remove_contents(folder: str) -> None:
    """Runs in a helper thread: delete everything in ``folder``."""
    for entry in os.listdir(folder):
        path = f"{folder}/{entry}"
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        pass  # a rerun of the same attempt (at-least-once) reuses its directory
