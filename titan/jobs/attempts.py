"""The record of one attempt of a job.

A job keeps one :class:`AttemptRecord` per attempt, in order, so a retried job
still shows where and how each earlier attempt ran, how it ended and how long
the backoff after it was. The transition handlers in :mod:`titan.jobs.states`
fill them in; the attempt's files (logs, outputs) live under
``jobs/<id>/attempt-<n>/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol import AttemptInfo

__all__ = ["AttemptRecord"]


@dataclass(slots=True)
class AttemptRecord:
    """One attempt: kept on the job so every attempt's story survives the next one."""

    attempt: int
    worker: str | None
    state: str = "SCHEDULED"
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: str = ""
    backoff_s: float | None = None
    outputs: list[str] = field(default_factory=list)

    def info_wire(self) -> dict[str, Any]:
        """``to_info().to_wire()``, built directly (see :meth:`titan.jobs.Job.info_wire`)."""
        body: dict[str, Any] = {"attempt": self.attempt, "state": self.state}
        if self.worker is not None:
            body["worker"] = self.worker
        if self.started_at is not None:
            body["started_at"] = self.started_at
        if self.finished_at is not None:
            body["finished_at"] = self.finished_at
        if self.exit_code is not None:
            body["exit_code"] = self.exit_code
        if self.error:
            body["error"] = self.error
        if self.backoff_s is not None:
            body["backoff_s"] = self.backoff_s
        if self.outputs:
            body["outputs"] = list(self.outputs)
        return body

    def to_info(self) -> AttemptInfo:
        return AttemptInfo(
            attempt=self.attempt,
            state=self.state,
            worker=self.worker,
            started_at=self.started_at,
            finished_at=self.finished_at,
            exit_code=self.exit_code,
            error=self.error,
            backoff_s=self.backoff_s,
            outputs=list(self.outputs),
        )
