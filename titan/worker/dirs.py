"""Attempt directories, made ahead of time off the event loop.

Every attempt needs ``jobs/<job_id>/attempt-<n>/`` with ``outputs/`` in it,
and its ``stdout``/``stderr``. On the ext4 disks we measured, those five
metadata operations cost 200-700 us of kernel time, more than the spawn
itself, and they would all run on the event loop's thread.

So a helper thread keeps a pool of *spare* trees under
``<workspace>/.spare/``: each one a would-be job directory holding a complete
``attempt-1/`` (with ``outputs/`` and empty ``stdout``/``stderr``). The first
attempt of a new job takes one with a single ``rename`` into ``jobs/``, and the
spawn then only truncates the existing output files. Anything else -- later
attempts, a job directory that already exists, an empty pool -- falls back to
making the directories in place. A spare is built under a temporary name and
renamed when complete, so the pool never holds half a tree; spares left at
shutdown are reused by the next runner. The pool grows with demand: it starts
empty and doubles (from 4, up to ``max_spares``) each time a first attempt
finds it empty, so a quiet worker keeps a handful and a busy one keeps enough.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import shutil
from typing import Final

__all__ = ["AttemptDirs", "next_target"]

log = logging.getLogger(__name__)

_BUILDING: Final = ".building-"
_OUT_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC


class AttemptDirs:
    """Creates attempt directories (absolute paths only: see the engine's note on chdir).

    Args:
        workspace: absolute workspace path; ``jobs/`` and ``.spare/`` go under it.
        max_spares: the most spare trees to keep ready (0 disables the pool).
    """

    def __init__(self, workspace: str, *, max_spares: int = 64) -> None:
        self.jobs_dir = f"{workspace}/jobs"
        self.spare_dir = f"{workspace}/.spare"
        self._max = max_spares
        self._target = 0
        self._ready: collections.deque[str] = collections.deque()
        self._filling: asyncio.Future[None] | None = None
        self._prefix = secrets.token_hex(4)
        self._built = 0
        self._loop = asyncio.get_running_loop()
        os.makedirs(self.jobs_dir, exist_ok=True)
        if max_spares:
            os.makedirs(self.spare_dir, exist_ok=True)
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
        if attempt == 1 and self._max:
            if self._ready:
                spare = self._ready.popleft()
                self._refill()
                try:
                    os.rename(spare, job_dir)
                    return directory
                except OSError:
                    # the job directory exists already (a rerun on this worker): keep the spare
                    self._ready.appendleft(spare)
            else:
                self._target = next_target(self._target, self._max)
                self._refill()
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

    async def aclose(self) -> None:
        """Wait for the helper thread; spares stay on disk for the next runner."""
        self._target = self._max = 0
        if self._filling is not None:
            await asyncio.shield(self._filling)

    # ------------------------------------------------------------------ the pool
    def _refill(self) -> None:
        # refill in batches from half empty: one executor job per batch, not per spare
        if self._target and self._filling is None and len(self._ready) <= self._target // 2:
            self._filling = self._loop.run_in_executor(None, self._build, self._target - len(self._ready))
            self._filling.add_done_callback(self._built_batch)

    def _built_batch(self, future: asyncio.Future[None]) -> None:
        self._filling = None
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            # not fatal: make() falls back to creating directories in place
            log.warning("cannot prepare spare attempt directories: %s", exc)
            self._target = self._max = 0

    def _build(self, count: int) -> None:
        """Runs in a worker thread; touches only absolute paths and the thread-safe deque."""
        for _ in range(count):
            if not self._target:
                return
            self._built += 1
            name = f"{self._prefix}-{self._built}"
            building = f"{self.spare_dir}/{_BUILDING}{name}"
            attempt = f"{building}/attempt-1"
            os.mkdir(building)
            os.mkdir(attempt)
            os.mkdir(f"{attempt}/outputs")
            for stream in ("stdout", "stderr"):
                os.close(os.open(f"{attempt}/{stream}", _OUT_FLAGS, 0o644))
            ready = f"{self.spare_dir}/{name}"
            os.rename(building, ready)
            self._ready.append(ready)

    def _adopt_leftovers(self) -> None:
        for entry in os.listdir(self.spare_dir):
            path = f"{self.spare_dir}/{entry}"
            if entry.startswith(_BUILDING):
                shutil.rmtree(path, ignore_errors=True)  # a build cut short by a crash
            else:
                self._ready.append(path)


def next_target(current: int, limit: int) -> int:
    """Pool size after a miss: double it, from 4, up to ``limit``."""
    return min(limit, max(4, current * 2))


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        pass  # a rerun of the same attempt (at-least-once) reuses its directory
