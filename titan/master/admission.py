"""Admission: turn a :class:`~protocol.JobSpec` into a :class:`~titan.jobs.Job`, or refuse it.

Everything a submission can get wrong is found here, before anything is stored:
an unknown type, a RUN file that is not a regular file inside ``perm_files/``,
an empty SHELL command, a bad or duplicate id. The answer is a one-line
:class:`~titan.errors.ValidationError`.

Types
-----
``RUN`` ships a file from ``perm_files/``; ``SHELL`` runs an inline command line;
``DEPLOY`` of a script ships it like RUN and the worker keeps it running as a
service (``titan/worker/deployments.py``); ``DEPLOY`` of the worker artifact
(``worker`` / ``Worker.jar``) asks the worker to start a child worker on the
given port (0: any free display port); any other ``TYPE`` names a handler
``perm_files/handlers/<type>.py``, run as RUN of that script with ``[data, *args]``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Container
from pathlib import PurePosixPath
from typing import Final

from protocol import JobSpec
from titan.errors import ValidationError
from titan.jobs import DAG_ID_PREFIX, Job, JobState, check_job_id, new_job_id

from .files import FileCatalog

__all__ = ["BUILTIN_TYPES", "WORKER_ARTIFACT", "WORKER_ARTIFACTS", "Admission"]

BUILTIN_TYPES: Final = ("RUN", "SHELL", "DEPLOY")
WORKER_ARTIFACTS: Final = frozenset({"worker", "Worker.jar"})
#: ``run_data`` of a DEPLOY of the worker artifact (what the worker is told to start)
WORKER_ARTIFACT: Final = "worker"
_HANDLER_NAME: Final = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


class Admission:
    """Validates specs and builds jobs; stores nothing."""

    def __init__(
        self,
        files: FileCatalog,
        *,
        rng: random.Random,
        max_payload_bytes: int,
        story_limit: int,
        backoff: tuple[float, float, float] = (1.0, 2.0, 60.0),
    ) -> None:
        self.files = files
        self.rng = rng
        self.max_payload_bytes = max_payload_bytes
        self.story_limit = story_limit
        self.backoff = backoff  # (base_s, factor, cap_s) for jobs that set none

    def build(self, spec: JobSpec, *, seq: int, now: float, taken: Container[str], dag: str | None = None) -> Job:
        """A new job in its first state (BLOCKED with deps, DELAYED with a delay, else PENDING).

        Raises:
            ValidationError: the spec is refused; nothing was stored.
        """
        job_id = self._job_id(spec, taken)
        # an id the master made up means nothing to the one refused: name only ids they gave
        who = f"job '{job_id}'" if spec.id is not None else "the job"
        if spec.timeout_s is not None and spec.type.strip().upper() == "DEPLOY":
            raise ValidationError(f"{who}: a DEPLOY is a service, which runs until STOP or CANCEL: it takes no timeout")
        run_kind, run_data, run_args = self.resolve(spec)
        if spec.id is not None and spec.id in spec.deps:
            raise ValidationError(f"job '{job_id}' depends on itself")
        backoff = self._backoff(who, spec)
        if spec.deps:
            state = JobState.BLOCKED
        elif spec.delay_ms > 0:
            state = JobState.DELAYED
        else:
            state = JobState.PENDING
        job = Job.from_spec(
            spec,
            job_id=job_id,
            seq=seq,
            now=now,
            state=state,
            run_kind=run_kind,
            run_data=run_data,
            run_args=run_args,
            story_limit=self.story_limit,
            dag=dag,
            backoff=backoff,
        )
        if len(set(job.deps)) != len(job.deps):
            job.deps = tuple(dict.fromkeys(job.deps))  # [A, A] means [A]
        if state is JobState.DELAYED:
            job.due = now + spec.delay_ms / 1000
        return job

    def _backoff(self, who: str, spec: JobSpec) -> tuple[float, float, float]:
        if spec.backoff_base_s is None and spec.backoff_factor is None and spec.backoff_cap_s is None:
            return self.backoff
        base, factor, cap = self.backoff
        if spec.backoff_base_s is not None:
            if not spec.backoff_base_s > 0:
                raise ValidationError(f"{who}: backoff base must be positive, got {spec.backoff_base_s:g}")
            base = spec.backoff_base_s
        if spec.backoff_factor is not None:
            if not spec.backoff_factor >= 1:
                raise ValidationError(f"{who}: backoff factor must be at least 1, got {spec.backoff_factor:g}")
            factor = spec.backoff_factor
        if spec.backoff_cap_s is not None:
            if not spec.backoff_cap_s > 0:
                raise ValidationError(f"{who}: backoff cap must be positive, got {spec.backoff_cap_s:g}")
            cap = spec.backoff_cap_s
        return base, factor, cap

    def _job_id(self, spec: JobSpec, taken: Container[str]) -> str:
        if spec.id is None:
            job_id = new_job_id(self.rng)
            while job_id in taken:
                job_id = new_job_id(self.rng)
            return job_id
        problem = check_job_id(spec.id)
        if problem:
            raise ValidationError(problem)
        if spec.id.startswith(DAG_ID_PREFIX):
            raise ValidationError(f"job id '{spec.id}' is not allowed: ids starting with '{DAG_ID_PREFIX}' name DAGs")
        if spec.id in taken:
            raise ValidationError(f"a job with id '{spec.id}' already exists")
        return spec.id

    def resolve(self, spec: JobSpec) -> tuple[str, str, tuple[str, ...]]:
        """What the worker runs: ``(kind, data, args)``."""
        kind = spec.type.strip().upper()
        if kind == "SHELL":
            if not spec.data.strip():
                raise ValidationError("SHELL needs a command: SHELL|<command line>")
            return "SHELL", spec.data, tuple(spec.args)
        if kind == "RUN":
            return "RUN", self._file(spec), tuple(spec.args)
        if kind == "DEPLOY":
            if spec.data in WORKER_ARTIFACTS:
                if spec.port is None or not 0 <= spec.port <= 65535:
                    raise ValidationError(f"DEPLOY of {spec.data} needs a PORT: 1 to 65535, or 0 for any free one")
                return "DEPLOY", WORKER_ARTIFACT, (str(spec.port), *spec.args)
            if spec.port is not None and not 1 <= spec.port <= 65535:
                raise ValidationError(f"DEPLOY of {spec.data}: port must be between 1 and 65535, got {spec.port}")
            return "DEPLOY", self._file(spec), tuple(spec.args)
        script = self.files.handler(kind) if _HANDLER_NAME.fullmatch(kind) else None
        if script is None:
            raise ValidationError(self._unknown_type(spec.type))
        return "RUN", script, (spec.data, *spec.args)

    def _file(self, spec: JobSpec) -> str:
        if spec.payload is None:
            return self.files.resolve(spec.data)
        # a script sent inline: only its base name is used, and the same size limit applies
        name = PurePosixPath(spec.data.replace("\\", "/")).name
        if not name or name in (".", ".."):
            raise ValidationError("an inline script needs a file name in its data field")
        if len(spec.payload) > self.max_payload_bytes:
            raise ValidationError(
                f"inline script '{name}' is {len(spec.payload)} bytes, over the {self.max_payload_bytes}-byte limit"
            )
        return name

    def _unknown_type(self, type_name: str) -> str:
        handlers = self.files.handler_types()
        known = ", ".join([*BUILTIN_TYPES, *handlers])
        return f"unknown job type '{type_name}': expected one of {known}"
