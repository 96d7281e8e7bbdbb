"""The job record: what was asked (the spec) and what happened (runtime fields).

A :class:`Job` is plain mutable data. Only the handlers in :mod:`titan.jobs.states`
change ``state`` (through :func:`~titan.jobs.states.transition`); everything else
reads it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Final

from protocol import JobInfo, JobSpec, TransitionInfo

from .attempts import AttemptRecord
from .states import FINAL_STATES, JobState, Step

__all__ = ["DAG_ID_PREFIX", "Job", "check_job_id", "new_job_id"]

_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")


def new_job_id(rng: random.Random) -> str:
    """``TSK-`` and 8 hex digits."""
    return f"TSK-{rng.getrandbits(32):08x}"


#: the master names each DAG ``DAG-`` and 8 hex digits; a job id may not start so, or the two would mix
DAG_ID_PREFIX: Final = "DAG-"


def check_job_id(job_id: str) -> str | None:
    """None if ``job_id`` is acceptable, else why not (ids name folders on disk)."""
    if _ID_PATTERN.fullmatch(job_id):
        return None
    # quoted with escapes and cut short: the message stays one readable line whatever was sent
    shown = repr(job_id) if len(job_id) <= 70 else f"{job_id[:60]!r}... ({len(job_id)} characters)"
    return f"job id {shown} is not allowed: use up to 64 letters, digits, '_', '-' or '.', not starting with '.' or '-'"


_SKILL_SETS: dict[tuple[str, ...], frozenset[str]] = {}


def _skills(names: list[str]) -> frozenset[str]:
    """The normalized skill set; a few distinct sets serve every job (interned)."""
    key = tuple(names)
    found = _SKILL_SETS.get(key)
    if found is None:
        found = frozenset(s.strip().upper() for s in names if s.strip())
        if len(_SKILL_SETS) < 1024:
            _SKILL_SETS[key] = found
    return found


@dataclass(slots=True, eq=False)
class Job:
    """A job: its spec, how to run it, and its runtime state.

    ``attempts`` counts every attempt ever started (attempt numbers never repeat,
    so a late report from an old attempt can always be told apart); ``retry_base``
    is ``attempts`` at the last RETRY from the dead-letter queue, so the attempts
    left are ``max_attempts - (attempts - retry_base)``.
    """

    id: str
    type: str
    data: str
    seq: int
    submitted_at: float
    state: JobState
    # what the worker is told to run (resolved at submission: handler types become RUN)
    run_kind: str
    run_data: str
    run_args: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    priority: int = 1
    delay_ms: int = 0
    deps: tuple[str, ...] = ()
    max_attempts: int = 3
    timeout_s: float | None = None
    slots: int = 1
    memory_mb: int | None = None
    skills: frozenset[str] = frozenset({"GENERAL"})
    affinity: bool = False
    port: int | None = None
    payload: bytes | None = None  # a script sent inline by the client
    dag: str | None = None  # the DAG it was submitted in
    # retry backoff (resolved at admission: the job's own values or the master's defaults)
    backoff_base_s: float = 1.0
    backoff_factor: float = 2.0
    backoff_cap_s: float = 60.0
    # runtime
    attempts: int = 0
    retry_base: int = 0
    worker: str | None = None  # worker id of the current (or last) attempt
    worker_name: str | None = None
    exit_code: int | None = None
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    due: float | None = None  # when a DELAYED or FAILED job becomes PENDING
    ticket: int = 0  # bumped on every enqueue; older queue entries are stale
    # Tuples, not lists: what the spec asked never changes, and an empty tuple is one shared
    # object where an empty list is 72 bytes per job (a third of a restored million-job table).
    runs: tuple[AttemptRecord, ...] = ()  # one per attempt, oldest first
    outputs: tuple[str, ...] = ()  # files kept from the attempt that COMPLETED it
    # The story (read it through ``story``). None while it is only the acceptance step: most jobs
    # of a big table never change after it, and a list per job would be a third of a job's memory.
    steps: list[Step] | None = None
    story_limit: int = 50  # steps kept; the oldest go first
    # DEPLOY: the current attempt's service is up (its dependants were released), and its restarts
    service_up: bool = False
    restarts: int = 0
    # Numbers its next attempt skips: one for each master start since its last dispatch, because a
    # TASK_START leaves before its dispatch is durable and the number after the last durable attempt
    # may belong to an attempt started just before a crash (see durable.py). Kept in the WAL (the
    # "restarted" record) and in snapshots: two crashes in a row must skip two numbers.
    skip_attempts: int = 0

    @classmethod
    def from_spec(
        cls,
        spec: JobSpec,
        *,
        job_id: str,
        seq: int,
        now: float,
        state: JobState,
        run_kind: str,
        run_data: str,
        run_args: tuple[str, ...],
        story_limit: int = 50,
        stimulus: str = "submit",
        dag: str | None = None,
        backoff: tuple[float, float, float] = (1.0, 2.0, 60.0),
    ) -> Job:
        """Build a job in its first state; the story starts with its creation."""
        # Positional, in field order (a DAG admits 100 000 of these; keywords cost a third more).
        job = cls(
            job_id,
            spec.type.upper(),
            spec.data,
            seq,
            now,
            state,
            run_kind,
            run_data,
            run_args,
            tuple(spec.args) if spec.args else (),
            spec.priority,
            spec.delay_ms,
            tuple(spec.deps) if spec.deps else (),
            spec.max_attempts,
            spec.timeout_s,
            spec.slots,
            spec.memory_mb,
            _skills(spec.skills),
            spec.affinity,
            spec.port,
            spec.payload,
            dag,
            backoff[0],
            backoff[1],
            backoff[2],
        )
        job.story_limit = max(1, story_limit)
        if stimulus != "submit":  # "submit" at ``submitted_at`` is what an untouched story means
            job.steps = [Step(None, state, stimulus, now)]
        return job

    @property
    def attempts_left(self) -> int:
        return self.max_attempts - (self.attempts - self.retry_base)

    @property
    def is_service(self) -> bool:
        """A DEPLOY: a service or a child worker, RUNNING while it runs."""
        return self.run_kind == "DEPLOY"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def current_run(self) -> AttemptRecord | None:
        """The record of the latest attempt, if the job has started one."""
        return self.runs[-1] if self.runs else None

    @property
    def story(self) -> list[Step]:
        """What happened to the job, oldest first: its acceptance, then each change and note."""
        steps = self.steps
        if steps is None:
            steps = self.steps = [Step(None, self.state, "submit", self.submitted_at)]
        return steps

    def add_step(self, start: JobState, finish: JobState, stimulus: str, t: float) -> None:
        """Append to the story; ``start`` is the state before the change (the only one an untouched
        story can have been accepted in: call this before or after setting ``state``)."""
        steps = self.steps
        if steps is None:
            steps = self.steps = [Step(None, start, "submit", self.submitted_at)]
        steps.append(Step(start, finish, stimulus, t))
        if len(steps) > self.story_limit:
            del steps[0]

    def note(self, stimulus: str, now: float) -> None:
        """Record something that happened without a state change (e.g. a fenced report)."""
        self.add_step(self.state, self.state, stimulus, now)

    def info_wire(self) -> dict[str, Any]:  # noqa: C901 - one test per optional field, as JobInfo leaves them out
        """The map ``to_info().to_wire()`` gives, built straight from the job.

        Every answer that carries whole jobs (WAIT, LIST) sends this: the frozen dataclasses in
        between cost twice what the map does, and a WAIT's answer is on the path from a job's end
        to its client. Fields at their default are left out, as ``JobInfo.OMIT_DEFAULTS`` does;
        tests hold the two equal for jobs with every field set.
        """
        body: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "data": self.data,
            "state": self.state.value,
            "priority": self.priority,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "submitted_at": self.submitted_at,
        }
        if self.worker_name is not None:
            body["worker"] = self.worker_name
        if self.exit_code is not None:
            body["exit_code"] = self.exit_code
        if self.error:
            body["error"] = self.error
        if self.started_at is not None:
            body["started_at"] = self.started_at
        if self.finished_at is not None:
            body["finished_at"] = self.finished_at
        if self.deps:
            body["deps"] = list(self.deps)
        if self.args:
            body["args"] = list(self.args)
        if self.delay_ms:
            body["delay_ms"] = self.delay_ms
        if self.timeout_s is not None:
            body["timeout_s"] = self.timeout_s
        if self.skills:
            body["skills"] = sorted(self.skills)
        body["history"] = [  # never empty: the story starts with the job's acceptance
            {
                "start": step.start.value if step.start is not None else "NEW",
                "finish": step.finish.value,
                "stimulus": step.stimulus,
                "t": step.t,
            }
            for step in self.story
        ]
        if self.dag is not None:
            body["dag"] = self.dag
        if self.runs:
            body["runs"] = [run.info_wire() for run in self.runs]
        if self.restarts:
            body["restarts"] = self.restarts
        if self.service_up:
            body["up"] = True
        tries = self.attempts - self.retry_base
        if tries:
            body["tries"] = tries
        if self.memory_mb is not None:
            body["memory_mb"] = self.memory_mb
        if self.affinity:
            body["affinity"] = True
        return body

    def to_info(self) -> JobInfo:
        """The job as the wire shows it; ``worker`` is the worker's display name."""
        return JobInfo(
            id=self.id,
            type=self.type,
            data=self.data,
            state=self.state.value,
            priority=self.priority,
            attempts=self.attempts,
            max_attempts=self.max_attempts,
            tries=self.attempts - self.retry_base,
            submitted_at=self.submitted_at,
            worker=self.worker_name,
            exit_code=self.exit_code,
            error=self.error,
            started_at=self.started_at,
            finished_at=self.finished_at,
            deps=list(self.deps),
            args=list(self.args),
            delay_ms=self.delay_ms,
            timeout_s=self.timeout_s,
            skills=sorted(self.skills),
            history=[
                TransitionInfo(
                    start=step.start.value if step.start is not None else "NEW",
                    finish=step.finish.value,
                    stimulus=step.stimulus,
                    t=step.t,
                )
                for step in self.story
            ],
            dag=self.dag,
            runs=[run.to_info() for run in self.runs],
            restarts=self.restarts,
            up=self.service_up,
            memory_mb=self.memory_mb,
            affinity=self.affinity,
        )
