"""The process primitives the worker's attempts and services share.

A process is spawned with ``os.posix_spawn`` in a session of its own (so its
pid is also its process group id), with stdout and stderr opened by the spawn
itself onto files in its directory, and the signals Python ignores put back to
their defaults. Its exit is watched with a pidfd on the event loop; once that
pidfd is readable the leader is a zombie that still pins the group id, which is
the moment to clear out whatever it left in its group and then reap it.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Final

__all__ = ["RESET_SIGNALS", "reap", "signal_group", "spawn_in"]

# Python ignores SIGPIPE (and SIGXFSZ); a job must get the default back, or
# `yes | head` in it would spin on EPIPE instead of ending.
RESET_SIGNALS: Final = (signal.SIGPIPE, signal.SIGXFSZ)
_TRUNCATE: Final = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
_APPEND: Final = os.O_WRONLY | os.O_CREAT | os.O_APPEND


def spawn_in(argv: Sequence[str], env: Mapping[str, str], directory: str, *, home_fd: int, append: bool = False) -> int:
    """Start ``argv`` in ``directory`` as the leader of a new session; returns its pid.

    Python 3.11's ``posix_spawn`` cannot set the child's working directory, so
    the worker changes its own around the (synchronous) call and returns to
    ``home_fd``: safe on a single-threaded event loop, which is why the worker
    only ever uses absolute paths.

    Raises:
        OSError: the program could not be started.
    """
    flags = _APPEND if append else _TRUNCATE
    # The child starts in ``directory``: short relative names, and stdin from a /dev/null kept
    # open, spare it path lookups while the vfork'ed parent waits.
    actions = [
        (os.POSIX_SPAWN_DUP2, _dev_null(), 0),
        (os.POSIX_SPAWN_OPEN, 1, "stdout", flags, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, "stderr", flags, 0o644),
    ]
    os.chdir(directory)
    try:
        return os.posix_spawn(
            argv[0], list(argv), dict(env), file_actions=actions, setsid=True, setsigdef=RESET_SIGNALS
        )
    finally:
        os.fchdir(home_fd)


@functools.cache
def _dev_null() -> int:
    """A read-only descriptor of /dev/null, opened once per process (close-on-exec: no job inherits it)."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def signal_group(pgid: int, signum: int) -> None:
    """Signal a whole process group; a group that is already gone is not an error."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def reap(pid: int) -> int | None:
    """Clear out the group of a leader whose pidfd turned readable, then reap it.

    Returns its exit code (negative for a signal), or None if something else
    reaped it first.
    """
    signal_group(pid, signal.SIGKILL)
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped == 0:  # cannot happen after a readable pidfd; the SIGKILL above bounds the wait
            reaped, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)
