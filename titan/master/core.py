"""``MasterState``: the master's pure core. Stimuli in, effects out.

Theory of operation
-------------------
Each public method is one stimulus (a submission, a task report, a worker
registering, a timer, a health check ...) and takes ``now`` (epoch seconds)
from the caller: no clock, no IO, no asyncio here. It changes job states only
through :func:`titan.jobs.transition`, applies the *internal* effects the
table returns (ready queue, delay heap, worker slots, dependants) at once, then
lets the dispatcher place ready jobs, and returns the *external* effects
(:class:`SendTask`, :class:`StopTask`, :class:`JobFinished`, :class:`CloseWorker`)
for the asyncio shell to carry out.

Counts per state are kept as transitions happen, so STATS never scans the jobs.
With ``settings.validate`` (tests) the invariants are checked after every stimulus.

Reports are fenced: a TASK_STATUS counts only if it names the job's current
attempt on the worker that holds it. Anything else (a late report of an attempt
that was requeued, cancelled or superseded) is noted in the job's story and
otherwise ignored.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections import deque
from collections.abc import Sequence

from protocol import JobSpec, Register, TaskRef, TaskStatus
from titan.config import MasterSettings
from titan.errors import InvalidTransition, ValidationError
from titan.jobs import (
    ACTIVE_STATES,
    DAG_ID_PREFIX,
    Assign,
    CloseWorker,
    Delay,
    Effect,
    Enqueue,
    Job,
    JobState,
    ReleaseDependants,
    Unassign,
    transition,
)

from .admission import Admission
from .files import FileCatalog
from .invariants import check_invariants
from .journal import Journal
from .queries import StateQueries
from .registry import Health, WorkerRecord, WorkerRegistry
from .retry import next_retry
from .scheduler import DelayHeap, JobClass, LeastConnections, ReadyQueue
from .services_core import ServiceStimuli
from .waiting_room import Verdict, WaitingRoom, check_dag

__all__ = ["MasterState"]

log = logging.getLogger(__name__)

S = JobState


class MasterState(ServiceStimuli, StateQueries):
    """Jobs, workers, queues; see the module docstring (services and child workers: ``services_core.py``).

    Counts: ``failed`` in :meth:`stats` is the number of failed attempts so far
    (exit != 0, timeouts, lost workers); jobs now waiting out a backoff are in
    ``delayed`` (with DELAYED jobs) and in ``extra["failed_jobs"]``.
    """

    def __init__(
        self, settings: MasterSettings, files: FileCatalog, *, rng: random.Random | None = None, now: float = 0.0
    ) -> None:
        self.settings = settings
        self.rng = rng if rng is not None else random.Random()
        self.admission = Admission(
            files,
            rng=self.rng,
            max_payload_bytes=settings.max_payload_bytes,
            story_limit=settings.story_limit,
            backoff=(settings.retry_backoff_base_s, settings.retry_backoff_factor, settings.retry_backoff_cap_s),
        )
        self.jobs: dict[str, Job] = {}  # in submission order
        self.dags: dict[str, list[Job]] = {}  # DAG id -> its jobs, in submission order
        self.registry = WorkerRegistry()
        self.ready = ReadyQueue()
        self.delays = DelayHeap()
        self.room = WaitingRoom()
        self.picker = LeastConnections()
        self.counts: dict[JobState, int] = dict.fromkeys(JobState, 0)
        self.failed_attempts = 0
        self.started_at = now
        self._seq = itertools.count(1)
        self._pending: deque[Effect] = deque()
        self._out: list[Effect] = []
        # set by the shell that keeps a WAL: every change is recorded there (see journal.py)
        self.journal: Journal | None = None

    # ------------------------------------------------------------------ client stimuli
    def submit(self, spec: JobSpec, now: float) -> tuple[Job, list[Effect]]:
        """Admit one job (its deps must exist already).

        Raises:
            ValidationError: refused; nothing was stored.
        """
        job = self.admission.build(spec, seq=next(self._seq), now=now, taken=self.jobs)
        unknown = [d for d in job.deps if d not in self.jobs]
        if unknown:
            raise ValidationError(f"unknown dependencies: {', '.join(unknown)}")
        self._store(job, now)
        return job, self._done(now)

    def submit_dag(self, specs: list[JobSpec], now: float) -> tuple[list[Job], list[Effect]]:
        """Admit a DAG whole, or nothing; its jobs share a new DAG id (``job.dag``).

        Raises:
            ValidationError: a job is refused, or a dependency is unknown.
            CycleError: the DAG has a cycle (names its ids).
        """
        dag_id = self._new_dag_id()
        new: dict[str, Job] = {}
        taken = _Either(self.jobs, new)
        build = self.admission.build
        for spec in specs:
            job = build(spec, seq=next(self._seq), now=now, taken=taken, dag=dag_id)
            new[job.id] = job
        check_dag({job.id: job.deps for job in new.values()}, self.jobs)
        jobs = list(new.values())
        self.dags[dag_id] = jobs
        if self.journal is not None:
            self.journal.accepted_all(jobs)  # every acceptance before any transition of them
        self.jobs.update(new)
        for job in jobs:
            self._seat(job, now)
        return jobs, self._done(now)

    def cancel(self, job_id: str, now: float, *, dag: bool = False) -> tuple[Job, list[Effect]]:
        """Cancel a job that is not final; a SCHEDULED/RUNNING one is stopped on its worker.

        With ``dag``, cancel every unfinished job of the DAG that ``job_id`` (a job
        or DAG id) names; the answer is that job (or the DAG's first).

        Raises:
            UnknownJob, InvalidTransition (the job is already final), ValidationError
            (``dag`` for a job submitted on its own).
        """
        if not dag:
            job = self.job(job_id)
            if job.is_final:  # the table would refuse it too, but in its own words
                state = job.state.value
                raise InvalidTransition(
                    job.id, state, "CANCELLED", message=f"nothing to cancel: job '{job.id}' is already {state}"
                )
            self._cancel(job, now, "cancel")
            return job, self._done(now)
        jobs = self.dag_jobs(job_id)
        if all(member.is_final for member in jobs):
            # as for one job that is final: nothing changed, and the caller should hear so
            dag_id = jobs[0].dag or job_id
            raise InvalidTransition(
                dag_id, "final", "CANCELLED", message=f"nothing to cancel: every job of {dag_id} is final"
            )
        for member in jobs:
            if not member.is_final:
                self._cancel(member, now, f"cancel of DAG {member.dag}")
        return self.jobs.get(job_id) or jobs[0], self._done(now)

    def retry(self, job_id: str, now: float) -> tuple[Job, list[Effect]]:
        """Requeue a DEAD job with a fresh set of attempts; the jobs it skipped wait for it again.

        Raises:
            UnknownJob, ValidationError (the job is not DEAD).
        """
        job = self.job(job_id)
        if job.state is not S.DEAD:
            raise ValidationError(f"job '{job_id}' is {job.state.value}: RETRY requeues DEAD jobs only")
        self._move(job, S.PENDING, "retry from the dead-letter queue", now)
        self._unskip_downstream(job, now)
        return job, self._done(now)

    # ------------------------------------------------------------------ worker stimuli
    def worker_registered(self, msg: Register, now: float) -> tuple[list[TaskRef], list[Effect]]:
        """A worker (re)registers; returns the attempts it must kill (``stale``) and effects.

        Results it finished while away are applied (fenced). Attempts the master
        thinks it holds but that it neither runs nor finished never reached it:
        they go back to the queue like a lost worker's.

        Raises:
            DuplicateWorker: the id is registered on a live connection.
        """
        known = self.registry.get(msg.worker_id)
        first_since_restart = known is not None and known.inherited
        record = self.registry.register(msg, now)
        for status in msg.finished:
            ended = _ended_time(self.jobs.get(status.job_id), status, msg.sent_at, now)
            self._status(record.id, status, ended, " (reported on reconnect)")
        if msg.spawn_id:
            self._child_registered(record, now)
        self._settle(now)
        kept: set[str] = set()
        stale: list[TaskRef] = []
        for ref in msg.running:
            job = self.jobs.get(ref.job_id)
            if job is not None and job.attempts == ref.attempt and record.active.get(job.id) is job:
                kept.add(job.id)
                if job.state is S.SCHEDULED:
                    self._move(job, S.RUNNING, f"running on {record.name} at reconnect", now)
            else:
                stale.append(ref)
        for job in [j for j in record.active.values() if j.id not in kept]:
            if first_since_restart and not job.is_service:
                self._result_lost_in_restart(job, record.name, now)
            else:
                self._lose(job, now, f"worker lost: attempt {job.attempts} not running on {record.name} at reconnect")
        return stale, self._done(now)

    def _result_lost_in_restart(self, job: Job, worker_name: str, now: float) -> None:
        """An attempt the master ran before its restart that its worker neither runs nor kept a result of.

        The worker sent that result to the master before this one, which crashed before logging it:
        the loss is the master's, not the job's, so the job runs again without using up a try.
        """
        job.retry_base += 1
        self.failed_attempts += 1  # the attempt itself did fail to count: replay counts it the same way
        self._move(
            job,
            S.PENDING,
            f"attempt {job.attempts}'s result was lost in the master's restart ({worker_name} had reported it): "
            "it runs again, no try used",
            now,
            error="result lost in a master restart",
        )

    def worker_disconnected(self, worker_id: str, now: float) -> list[Effect]:
        """The connection dropped; its tasks wait for a reconnect until the heartbeat timeout."""
        record = self.registry.disconnected(worker_id, now)
        if record is not None and record.health is Health.RETIRED:
            log.info("%s retired: drained, it left with nothing assigned", record.name)
        elif record is not None:
            log.info("%s disconnected with %d task(s)", record.name, len(record.active))
        return self._done(now)

    def heartbeat(self, worker_id: str, now: float, *, leaving: bool = False) -> list[Effect]:
        self.registry.touch(worker_id, now)
        if leaving:
            self._leaving(worker_id, now)
        return self._done(now)

    def task_status(self, worker_id: str, status: TaskStatus, now: float) -> list[Effect]:
        """A worker reports an attempt started, completed or failed."""
        self.registry.touch(worker_id, now)
        self._status(worker_id, status, now, "")
        return self._done(now)

    def note(self, job_id: str, text: str, now: float) -> list[Effect]:
        """Put ``text`` in a job's story (and the WAL) without changing anything else."""
        self._note(self.job(job_id), text, now)
        return self._done(now)

    def _note(self, job: Job, text: str, now: float) -> None:
        job.note(text, now)
        if self.journal is not None:
            self.journal.noted(job, text, now)

    def drain(self, worker_id: str, now: float) -> list[Effect]:
        """Stop giving ``worker_id`` new tasks."""
        self.registry.drain(worker_id, now)
        return self._done(now)

    # ------------------------------------------------------------------ time stimuli
    def check_health(self, now: float) -> list[Effect]:
        """Declare silent or long-disconnected workers lost and requeue their tasks."""
        timeout = self.settings.heartbeat_timeout_s
        for record in self.registry.expired(now, timeout):
            was_connected = record.connected
            how = "silent" if was_connected else "disconnected"
            log.warning("%s lost: %s for %.3gs, requeueing %d task(s)", record.name, how, timeout, len(record.active))
            self.registry.mark_lost(record, now)
            for job in list(record.active.values()):
                self._lose(job, now, f"worker lost: {record.name} {how} for {timeout:g}s")
            self._settle(now)
            if was_connected:
                self._out.append(CloseWorker(record.id, f"no heartbeat for {timeout:g}s"))
        return self._done(now)

    def timers_due(self, now: float) -> list[Effect]:
        """DELAYED jobs whose delay passed and FAILED jobs whose backoff ended become PENDING."""
        for job in self.delays.pop_due(now):
            reason = "delay over" if job.state is S.DELAYED else "backoff over"
            self._move(job, S.PENDING, reason, now)
        return self._done(now)

    def next_due(self) -> float | None:
        """When :meth:`timers_due` has work next (the shell's one timer)."""
        return self.delays.next_due()

    def validate(self) -> None:
        """Raise AssertionError if an invariant does not hold."""
        check_invariants(self.jobs, self.registry, self.room, self.counts)

    def restore(self, jobs: dict[str, Job], *, failed_attempts: int, now: float) -> list[Effect]:
        """Adopt a job table rebuilt from the WAL (``journal.py``) and rebuild what derives from it.

        Counts, DAGs, the ready queue, the delay heap (original due times) and the
        waiting room come from the jobs' states. A SCHEDULED or RUNNING job is held
        for its worker, which counts as disconnected from ``now``: it has one
        heartbeat timeout to register and report before its attempts are lost.
        """
        self.jobs = jobs
        self.failed_attempts = failed_attempts
        counts = self.counts = dict.fromkeys(JobState, 0)
        delays, registry = self.delays, self.registry
        pending: list[Job] = []
        last_seq = 0
        for job in jobs.values():
            state = job.state
            counts[state] += 1
            if job.seq > last_seq:
                last_seq = job.seq
            if job.dag is not None:
                self.dags.setdefault(job.dag, []).append(job)
            if state is S.PENDING:
                pending.append(job)
            elif state is S.DELAYED or state is S.FAILED:
                delays.push(job, now if job.due is None else job.due)
            elif state in ACTIVE_STATES and job.worker is not None:
                if registry.get(job.worker) is None:
                    registry.expect(job.worker, job.worker_name or job.worker, now)
                registry.assign(job.worker, job)
        self._seq = itertools.count(last_seq + 1)
        self.ready.extend(pending)
        for verdict in self.room.rebuild(jobs):
            self._decide(verdict, now)
        return self._done(now)

    # ------------------------------------------------------------------ internals
    def _new_dag_id(self) -> str:
        dag_id = f"{DAG_ID_PREFIX}{self.rng.getrandbits(32):08x}"
        while dag_id in self.dags or dag_id in self.jobs:  # a job of an older log may have such an id
            dag_id = f"{DAG_ID_PREFIX}{self.rng.getrandbits(32):08x}"
        return dag_id

    def _cancel(self, job: Job, now: float, stimulus: str) -> None:
        was_blocked = job.state is S.BLOCKED
        child = self._child_of(job) if job.is_service and job.state is S.RUNNING else None
        self._move(job, S.CANCELLED, stimulus, now, error="cancelled")
        job.service_up = False
        self._drain_child(child, f"its DEPLOY job {job.id} was cancelled", now)
        if was_blocked:
            self.room.forget(job.id)

    def _unskip_downstream(self, root: Job, now: float) -> None:
        """Seat again the jobs skipped because of ``root``, unless another failure still skips them."""
        jobs = self.jobs
        for job in self.room.skipped_downstream(root.id):
            deps = [jobs[d] for d in job.deps]
            still = next((dep for dep in deps if dep.is_final and dep.state is not S.COMPLETED), None)
            if still is not None:  # another dependency is DEAD, CANCELLED or still SKIPPED: say which
                reason = f"dependency {still.id} is {still.state.value}"
                if job.error != reason:
                    job.error = reason
                    stimulus = f"still skipped: {reason} ({root.id} was retried)"
                    job.note(stimulus, now)
                    if self.journal is not None:
                        self.journal.changed(job, stimulus, now)  # the row carries the new reason
                continue
            self._move(job, S.BLOCKED, f"un-skipped: {root.id} was retried", now)
            verdict = self.room.admit(job, deps)
            if verdict is not None:
                self._decide(verdict, now)

    def _store(self, job: Job, now: float) -> None:
        if self.journal is not None:
            self.journal.accepted(job)  # before any transition of it
        self.jobs[job.id] = job
        self._seat(job, now)

    def _seat(self, job: Job, now: float) -> None:
        """Put a stored job where its first state says: waiting room, delay heap or ready queue."""
        self.counts[job.state] += 1
        if job.deps:
            self.room.link(job)
        if job.state is S.BLOCKED:
            jobs = self.jobs
            verdict = self.room.admit(job, [jobs[d] for d in job.deps])
            if verdict is not None:
                self._decide(verdict, now)
        elif job.state is S.DELAYED:
            assert job.due is not None
            self.delays.push(job, job.due)
        else:
            self.ready.push(job)

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
        handed_back: bool = False,
    ) -> None:
        start = job.state
        effects = transition(
            job,
            finish,
            stimulus=stimulus,
            now=now,
            worker=worker,
            worker_name=worker_name,
            exit_code=exit_code,
            error=error,
            due=due,
            handed_back=handed_back,
        )
        counts = self.counts
        counts[start] -= 1
        counts[finish] += 1
        if self.journal is not None:
            self.journal.changed(job, stimulus, now)
        self._pending.extend(effects)

    def _settle(self, now: float) -> None:
        """Apply internal effects (possibly cascading); queue external ones for the shell."""
        pending = self._pending
        while pending:
            effect = pending.popleft()
            if isinstance(effect, Enqueue):
                self.ready.push(effect.job)
            elif isinstance(effect, Assign):
                self.registry.assign(effect.worker_id, effect.job)
            elif isinstance(effect, Unassign):
                self.registry.release(effect.worker_id, effect.job)
            elif isinstance(effect, Delay):
                self.delays.push(effect.job, effect.due)
            elif isinstance(effect, ReleaseDependants):
                for verdict in self.room.release(effect.job_id, effect.satisfied, effect.reason):
                    self._decide(verdict, now)
            else:
                self._out.append(effect)

    def _decide(self, verdict: Verdict, now: float) -> None:
        job, ready, reason = verdict
        if not ready:
            self._move(job, S.SKIPPED, reason, now, error=reason)
            return
        due = job.submitted_at + job.delay_ms / 1000
        if due > now:
            self._move(job, S.DELAYED, "dependencies done", now, due=due)
        else:
            self._move(job, S.PENDING, "dependencies done", now)

    def _dispatch(self, now: float) -> None:
        """Place ready jobs on workers until nothing more fits (see scheduler.py)."""
        ready = self.ready
        if not ready:
            return
        workers = self.registry.schedulable
        if not any(w.used_slots < w.capacity for w in workers):
            return
        skip: set[JobClass] | None = None
        while True:
            head = ready.best(skip)
            if head is None:
                return
            key, job = head
            worker = self._place(workers, job)
            if worker is None:
                skip = skip or set()
                skip.add(key)
                continue
            ready.pop(key)
            self._move(job, S.SCHEDULED, f"dispatch to {worker.name}", now, worker=worker.id, worker_name=worker.name)
            self._settle(now)

    def _place(self, workers: Sequence[WorkerRecord], job: Job) -> WorkerRecord | None:
        """Least-connections, unless the job asks to follow its first dependency (AFFINITY).

        Affinity is for data locality, so while that worker lives the job waits for a
        free slot there; only if it is gone does the job go wherever fits.
        """
        if job.affinity and job.deps:
            parent = self.jobs.get(job.deps[0])
            home = parent.worker if parent is not None else None
            for worker in workers:
                if worker.id == home:
                    return worker if worker.fits(job) else None
        return self.picker.choose(workers, job)

    def _done(self, now: float) -> list[Effect]:
        self._settle(now)
        self._dispatch(now)
        out, self._out = self._out, []
        if self.settings.validate:
            self.validate()
        return out

    def _status(self, worker_id: str, status: TaskStatus, now: float, via: str) -> None:
        job = self.jobs.get(status.job_id)
        if job is None:
            log.warning("%s reported %s for unknown job %s", worker_id, status.state, status.job_id)
            return
        if not self.is_current_report(worker_id, status):
            # the end of an attempt that a CANCEL or STOP ended is expected: the story says it is over,
            # and it is not worth a line at INFO
            expected = job.is_final and status.attempt == job.attempts
            if expected and job.state in (S.CANCELLED, S.STOPPED):  # the end of what the stop killed
                ended = f" ({status.error})" if status.error else ""
                note = f"attempt {status.attempt}'s process ended on {worker_id}{ended}{via}"
            else:
                note = f"ignored {status.state} of attempt {status.attempt} from {worker_id}{via}"
            self._note(job, note, now)
            log.log(
                logging.DEBUG if expected else logging.INFO,
                "%s %s (job is %s, attempt %d)",
                job.id,
                note,
                job.state.value,
                job.attempts,
            )
            return
        if job.state is S.SCHEDULED and not (status.handed_back and status.started_at is None):
            self._move(job, S.RUNNING, f"started on {job.worker_name}{via}", _start_time(job, status, now))
            job.restarts, job.service_up = 0, False
        if job.is_service:
            self._service_report(job, status, now)
        if status.outputs and status.state != "RUNNING":
            kept = sorted(status.outputs)
            run = job.current_run
            if run is not None:
                run.outputs = kept
            if status.state == "COMPLETED":
                job.outputs = tuple(kept)
        if status.handed_back and status.state != "RUNNING":
            self._hand_back(job, status, now, via)
        elif status.state == "COMPLETED":
            self._move(job, S.COMPLETED, f"exit 0{via}", now, exit_code=status.exit_code or 0)
        elif status.state == "FAILED":
            what = status.error or f"exit {status.exit_code}"
            self._fail(job, now, f"failed: {what}{via}", status.exit_code, status.error)

    def _hand_back(self, job: Job, status: TaskStatus, now: float, via: str) -> None:
        """Its worker is shutting down and stopped the attempt: requeue the job, the attempt not counted.

        The worker said it was leaving before it stopped anything (a HEARTBEAT with ``leaving``), so
        it gets nothing new meanwhile. A hand-back kept over a restart comes in the REGISTER of the
        worker's next run instead, which is not leaving.
        """
        job.service_up = False
        why = status.error or "worker shutting down"
        self._move(job, S.PENDING, f"handed back by {job.worker_name}: {why}{via}", now, error=why, handed_back=True)

    def _leaving(self, worker_id: str, now: float) -> None:
        """The worker is shutting down: it gets no new task, and once gone it is RETIRED, not LOST."""
        record = self.registry.get(worker_id)
        if record is not None and record.health is Health.HEALTHY:
            self.registry.drain(worker_id, now)
            log.info("%s is shutting down: it hands its tasks back and leaves", record.name)

    def _fail(self, job: Job, now: float, stimulus: str, exit_code: int | None, error: str) -> None:
        self.failed_attempts += 1
        delay = next_retry(
            job.attempts - job.retry_base,
            job.max_attempts,
            base_s=job.backoff_base_s,
            cap_s=job.backoff_cap_s,
            factor=job.backoff_factor,
            rng=self.rng,
        )
        used = job.attempts - job.retry_base
        if delay is None:
            self._move(job, S.FAILED, stimulus, now, exit_code=exit_code, error=error)
            self._move(job, S.DEAD, f"out of attempts ({job.max_attempts})", now)
            log.warning("%s %s dead after %d attempt(s): %s", job.worker_name, job.id, used, job.error)
        else:
            self._move(job, S.FAILED, stimulus, now, exit_code=exit_code, error=error, due=now + delay)
            log.info(
                "%s %s retry %d/%d in %.2gs: %s", job.worker_name, job.id, used + 1, job.max_attempts, delay, job.error
            )

    def _lose(self, job: Job, now: float, stimulus: str) -> None:
        """The worker holding the job's attempt is gone: the attempt counts as failed.

        A child worker started by a DEPLOY outlives its parent: that job ends (STOPPED) and
        the child carries on as a worker of its own, instead of a second child being started.
        """
        child = self._child_of(job) if job.is_service and job.state is S.RUNNING else None
        if child is not None and child.connected:
            job.service_up = False
            self._move(job, S.STOPPED, f"{stimulus}; child worker {child.name} carries on", now, error=stimulus)
            return
        job.service_up = False
        if job.attempts_left > 0:
            self.failed_attempts += 1
            self._move(job, S.PENDING, stimulus, now, error="worker lost")
        else:
            self._fail(job, now, stimulus, None, "worker lost")


class _Either:
    """``in`` over two id tables without copying either (DAG admission)."""

    __slots__ = ("_a", "_b")

    def __init__(self, a: dict[str, Job], b: dict[str, Job]) -> None:
        self._a, self._b = a, b

    def __contains__(self, key: object) -> bool:
        return key in self._a or key in self._b


def _start_time(job: Job, status: TaskStatus, now: float) -> float:
    """When a SCHEDULED job's attempt started, on this master's clock.

    A job that ends within the worker's RUNNING-report delay sends only its final report, so
    ``now`` is when it ended. Its start is then dated back by how long the worker measured it to
    run: a difference of two readings of the worker's clock, valid on ours although the two
    clocks may disagree. Never before the dispatch, so the story stays in order.
    """
    if status.state == "RUNNING" or status.started_at is None or status.finished_at is None:
        return now
    ran = status.finished_at - status.started_at
    if not (math.isfinite(ran) and ran > 0):  # a worker's clock stepped back mid-run, or a nonsense report
        return now
    dispatched = job.story[-1].t
    return min(now, max(dispatched, now - ran))


def _ended_time(job: Job | None, status: TaskStatus, sent_at: float | None, now: float) -> float:
    """When a result a worker kept while it was away ended, on this master's clock.

    ``sent_at - finished_at`` is how long ago it ended, by the worker's clock alone (the two
    clocks may disagree). Never before the job's last recorded step, so the story stays in order.
    """
    if job is None or sent_at is None or status.finished_at is None:
        return now
    age = sent_at - status.finished_at
    if not (math.isfinite(age) and age > 0):
        return now
    return min(now, max(job.story[-1].t, now - age))
