"""The job model and its state table."""

from __future__ import annotations

from .effects import (
    Assign,
    CloseWorker,
    Delay,
    DrainWorker,
    Effect,
    Enqueue,
    JobFinished,
    ReleaseDependants,
    SendTask,
    StopTask,
    Unassign,
)
from .model import DAG_ID_PREFIX, Job, check_job_id, new_job_id
from .states import ACTIVE_STATES, FINAL_STATES, TRANSITIONS, Change, JobState, Step, transition

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "TRANSITIONS",
    "Assign",
    "Change",
    "CloseWorker",
    "Delay",
    "DrainWorker",
    "Effect",
    "Enqueue",
    "Job",
    "JobFinished",
    "JobState",
    "ReleaseDependants",
    "SendTask",
    "Step",
    "StopTask",
    "Unassign",
    "check_job_id",
    "DAG_ID_PREFIX",
    "new_job_id",
    "transition",
]
