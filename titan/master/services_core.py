"""Services and child workers in the master's pure core: the DEPLOY side of ``MasterState``.

A DEPLOY job runs as a service on its worker. Its dependants wait until it is
*up* (the worker's report says so, or the child worker it started has
registered), and a restart takes it down again until it is up once more. A
DEPLOY of the worker artifact starts a child worker; when that job ends (STOP,
CANCEL) the child is drained and its parent stops it once it is idle.

:class:`ServiceStimuli` is a mixin of :class:`~titan.master.core.MasterState`;
like the rest of the core it does no IO and takes ``now`` from the caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import TaskStatus
from titan.errors import ValidationError
from titan.jobs import DrainWorker, Effect, Job, JobState

from .registry import WorkerRecord, WorkerRegistry

if TYPE_CHECKING:
    from .journal import Journal
    from .waiting_room import Verdict, WaitingRoom

__all__ = ["ServiceStimuli"]

S = JobState


class ServiceStimuli:
    """STOP, service reports and child workers; the state and helpers are ``MasterState``'s."""

    if TYPE_CHECKING:
        jobs: dict[str, Job]
        registry: WorkerRegistry
        room: WaitingRoom
        journal: Journal | None
        _out: list[Effect]

        def job(self, job_id: str) -> Job: ...

        def _move(
            self,
            job: Job,
            finish: JobState,
            stimulus: str,
            now: float,
            *,
            worker: str | None = None,
            worker_name: str | None = None,
            exit_code: int | None = None,
            error: str = "",
            due: float | None = None,
        ) -> None: ...

        def _decide(self, verdict: Verdict, now: float) -> None: ...

        def _done(self, now: float) -> list[Effect]: ...

    # ------------------------------------------------------------------ client stimuli
    def stop(self, job_id: str, now: float) -> tuple[Job, list[Effect]]:
        """End a RUNNING service (a DEPLOY job): STOPPED, its slot freed; a child worker is drained first.

        Raises:
            UnknownJob, ValidationError (not a DEPLOY job, or not RUNNING).
        """
        job = self.job(job_id)
        if not job.is_service:
            raise ValidationError(
                f"job '{job_id}' is a {job.type} job, not a service: STOP ends DEPLOY jobs (use CANCEL)"
            )
        if job.state is not S.RUNNING:
            raise ValidationError(f"job '{job_id}' is {job.state.value}: STOP ends RUNNING services only")
        child = self._child_of(job)
        self._move(job, S.STOPPED, "stop", now, error="stopped on request")
        job.service_up = False
        self._drain_child(child, f"its DEPLOY job {job.id} was stopped", now)
        return job, self._done(now)

    # ------------------------------------------------------------------ services (DEPLOY jobs)
    def _service_report(self, job: Job, status: TaskStatus, now: float) -> None:
        """A service restarted, came up, or ended: note it; once up, its dependants may start."""
        if status.restarts > job.restarts:
            job.restarts, job.service_up = status.restarts, False  # down until it is up again
            self._note(job, f"service restart {status.restarts} on {job.worker_name}: {status.error or 'crashed'}", now)
        if status.state != "RUNNING":
            job.service_up = False
        elif status.up and not job.service_up:
            self._service_up(job, f"service up on {job.worker_name}", now)

    def _service_up(self, job: Job, why: str, now: float) -> None:
        job.service_up = True
        self._note(job, why, now)
        for verdict in self.room.release(job.id, True, ""):
            self._decide(verdict, now)

    def _child_registered(self, record: WorkerRecord, now: float) -> None:
        """A child worker registered: the DEPLOY of the worker artifact that started it is up."""
        job = self.jobs.get(record.spawn_id)
        if job is None or not job.is_service or job.worker != record.parent or job.service_up:
            return
        if job.state is S.SCHEDULED:
            self._move(job, S.RUNNING, f"started on {job.worker_name} (its child registered)", now)
        if job.state is S.RUNNING:
            self._service_up(job, f"child worker {record.name} registered", now)

    def _child_of(self, job: Job) -> WorkerRecord | None:
        """The child worker a DEPLOY of the worker artifact started, if it has registered."""
        for record in self.registry:
            if record.spawn_id == job.id and record.parent == job.worker:
                return record
        return None

    def _drain_child(self, child: WorkerRecord | None, reason: str, now: float) -> None:
        """A child worker whose DEPLOY ended: no new tasks, for it and every worker below it (as RETIRE
        does: a grandchild left running would keep taking work while its parent waits for it); each
        parent stops its children once they have drained."""
        for current in self.registry.subtree(child) if child is not None else []:
            if current.connected:
                self.registry.drain(current.id, now)
                self._out.append(DrainWorker(current.id, reason if current is child else f"{reason} (below it)"))

    def _note(self, job: Job, note: str, now: float) -> None:
        job.note(note, now)
        if self.journal is not None:
            self.journal.noted(job, note, now)
