"""Job states and the one table of allowed transitions.

Theory of operation
-------------------
A job's ``state`` changes in exactly one place: :func:`transition`, which looks
the ``(start, finish)`` pair up in :data:`TRANSITIONS` and refuses anything else
with :class:`~titan.errors.InvalidTransition`, before touching the job. The
handler found there does the job's own bookkeeping (attempt numbers, exit code,
timestamps) and returns *effects* (:mod:`titan.jobs.effects`): put it in the
ready queue, park it until a time, count it against a worker, send or stop a
task, release its dependants. The caller applies them; the table itself never
reaches a queue, a worker or a socket (distributed's transition table, written
as data like h11's).

Life of a job::

    BLOCKED --deps done--> PENDING            (or DELAYED when its delay has not passed)
    DELAYED --time reached--> PENDING
    PENDING --scheduler picks--> SCHEDULED --worker starts--> RUNNING
    RUNNING --exit 0--> COMPLETED
    RUNNING --exit != 0 / timeout--> FAILED --backoff due--> PENDING
                                     FAILED --no attempts left--> DEAD   (the dead-letter queue)
    SCHEDULED --failed to start--> FAILED
    RUNNING/SCHEDULED --worker lost--> PENDING (attempts left; else FAILED -> DEAD)
    DEAD --RETRY--> PENDING                   (fresh attempts)
    any non-final --cancel--> CANCELLED       (SCHEDULED/RUNNING also stop the task)
    BLOCKED --a dependency is DEAD/CANCELLED/SKIPPED--> SKIPPED
    SKIPPED --the DEAD job that skipped it is RETRIED--> BLOCKED   (back in the waiting room)
    service RUNNING --stop--> STOPPED

FAILED is not final: it is a job waiting out its retry backoff. The policy that
picks FAILED's successor (retry or dead letter) lives outside the table, in
:mod:`titan.master.retry`; its answer feeds ``transition()``.

Every change is appended to the job's bounded story ``(start, finish, stimulus, t)``,
and the handlers keep one :class:`~titan.jobs.attempts.AttemptRecord` per attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final, NamedTuple, TypeAlias

from titan.errors import InvalidTransition

from .attempts import AttemptRecord
from .effects import (
    Assign,
    Delay,
    Effect,
    Enqueue,
    JobFinished,
    ReleaseDependants,
    SendTask,
    StopTask,
    Unassign,
)

if TYPE_CHECKING:
    from .model import Job

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "TRANSITIONS",
    "Change",
    "JobState",
    "Step",
    "transition",
]


class JobState(StrEnum):
    """Where a job is in its life; the value is the name shown on the wire."""

    BLOCKED = "BLOCKED"
    DELAYED = "DELAYED"
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"
    STOPPED = "STOPPED"


B, DL, P, S, R = JobState.BLOCKED, JobState.DELAYED, JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING
C, F, D, X, K, ST = (
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.DEAD,
    JobState.CANCELLED,
    JobState.SKIPPED,
    JobState.STOPPED,
)

#: states a job never leaves on its own (DEAD only by an explicit RETRY)
FINAL_STATES: Final = frozenset({C, D, X, K, ST})
#: states in which a worker holds the job's attempt
ACTIVE_STATES: Final = frozenset({S, R})


class Step(NamedTuple):
    """One line of a job's story. ``start`` is None for the job's creation."""

    start: JobState | None
    finish: JobState
    stimulus: str
    t: float


@dataclass(frozen=True, slots=True)
class Change:
    """The details a transition may need, besides the target state."""

    stimulus: str
    now: float
    worker: str | None = None
    worker_name: str | None = None
    exit_code: int | None = None
    error: str = ""
    due: float | None = None
    # RUNNING/SCHEDULED -> PENDING because the worker shut down and handed the attempt back
    handed_back: bool = False


Handler: TypeAlias = Callable[["Job", Change], list[Effect]]


# ------------------------------------------------------------------ handlers


def _enqueue(job: Job, change: Change) -> list[Effect]:
    job.due = None
    return [Enqueue(job)]


def _delay(job: Job, change: Change) -> list[Effect]:
    due = change.now if change.due is None else change.due
    job.due = due
    return [Delay(job, due)]


def _schedule(job: Job, change: Change) -> list[Effect]:
    if change.worker is None:
        raise ValueError(f"scheduling job '{job.id}' needs a worker")
    if job.skip_attempts:
        # the skipped numbers are not attempts the job used: it keeps its retry budget
        job.attempts += job.skip_attempts
        job.retry_base += job.skip_attempts
        job.skip_attempts = 0
    job.attempts += 1
    job.worker = change.worker
    job.worker_name = change.worker_name or change.worker
    job.exit_code = None
    job.error = ""
    job.started_at = None
    job.finished_at = None
    job.runs = (*job.runs, AttemptRecord(job.attempts, job.worker_name))
    return [Assign(change.worker, job), SendTask(change.worker, job)]


def _start(job: Job, change: Change) -> list[Effect]:
    job.started_at = change.now
    run = job.current_run
    if run is not None:
        run.state = R.value
        run.started_at = change.now
    return []


def _end_run(job: Job, state: str, now: float) -> None:
    """Close the record of the attempt a worker held."""
    run = job.current_run
    if run is not None and run.finished_at is None:
        run.state = state
        run.finished_at = now
        run.exit_code = job.exit_code
        run.error = job.error


def _release_worker(job: Job) -> list[Effect]:
    return [Unassign(job.worker, job)] if job.worker is not None else []


def _complete(job: Job, change: Change) -> list[Effect]:
    job.exit_code = 0 if change.exit_code is None else change.exit_code
    job.error = ""
    job.finished_at = change.now
    _end_run(job, C.value, change.now)
    return [*_release_worker(job), JobFinished(job), ReleaseDependants(job.id, satisfied=True)]


def _fail(job: Job, change: Change) -> list[Effect]:
    job.exit_code = change.exit_code
    if change.error:
        job.error = change.error
    elif change.exit_code is not None:
        job.error = f"exit code {change.exit_code}"
    else:
        job.error = "failed"
    job.finished_at = change.now
    _end_run(job, F.value, change.now)
    effects = _release_worker(job)
    if change.due is not None:
        job.due = change.due
        run = job.current_run
        if run is not None:
            run.backoff_s = max(0.0, change.due - change.now)
        effects.append(Delay(job, change.due))
    return effects


def _requeue_lost(job: Job, change: Change) -> list[Effect]:
    # the attempt counts (its number is spent) but the job goes straight back to the queue;
    # one its worker handed back on shutting down does not count: the job did nothing wrong
    job.error = change.error or "worker lost"
    job.exit_code = None
    if change.handed_back:
        job.retry_base += 1
    _end_run(job, "RETURNED" if change.handed_back else "LOST", change.now)
    return [*_release_worker(job), Enqueue(job)]


def _to_dead_letter(job: Job, change: Change) -> list[Effect]:
    job.due = None
    return [JobFinished(job), ReleaseDependants(job.id, satisfied=False, reason=f"dependency {job.id} is DEAD")]


def _unskip(job: Job, change: Change) -> list[Effect]:
    # the caller seats it in the waiting room again; its dependencies decide from there
    job.error = ""
    job.finished_at = None
    return []


def _resurrect(job: Job, change: Change) -> list[Effect]:
    job.retry_base = job.attempts
    job.exit_code = None
    job.error = ""
    job.finished_at = None
    return _enqueue(job, change)


def _end_quietly(reason_state: JobState) -> Handler:
    """Cancel or skip a job that holds no worker."""

    def handler(job: Job, change: Change) -> list[Effect]:
        job.due = None
        job.finished_at = change.now
        job.error = change.error or reason_state.value.lower()
        return [
            JobFinished(job),
            ReleaseDependants(job.id, satisfied=False, reason=f"dependency {job.id} is {reason_state.value}"),
        ]

    return handler


def _end_active(reason_state: JobState) -> Handler:
    """Cancel a SCHEDULED/RUNNING job, or stop a service: the worker must kill it."""

    def handler(job: Job, change: Change) -> list[Effect]:
        job.finished_at = change.now
        job.error = change.error or reason_state.value.lower()
        _end_run(job, reason_state.value, change.now)
        effects: list[Effect] = []
        if job.worker is not None:
            effects.append(StopTask(job.worker, job.id, job.attempts, job.error))
            effects.extend(_release_worker(job))
        effects.append(JobFinished(job))
        effects.append(
            ReleaseDependants(job.id, satisfied=False, reason=f"dependency {job.id} is {reason_state.value}")
        )
        return effects

    return handler


_cancel_idle = _end_quietly(X)
_cancel_active = _end_active(X)

#: the only allowed state changes, and what each one does
TRANSITIONS: Final[Mapping[tuple[JobState, JobState], Handler]] = {
    (B, P): _enqueue,
    (B, DL): _delay,
    (B, K): _end_quietly(K),
    (B, X): _cancel_idle,
    (DL, P): _enqueue,
    (DL, X): _cancel_idle,
    (P, S): _schedule,
    (P, X): _cancel_idle,
    (S, R): _start,
    (S, F): _fail,
    (S, P): _requeue_lost,
    (S, X): _cancel_active,
    (R, C): _complete,
    (R, F): _fail,
    (R, P): _requeue_lost,
    (R, ST): _end_active(ST),
    (R, X): _cancel_active,
    (F, P): _enqueue,
    (F, D): _to_dead_letter,
    (F, X): _cancel_idle,
    (D, P): _resurrect,
    (K, B): _unskip,
}


def transition(
    job: Job,
    finish: JobState,
    *,
    stimulus: str,
    now: float,
    worker: str | None = None,
    worker_name: str | None = None,
    exit_code: int | None = None,
    error: str = "",
    due: float | None = None,
    handed_back: bool = False,
) -> list[Effect]:
    """Move ``job`` to ``finish`` and return the effects the caller must apply.

    Raises:
        InvalidTransition: the pair is not in :data:`TRANSITIONS`; the job is unchanged.
    """
    start = job.state
    handler = TRANSITIONS.get((start, finish))
    if handler is None:
        raise InvalidTransition(job.id, start, finish)
    effects = handler(job, Change(stimulus, now, worker, worker_name, exit_code, error, due, handed_back))
    job.state = finish
    job.add_step(start, finish, stimulus, now)
    return effects
