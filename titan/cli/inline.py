"""Local files sent with a submission, and the durations the CLI accepts.

``SUBMIT RUN|@./job.py`` (and ``titan submit --file job.py``) reads the script
on the client's machine and sends its bytes inline (``JobSpec.payload``), so a
job need not be in the master's ``perm_files/``. The master applies the same
size limit as to ``perm_files/`` and runs it like any ``RUN`` file, by its name's
suffix.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Final

from protocol import DEFAULT_MAX_BODY, JobSpec
from titan.errors import UsageError

__all__ = ["FILE_KINDS", "MAX_INLINE_BYTES", "attach_inline", "inline_spec"]

FILE_KINDS: Final = frozenset({"RUN", "DEPLOY"})
# no frame a master takes by default can carry more (its own limit for scripts is lower still)
MAX_INLINE_BYTES: Final = DEFAULT_MAX_BODY


def inline_spec(spec: JobSpec, path: str) -> JobSpec:
    """``spec`` with the local file at ``path`` as its inline payload, named by its base name.

    Raises:
        UsageError: the file cannot be read.
    """
    file = Path(path).expanduser()
    try:
        data = _read_script(file)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data is None:
        raise UsageError(f"cannot send {path}: not a regular file")
    if len(data) > MAX_INLINE_BYTES:
        raise UsageError(f"cannot send {path}: over the {MAX_INLINE_BYTES}-byte limit of a frame")
    return replace(spec, data=file.name, payload=data)


def _read_script(file: Path) -> bytes | None:
    """Up to one byte past :data:`MAX_INLINE_BYTES` of a regular file; None for anything else.

    A device (``/dev/zero``) or a pipe may never end: read whole, it would fill the memory, and a
    FIFO with no writer would block the open itself, hence O_NONBLOCK (no effect on a regular file).
    """
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return stream.read(MAX_INLINE_BYTES + 1)


def attach_inline(spec: JobSpec) -> JobSpec:
    """A ``RUN``/``DEPLOY`` whose data is ``@path`` sends that local file inline; any other spec is unchanged."""
    if spec.payload is None and spec.type.upper() in FILE_KINDS and spec.data.startswith("@"):
        path = spec.data[1:].strip()
        if not path:
            raise UsageError(f"{spec.type.upper()}|@PATH needs a local file after '@'")
        return inline_spec(spec, path)
    return spec
