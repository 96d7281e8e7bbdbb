"""Results a worker could not deliver before it stopped, kept for its next start.

A worker keeps the reports it could not send (the master was away) in memory and
sends them with its next REGISTER. One that is stopped in order while its master is
away would lose them, and the master would count those attempts as lost with their
worker. So an orderly stop writes them to ``<workspace>/undelivered.msgpack``
(atomically: a temporary file, fsync, rename), and the next worker started on the
workspace (the same id: the same host and port) sends them with its first REGISTER,
where the master applies or fences them like any other late report. A file that
cannot be read is named in one line and left aside, never fatal.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

import msgpack

from protocol import ProtocolError, TaskStatus

__all__ = ["FILE_NAME", "forget", "load", "save"]

log = logging.getLogger(__name__)

FILE_NAME: Final = "undelivered.msgpack"


def save(workspace: Path, statuses: list[TaskStatus]) -> Path:
    """Write ``statuses`` for the next start, replacing what an earlier stop left.

    Raises:
        OSError: the disk refused.
    """
    path = workspace / FILE_NAME
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as out:
        out.write(msgpack.packb([status.to_wire() for status in statuses], use_bin_type=True))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def load(workspace: Path) -> list[TaskStatus]:
    """What a previous run kept (none: []). The file stays until :func:`forget` (they may not go out)."""
    path = workspace / FILE_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read %s: %s; its results are not sent", path, exc.strerror or exc)
        return []
    try:
        items = msgpack.unpackb(data, raw=False)
        if not isinstance(items, list):
            raise ValueError("not a list")
        return [TaskStatus.from_wire(item) for item in items]
    except (ValueError, TypeError, ProtocolError, msgpack.UnpackException) as exc:
        aside = path.with_suffix(".unreadable")
        os.replace(path, aside)
        log.warning("%s is not a list of results (%s); moved to %s", path, type(exc).__name__, aside.name)
        return []


def forget(workspace: Path) -> None:
    """The kept results are delivered: the file goes."""
    try:
        os.unlink(workspace / FILE_NAME)
    except FileNotFoundError:
        pass
