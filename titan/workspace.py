"""The workspace lock: one master or one worker per workspace, never two.

A master's workspace holds its write-ahead log; a second master on the same
folder would append a segment of its own, number its jobs from the same counter
and leave a log that no restart reads back as one history. A worker's workspace
holds attempt folders it recycles and deletes; a second worker there would
recycle the first one's. So each process takes an exclusive ``flock`` on
``<workspace>/titan.lock`` before it reads or writes anything else there, and
holds it until it exits.

``flock`` rather than a pid file: the kernel drops the lock when the process
dies however it dies (``kill -9`` included), so there is never a stale lock to
clean up, and it is never released by another descriptor of the same file being
closed (which POSIX ``fcntl`` locks are). The file itself only says who holds
the lock (role, pid, host, port) so that the refusal can name them; its
contents are advisory and may be stale once the holder is gone. The file is
never deleted: unlinking it while another process waits to open it would let
two processes lock two different files of the same name.

The descriptor is close-on-exec (Python's default), so an attempt's process or
a child worker that outlives its parent does not keep the parent's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Final

from titan.errors import WorkspaceError, WorkspaceInUse

__all__ = ["LOCK_NAME", "WorkspaceLock"]

LOCK_NAME: Final = "titan.lock"
# the holder's record is one short JSON line; anything longer is not ours
_MAX_RECORD: Final = 4096


class WorkspaceLock:
    """An exclusive lock on a workspace, held from :meth:`acquire` to :meth:`release` (or the process's end).

    Attributes:
        workspace: the folder, as given.
        role: ``"master"`` or ``"worker"``; said in the refusal another process gets.
    """

    def __init__(self, workspace: Path, role: str, fd: int) -> None:
        self.workspace = workspace
        self.role = role
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, workspace: Path, role: str, *, port: int | None = None) -> WorkspaceLock:
        """Create ``workspace`` if needed and lock it, without waiting.

        Raises:
            WorkspaceInUse: another live process holds it (the message names it).
            WorkspaceError: the folder or its lock file cannot be made or locked.
        """
        path = workspace / LOCK_NAME
        try:
            workspace.mkdir(parents=True, exist_ok=True)
            # no O_TRUNC: the file says who holds the lock, and we do not know yet that it is us
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise WorkspaceError(f"cannot use workspace {workspace}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            pid = holder.get("pid")
            raise WorkspaceInUse(_in_use(workspace, holder), pid=pid if isinstance(pid, int) else None) from None
        except OSError as exc:
            os.close(fd)
            raise WorkspaceError(f"cannot lock workspace {workspace}: {exc.strerror or exc}") from None
        lock = cls(workspace, role, fd)
        lock.record(port)
        return lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def record(self, port: int | None) -> None:
        """Write who holds the lock (again, once the port is known). Best effort: the lock is what counts."""
        if self._fd is None:
            return
        holder = {"role": self.role, "pid": os.getpid(), "host": socket.gethostname(), "port": port}
        data = (json.dumps(holder) + "\n").encode()
        try:
            # written, then cut to length: a reader in between sees a line it cannot parse, never a wrong pid
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
        except OSError:
            pass

    def release(self) -> None:
        """Give the lock back (closing the descriptor drops it). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _in_use(workspace: Path, holder: dict[str, object]) -> str:
    """``workspace W is in use by another master (pid 1234, port 9090)``: as much as the holder said."""
    role = holder.get("role")
    who = f"another {role}" if role in ("master", "worker") else "another process"
    details = []
    pid, host, port = holder.get("pid"), holder.get("host"), holder.get("port")
    if isinstance(pid, int):
        # the host matters only when it is not this one (a workspace on a shared file system)
        elsewhere = isinstance(host, str) and host != socket.gethostname()
        details.append(f"pid {pid} on {host}" if elsewhere else f"pid {pid}")
    if isinstance(port, int):
        details.append(f"port {port}")
    return f"workspace {workspace} is in use by {who}" + (f" ({', '.join(details)})" if details else "")


def _read_holder(fd: int) -> dict[str, object]:
    """What the holder wrote about itself, or {} if it cannot be read (it may be writing it right now)."""
    try:
        data = os.pread(fd, _MAX_RECORD, 0)
    except OSError:
        return {}
    with contextlib.suppress(ValueError):
        holder = json.loads(data)
        if isinstance(holder, dict):
            return holder
    return {}
