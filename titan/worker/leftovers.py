"""Processes that a previous run of this worker left running in its attempt folders.

Every attempt and every service runs in a session of its own, so that a stop
reaches all it started and a terminal's Ctrl-C reaches none of it. The price:
a worker killed outright (``kill -9``, the OOM killer, a crash) leaves them
running, and nobody will ever read their results. The master hands their jobs
to other workers once this one is lost, so each would run twice, and a service
(a DEPLOY) would serve twice, for good.

The next worker on the same workspace holds its lock, so no live worker owns
anything that still runs in ``<workspace>/jobs/``. It finds those processes by
their working directory (the attempt folder they were started in) *and* the
``TITAN_JOB_ID`` every job's environment carries, and kills their process
groups before it takes any task. Both are needed: a person's shell that merely
``cd``'d into a kept attempt folder to look at it works there too, and must
not be killed. Child workers are not touched:
they run in ``children/<port>/`` and are meant to outlive a parent that is
killed. Linux only (``/proc``); elsewhere there is nothing to scan and nothing
is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Final

__all__ = ["kill_leftovers", "leftover_groups"]


_JOB_MARK: Final = b"\0TITAN_JOB_ID="


def _is_job(pid_dir: str) -> bool:
    """Whether the process was started by a worker as a job (its environment names one)."""
    try:
        with open(f"{pid_dir}/environ", "rb") as f:
            environ = b"\0" + f.read()
    except OSError:
        return False
    return _JOB_MARK in environ


def leftover_groups(jobs_dir: Path | str, proc: Path | str = "/proc") -> set[int]:
    """The process groups of jobs' processes whose working directory is inside ``jobs_dir``."""
    root = os.path.realpath(jobs_dir) + os.sep
    own = os.getpgrp()
    groups: set[int] = set()
    try:
        entries = os.scandir(proc)
    except OSError:
        return groups
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                cwd = os.readlink(f"{entry.path}/cwd")
                group = os.getpgid(int(entry.name))
            except OSError:  # gone meanwhile, or another user's
                continue
            if cwd.startswith(root) and group != own and _is_job(entry.path):
                groups.add(group)
    return groups


def kill_leftovers(jobs_dir: Path | str) -> int:
    """SIGKILL every process group left running in ``jobs_dir``; returns how many there were."""
    groups = leftover_groups(jobs_dir)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    return len(groups)
