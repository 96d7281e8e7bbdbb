"""Local files sent with a submission, and the durations the CLI accepts.

``SUBMIT RUN|@./job.py`` (and ``titan submit --file job.py``) reads the script
on the client's machine and sends its bytes inline (``JobSpec.payload``), so a
job need not be in the master's ``perm_files/``. The master applies the same
size limit as to ``perm_files/`` and runs it like any ``RUN`` file, by its name's
suffix.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Final

from protocol import JobSpec
from titan.errors import UsageError

__all__ = ["FILE_KINDS", "attach_inline", "inline_spec", "parse_duration"]

FILE_KINDS: Final = frozenset({"RUN", "DEPLOY"})
_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)
_UNIT_S: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def inline_spec(spec: JobSpec, path: str) -> JobSpec:
    """``spec`` with the local file at ``path`` as its inline payload, named by its base name.

    Raises:
        UsageError: the file cannot be read.
    """
    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    return replace(spec, data=file.name, payload=data)


def attach_inline(spec: JobSpec) -> JobSpec:
    """A ``RUN``/``DEPLOY`` whose data is ``@path`` sends that local file inline; any other spec is unchanged."""
    if spec.payload is None and spec.type.upper() in FILE_KINDS and spec.data.startswith("@"):
        path = spec.data[1:].strip()
        if not path:
            raise UsageError(f"{spec.type.upper()}|@PATH needs a local file after '@'")
        return inline_spec(spec, path)
    return spec


def parse_duration(text: str) -> float:
    """``90``, ``45s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds.

    Raises:
        UsageError: anything else.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise UsageError(f"bad duration '{text}': expected a number with an optional unit s, m, h, d or w (e.g. 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2).lower()]
