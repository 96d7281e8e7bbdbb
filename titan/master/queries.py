"""Read-only questions to the master's pure core: the queries side of ``MasterState``.

A job by id, a DAG's jobs, a filtered listing, the STATS counts, and whether a
worker's report concerns an attempt it holds (or ever held): what the shell asks
before it stores anything a report carries. Nothing here changes the state.

:class:`StateQueries` is a mixin of :class:`~titan.master.core.MasterState`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from protocol import StatsReply, TaskStatus
from titan.errors import UnknownJob, ValidationError
from titan.jobs import ACTIVE_STATES, Job, JobState

from .registry import WorkerRegistry

__all__ = ["StateQueries"]

S = JobState


class StateQueries:
    """Queries; the state is ``MasterState``'s."""

    if TYPE_CHECKING:
        jobs: dict[str, Job]
        dags: dict[str, list[Job]]
        registry: WorkerRegistry
        counts: dict[JobState, int]
        failed_attempts: int
        started_at: float

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        return job

    def is_current_report(self, worker_id: str, status: TaskStatus) -> bool:
        """Whether ``status`` reports the attempt ``worker_id`` holds now: one the core will apply, not fence."""
        job = self.jobs.get(status.job_id)
        return (
            job is not None
            and job.worker == worker_id
            and job.attempts == status.attempt
            and job.state in ACTIVE_STATES
        )

    def ran_attempt(self, worker_id: str, job_id: str, attempt: int) -> bool:
        """Whether attempt ``attempt`` of ``job_id`` was given to ``worker_id``, now or before."""
        job = self.jobs.get(job_id)
        record = self.registry.get(worker_id)
        if job is None or record is None:
            return False
        if job.worker == worker_id and job.attempts == attempt:
            return True
        # an earlier attempt: its record names the worker as it was shown then
        return any(run.attempt == attempt and run.worker == record.name for run in job.runs)

    def dag_jobs(self, ref: str) -> list[Job]:
        """The jobs of a DAG, in submission order; ``ref`` is a DAG id or the id of one of its jobs.

        Raises:
            UnknownJob, ValidationError (the job was submitted on its own).
        """
        jobs = self.dags.get(ref)
        if jobs is not None:
            return jobs
        if ref not in self.jobs:
            raise UnknownJob(ref, message=f"no DAG or job with id '{ref}'")
        job = self.jobs[ref]
        if job.dag is None:
            raise ValidationError(f"job '{ref}' was not submitted as part of a DAG")
        return self.dags[job.dag]

    def list_jobs(
        self, state: str | None = None, limit: int = 1000, dag: str | None = None, offset: int = 0
    ) -> list[Job]:
        """Most recent first (a DAG's jobs: in submission order), optionally only jobs in ``state``,
        after the first ``offset`` of them."""
        wanted: JobState | None = None
        if state:
            try:
                wanted = JobState(state.strip().upper())
            except ValueError:
                raise ValidationError(f"unknown state '{state}': expected one of {', '.join(JobState)}") from None
        found: list[Job] = []
        if limit <= 0:
            return found
        jobs: Iterable[Job] = self.dag_jobs(dag) if dag else reversed(self.jobs.values())
        if offset > 0 and wanted is None and isinstance(jobs, list):
            jobs, offset = jobs[offset:], 0  # a DAG's list: no need to walk what is skipped
        skipped = 0
        for job in jobs:
            if wanted is None or job.state is wanted:
                if skipped < offset:
                    skipped += 1
                    continue
                found.append(job)
                if len(found) >= limit:
                    break
        return found

    def stats(self, now: float) -> StatsReply:
        counts = self.counts
        return StatsReply(
            queued=counts[S.PENDING],
            delayed=counts[S.DELAYED] + counts[S.FAILED],
            blocked=counts[S.BLOCKED],
            dead=counts[S.DEAD],
            running=counts[S.RUNNING],
            scheduled=counts[S.SCHEDULED],
            completed=counts[S.COMPLETED],
            failed=self.failed_attempts,
            cancelled=counts[S.CANCELLED],
            workers=self.registry.infos(now),
            uptime_s=max(0.0, now - self.started_at),
            extra={
                "failed_jobs": counts[S.FAILED],
                "skipped": counts[S.SKIPPED],
                "stopped": counts[S.STOPPED],
                "jobs": len(self.jobs),
            },
        )
