"""What a worker offers the master in its REGISTER, besides its slots.

Its skills (with ``JAVA`` added where a ``java`` runs: ``.jar`` jobs need it,
see ``titan/master/runtimes.py``), the memory jobs may reserve on it (the
machine's physical memory unless ``--memory`` says otherwise), and the final
reports it kept while the master was away, as many as one frame carries.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final

from protocol import TaskStatus

from .command import CommandBuilder

__all__ = ["fit_in_one_frame", "machine_memory_mb", "offered_skills"]

JAVA_SKILL: Final = "JAVA"


def offered_skills(configured: Sequence[str], commands: CommandBuilder) -> list[str]:
    """The skills from the settings, plus ``JAVA`` where ``java`` is on the PATH."""
    skills = list(configured)
    if JAVA_SKILL not in skills and commands.which("java") is not None:
        skills.append(JAVA_SKILL)
    return skills


def machine_memory_mb() -> int | None:
    """This machine's physical memory in MiB, or None where the system does not say."""
    try:
        return max(1, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024))
    except (ValueError, OSError, AttributeError):
        return None


def fit_in_one_frame(outbox: list[TaskStatus], budget: int) -> tuple[list[TaskStatus], list[TaskStatus]]:
    """Split final reports into those a REGISTER can carry (logs and outputs within ``budget``) and the rest."""
    fits: list[TaskStatus] = []
    rest: list[TaskStatus] = []
    used = 0
    for status in outbox:
        size = len(status.stdout or b"") + len(status.stderr or b"") + sum(map(len, status.outputs.values()))
        if used + size <= budget:
            used += size
            fits.append(status)
        else:
            rest.append(status)
    return fits, rest
