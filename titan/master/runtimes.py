"""Jobs that need a runtime not every worker has: ``.jar`` files need Java.

A worker with ``java`` on its PATH offers the ``JAVA`` skill (it adds it to its
REGISTER on its own). A ``RUN``/``DEPLOY`` of a ``.jar`` therefore requires
``JAVA``, so the scheduler only places it on such workers, and it is refused
at submission when no worker that is up offers it, instead of failing at run
time. (The built-in worker artifact, ``DEPLOY Worker.jar``, is not a Java file.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Final

from protocol import JobSpec, WorkerInfo
from titan.errors import ValidationError

from .admission import WORKER_ARTIFACTS

__all__ = ["JAVA_SKILL", "require_runtime"]

JAVA_SKILL: Final = "JAVA"
_FILE_KINDS: Final = frozenset({"RUN", "DEPLOY"})


def require_runtime(spec: JobSpec, workers: Iterable[WorkerInfo]) -> JobSpec:
    """The spec with the skills its file needs added.

    Raises:
        ValidationError: it needs Java and no worker that is up has it.
    """
    kind = spec.type.strip().upper()
    if kind not in _FILE_KINDS or spec.data in WORKER_ARTIFACTS or not spec.data.lower().endswith(".jar"):
        return spec
    if not any(JAVA_SKILL in worker.skills and worker.health not in ("LOST", "RETIRED") for worker in workers):
        raise ValidationError(
            f"cannot run '{spec.data}': no worker has Java "
            "(start a worker on a host with `java` on its PATH; it offers the JAVA skill)"
        )
    skills = [skill.strip().upper() for skill in spec.skills]
    return spec if JAVA_SKILL in skills else replace(spec, skills=[*skills, JAVA_SKILL])
