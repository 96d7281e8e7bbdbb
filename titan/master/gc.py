"""``titan gc``: remove the workspace folders of jobs finished long ago.

:func:`collectable` is the decision, a pure function of the folder names, the
job table and the clock: a folder goes if its job is final (COMPLETED, DEAD,
CANCELLED, SKIPPED, STOPPED) and finished before the cutoff, or if the master
knows no job by that name and the folder was last touched before the cutoff.
A job that is not final -- running, waiting, or FAILED and backing off before
a retry -- keeps its folder whatever its age. :func:`remove` does the deleting,
meant for a worker thread.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from titan.jobs import Job

__all__ = ["GC_NOTE", "collectable", "collected", "remove"]

#: the line a collected job's story gets (journaled, so it outlives a restart)
GC_NOTE = "logs and outputs removed by titan gc"


def collected(job: Job) -> bool:
    """Whether ``titan gc`` removed this job's folder (its story says so)."""
    return job.steps is not None and any(step.stimulus == GC_NOTE for step in job.steps)


def collectable(
    names: Iterable[str], jobs: Mapping[str, Job], cutoff: float, mtime: Callable[[str], float]
) -> list[str]:
    """The job folders to remove: final before ``cutoff`` (epoch seconds), or unknown and untouched since."""
    chosen: list[str] = []
    for name in names:
        job = jobs.get(name)
        if job is None:
            if mtime(name) < cutoff:
                chosen.append(name)
        elif job.is_final and (job.finished_at if job.finished_at is not None else mtime(name)) < cutoff:
            chosen.append(name)
    return sorted(chosen)


def remove(jobs_dir: Path, names: Iterable[str]) -> int:
    """Delete ``jobs_dir/<name>`` for each name; returns the bytes freed."""
    freed = 0
    for name in names:
        folder = jobs_dir / name
        for root, _, files in os.walk(folder):
            for file in files:
                try:
                    freed += os.lstat(os.path.join(root, file)).st_size
                except OSError:
                    pass
        shutil.rmtree(folder, ignore_errors=True)
    return freed
