"""Effects: what a state change asks its caller to do.

Transition handlers never touch queues, workers or sockets; they return these
small records instead (distributed's "instructions"). :class:`~titan.master.core.MasterState`
applies the internal ones (queue, delay heap, worker slots, dependants) itself and
hands the external ones (send, stop, finished, close) to the asyncio shell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from .model import Job

__all__ = [
    "Assign",
    "CloseWorker",
    "Delay",
    "DrainWorker",
    "Effect",
    "Enqueue",
    "JobFinished",
    "ReleaseDependants",
    "SendTask",
    "StopTask",
    "Unassign",
]


# ------------------------------------------------------------------ external: the shell does IO for these


@dataclass(frozen=True, slots=True)
class SendTask:
    """Send the job's current attempt to ``worker_id`` (TASK_START)."""

    worker_id: str
    job: Job


@dataclass(frozen=True, slots=True)
class StopTask:
    """Tell ``worker_id`` to kill this attempt's process group (TASK_STOP)."""

    worker_id: str
    job_id: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class JobFinished:
    """The job reached a final state: answer whoever waits for it."""

    job: Job


@dataclass(frozen=True, slots=True)
class DrainWorker:
    """Tell ``worker_id`` to take no new tasks and leave once idle (DRAIN)."""

    worker_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CloseWorker:
    """Drop the connection of a worker declared lost while still connected."""

    worker_id: str
    reason: str


# ------------------------------------------------------------------ internal: the core applies these


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Put the job in the ready queue."""

    job: Job


@dataclass(frozen=True, slots=True)
class Delay:
    """Park the job in the delay heap until ``due`` (epoch seconds)."""

    job: Job
    due: float


@dataclass(frozen=True, slots=True)
class Assign:
    """Count the job against the worker's slots."""

    worker_id: str
    job: Job


@dataclass(frozen=True, slots=True)
class Unassign:
    """Give the job's slots back to the worker."""

    worker_id: str
    job: Job


@dataclass(frozen=True, slots=True)
class ReleaseDependants:
    """The job is final: unblock its dependants (``satisfied``) or skip them."""

    job_id: str
    satisfied: bool
    reason: str = ""


Effect: TypeAlias = (
    SendTask
    | StopTask
    | JobFinished
    | CloseWorker
    | DrainWorker
    | Enqueue
    | Delay
    | Assign
    | Unassign
    | ReleaseDependants
)
