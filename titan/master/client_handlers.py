"""The client request handlers of :class:`~titan.master.server.Master`.

One method per request opcode (SUBMIT, SUBMIT_DAG, JOB_STATUS, LIST_JOBS, STATS,
CANCEL, RETRY, WAIT, JOB_OUTPUTS, LOGS_SUBSCRIBE, GC, STOP, SPAWN, RETIRE): each
parses its message, hands the stimulus to the core, applies the effects and
replies. ``Master`` maps the opcodes to them in its dispatch table; a pending
WAIT is a :class:`_Waiter`, answered when its jobs end or its timer fires.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol import (
    DEFAULT_MAX_BODY,
    HEADER_SIZE,
    Cancel,
    Frame,
    Gc,
    GcReply,
    JobListReply,
    JobOutputs,
    JobOutputsReply,
    JobReply,
    JobStatus,
    ListJobs,
    LogsSubscribe,
    LogsSubscribed,
    Message,
    Opcode,
    ProtocolError,
    Retire,
    RetireReply,
    Retry,
    Spawn,
    Stats,
    Stop,
    Submit,
    SubmitDag,
    SubmitDagReply,
    SubmitReply,
    Wait,
    WorkerInfo,
    encode_error,
    encode_reply_body,
)
from titan.errors import ValidationError
from titan.jobs import Effect, Job, JobState
from titan.net import Peer
from titan.runtime import paused_gc

from .dag_parts import DagParts
from .gc import GC_NOTE, collectable, collected, remove
from .runtimes import require_runtime
from .scheduler import JobClass, LeastConnections

if TYPE_CHECKING:
    from .artifacts import ArtifactStore
    from .core import MasterState
    from .durable import DurableLog
    from .logs import LogHub
    from .logstore import LogStore
    from .payload_ledger import PayloadLedger
    from .scaling import Scaling

__all__ = ["ClientHandlers"]

log = logging.getLogger(__name__)

# a DAG this large is admitted with the cyclic GC held off (see titan.runtime.paused_gc)
_BULK_DAG = 1000


def _is_bulk(jobs: object) -> bool:
    """Whether a SUBMIT_DAG body's ``jobs`` is large enough to hold the GC off (anything but an array: no)."""
    return isinstance(jobs, list) and len(jobs) >= _BULK_DAG


@dataclass(eq=False)
class _Waiter:
    """One WAIT request: answered when ``remaining`` empties or its timer fires."""

    peer: Peer
    request: Frame
    job_ids: list[str]
    remaining: set[str]
    timer: asyncio.TimerHandle | None = None
    done: bool = False


@dataclass(eq=False)
class _ClientSession:
    waiters: set[_Waiter] = field(default_factory=set)
    dag_parts: DagParts = field(default_factory=DagParts)


class ClientHandlers:
    """The client frame handlers; the state, the log and the helpers they use are ``Master``'s."""

    if TYPE_CHECKING:
        state: MasterState
        clock: Callable[[], float]
        wal: DurableLog
        artifacts: ArtifactStore
        logs: LogHub | None
        log_store: LogStore
        payloads: PayloadLedger
        scaling: Scaling
        _waiters: dict[str, set[_Waiter]]

        def _reply(self, peer: Peer, request: Frame, message: Message) -> None: ...

        def _apply(self, effects: list[Effect]) -> None: ...

    def _on_submit(self, peer: Peer, frame: Frame) -> None:
        msg = Submit.from_wire(frame.body)
        now = self.clock()
        job, effects = self.state.submit(require_runtime(msg.job, self._worker_infos(now)), now)
        self._apply(effects)
        self._reply(peer, frame, SubmitReply(job_id=job.id, warning=self._placement_warning(job)))

    def _placement_warning(self, job: Job) -> str:
        """Why an accepted job cannot start on any worker that is up, or "" (it can, or it already did)."""
        if job.state is not JobState.PENDING and job.state is not JobState.DELAYED:
            return ""  # dispatched at once, or waiting on its dependencies first
        why = self._unplaceable(job)
        if not why:
            return ""
        if not self.state.registry.schedulable:
            return f"{why}: the job waits until one registers"
        return f"{why}: the job waits until one that does registers"

    def _dag_placement_warning(self, jobs: list[Job]) -> str:
        """Which jobs of an accepted DAG no worker that is up could ever run, or "".

        Asked once per class of need (skills, slots, memory), not per job: a DAG may bring 100 000.
        """
        verdicts: dict[JobClass, str] = {}
        stuck: list[tuple[Job, str]] = []
        previous: Job | None = None
        why = ""
        for job in jobs:
            # the class rarely changes from one job to the next (skill sets are interned): no key to build
            if (
                previous is None
                or job.skills is not previous.skills
                or job.slots != previous.slots
                or job.memory_mb != previous.memory_mb
            ):
                key = (job.skills, job.slots, job.memory_mb)
                found = verdicts.get(key)
                why = verdicts[key] = self._unplaceable(job) if found is None else found
                previous = job
            if why:
                stuck.append((job, why))
        if not stuck:
            return ""
        first, why = stuck[0]
        others = f" and {len(stuck) - 1} more" if len(stuck) > 1 else ""
        return f"{first.id}{others} cannot start yet ({why}): they wait until a worker that can registers"

    def _unplaceable(self, job: Job) -> str:
        """What no worker that is up offers ``job`` (skills, slots, memory), or "" when one could run it."""
        up = self.state.registry.schedulable  # the HEALTHY ones, kept by the registry
        if LeastConnections.could_ever_run(up, job):
            return ""
        if not up:
            return "no worker is up"
        if not any(job.skills <= worker.skills for worker in up):
            offered = frozenset().union(*(worker.skills for worker in up))
            missing = job.skills - offered
            if missing:
                return f"no worker that is up offers {', '.join(sorted(missing))}"
            return f"no one worker that is up offers all of {', '.join(sorted(job.skills))}"
        if not any(job.slots <= worker.capacity for worker in up):
            return f"no worker that is up has {job.slots} slots"
        return f"no worker that is up has {job.memory_mb} MiB of memory for its jobs"

    def _worker_infos(self, now: float) -> Iterator[WorkerInfo]:
        """The workers as the wire shows them, built only if iterated (few submissions need them)."""
        yield from self.state.registry.infos(now)

    def _on_submit_dag(self, peer: Peer, frame: Frame) -> None:
        parts = peer.context.dag_parts if isinstance(peer.context, _ClientSession) else DagParts()
        try:
            with paused_gc(_is_bulk(frame.body.get("jobs")), keep=True):
                msg = SubmitDag.from_wire(frame.body)
        except ProtocolError as exc:
            parts.refused(exc.message)
            raise
        whole = parts.add(msg)
        if whole is None:  # a part of a DAG whose last part is still to come (dag_parts.py)
            self._reply(peer, frame, SubmitDagReply(job_ids=[]))
            return
        with paused_gc(len(whole) >= _BULK_DAG, keep=True):
            workers = self.state.registry.infos(self.clock())
            specs = [require_runtime(spec, workers) for spec in whole]
            jobs, effects = self.state.submit_dag(specs, self.clock())
        self._apply(effects)
        reply = SubmitDagReply(
            job_ids=[job.id for job in jobs], dag_id=jobs[0].dag or "", warning=self._dag_placement_warning(jobs)
        )
        self._reply(peer, frame, reply)

    def _on_job_status(self, peer: Peer, frame: Frame) -> None:
        msg = JobStatus.from_wire(frame.body)
        info = self.state.job(msg.job_id).to_info()
        runs = []
        for run in info.runs:
            stats = self.log_store.stats(info.id, run.attempt)
            runs.append(dataclasses.replace(run, log_lost=stats.log_lost, truncated=stats.truncated))
        self._reply(peer, frame, JobReply(job=dataclasses.replace(info, runs=runs)))

    def _on_logs_subscribe(self, peer: Peer, frame: Frame) -> None:
        msg = LogsSubscribe.from_wire(frame.body)
        job = self.state.job(msg.job_id)
        assert self.logs is not None
        if job.is_final and collected(job) and not (self.log_store.jobs_dir / job.id).exists():
            raise ValidationError(f"the logs of {job.id} were removed by titan gc")
        numbers = [run.attempt for run in job.runs]
        if msg.attempt is not None and msg.attempt not in numbers:
            raise ValidationError(f"{job.id} has no attempt {msg.attempt}: it has {attempts_held(numbers)}")
        attempt = self.logs.subscribe(peer, job, msg.follow, msg.attempt)
        peer.reply(frame, LogsSubscribed(job_id=job.id, attempt=attempt))

    async def _on_gc(self, peer: Peer, frame: Frame) -> None:
        msg = Gc.from_wire(frame.body)
        jobs_dir = self.log_store.jobs_dir
        # logs of attempts that ended a moment ago may still be on their way to disk: written after the
        # folder's removal, they would bring it back
        await asyncio.to_thread(self.log_store.flush)
        try:
            names = [entry.name for entry in os.scandir(jobs_dir) if entry.is_dir()]
        except FileNotFoundError:
            names = []
        doomed = collectable(
            names, self.state.jobs, self.clock() - msg.older_than_s, lambda name: _mtime(jobs_dir, name)
        )
        freed = await asyncio.to_thread(remove, jobs_dir, doomed)
        now = self.clock()
        effects: list[Effect] = []
        for job_id in doomed:
            if self.logs is not None:
                self.logs.forget_job(job_id)
            if job_id in self.state.jobs:  # in its story (and the WAL): why its logs and outputs are gone
                effects += self.state.note(job_id, GC_NOTE, now)
        self._apply(effects)
        log.info("gc: removed %d job folder(s), %d bytes", len(doomed), freed)
        self._reply(peer, frame, GcReply(removed=doomed, freed_bytes=freed))

    def _on_list_jobs(self, peer: Peer, frame: Frame) -> None:
        msg = ListJobs.from_wire(frame.body)
        if msg.offset < 0:
            raise ValidationError(f"offset must not be negative, got {msg.offset}")
        jobs = self.state.list_jobs(msg.state, msg.limit, msg.dag, msg.offset)
        self._reply_jobs(peer, frame, jobs)

    def _on_stats(self, peer: Peer, frame: Frame) -> None:
        Stats.from_wire(frame.body)
        stats = self.state.stats(self.clock())
        stats.extra.update(self.wal.extra())
        if self.logs is not None:
            stats.extra.update(self.logs.extra())
        stats.extra.update(
            payload_bytes_shipped=self.payloads.bytes_shipped, payload_bytes_spared=self.payloads.bytes_spared
        )
        stats.extra["autoscaler"] = self.scaling.extra()
        self._reply(peer, frame, stats)

    def _on_stop(self, peer: Peer, frame: Frame) -> None:
        msg = Stop.from_wire(frame.body)
        job, effects = self.state.stop(msg.job_id, self.clock())
        log.info("%s STOPPED on request", job.id)
        self._apply(effects)
        self._reply(peer, frame, JobReply(job=job.to_info()))

    def _on_spawn(self, peer: Peer, frame: Frame) -> None:
        msg = Spawn.from_wire(frame.body)
        self._reply(peer, frame, self.scaling.spawn(msg.worker, msg.port, msg.capacity))

    def _on_retire(self, peer: Peer, frame: Frame) -> None:
        msg = Retire.from_wire(frame.body)
        ids, effects = self.scaling.retire(msg.worker)
        self._apply(effects)
        self._reply(peer, frame, RetireReply(workers=ids))

    def _on_cancel(self, peer: Peer, frame: Frame) -> None:
        msg = Cancel.from_wire(frame.body)
        job, effects = self.state.cancel(msg.job_id, self.clock(), dag=msg.dag)
        self._apply(effects)
        self._reply(peer, frame, JobReply(job=job.to_info()))

    def _on_retry(self, peer: Peer, frame: Frame) -> None:
        msg = Retry.from_wire(frame.body)
        job, effects = self.state.retry(msg.job_id, self.clock())
        self._apply(effects)
        self._reply(peer, frame, JobReply(job=job.to_info()))

    def _on_job_outputs(self, peer: Peer, frame: Frame) -> None:
        msg = JobOutputs.from_wire(frame.body)
        job = self.state.job(msg.job_id)
        runs = [run for run in job.runs if run.outputs and msg.attempt in (None, run.attempt)]
        if not runs:
            if msg.attempt is not None and all(run.attempt != msg.attempt for run in job.runs):
                raise ValidationError(f"job '{job.id}' has no attempt {msg.attempt}")
            self._reply(peer, frame, JobOutputsReply(job_id=job.id, attempt=msg.attempt or 0))
            return
        run = runs[-1]
        if collected(job) and not self.artifacts.outputs_dir(job.id, run.attempt).exists():
            raise ValidationError(f"the outputs of {job.id} were removed by titan gc")
        files = self.artifacts.load(job.id, run.attempt, run.outputs)
        self._reply(peer, frame, JobOutputsReply(job_id=job.id, attempt=run.attempt, files=files))

    def _on_wait(self, peer: Peer, frame: Frame) -> None:
        msg = Wait.from_wire(frame.body)
        if msg.timeout_s is not None and msg.timeout_s < 0:
            raise ValidationError(f"WAIT timeout must not be negative, got {msg.timeout_s:g}")
        jobs = [self.state.job(job_id) for job_id in msg.job_ids]  # UnknownJob before anything is kept
        remaining = {job.id for job in jobs if not job.is_final}
        waiter = _Waiter(peer, frame, list(msg.job_ids), remaining)
        if not remaining:
            self._answer(waiter, timed_out=False)
            return
        for job_id in remaining:
            self._waiters.setdefault(job_id, set()).add(waiter)
        if isinstance(peer.context, _ClientSession):
            peer.context.waiters.add(waiter)
        if msg.timeout_s is not None:
            waiter.timer = asyncio.get_running_loop().call_later(msg.timeout_s, self._answer, waiter, True)

    def _answer(self, waiter: _Waiter, timed_out: bool) -> None:
        if waiter.done:
            return
        self._drop_waiter(waiter)
        jobs = self.state.jobs
        self._reply_jobs(waiter.peer, waiter.request, [jobs[i] for i in waiter.job_ids], timed_out=timed_out)

    def _reply_jobs(self, peer: Peer, request: Frame, jobs: Iterable[Job], *, timed_out: bool = False) -> None:
        """A JobListReply, each job's map built straight from its record (``Job.info_wire``)."""
        body: dict[str, Any] = {"jobs": [job.info_wire() for job in jobs]}
        if timed_out:
            body["timed_out"] = True
        self.wal.commit()
        frame = encode_reply_body(JobListReply, body, rid=request.rid, reply_to=Opcode(request.opcode))
        if len(frame) > HEADER_SIZE + DEFAULT_MAX_BODY:
            # no reader would take it (the limit is enforced from the header): say why instead
            size, count = len(frame) - HEADER_SIZE, len(body["jobs"])
            frame = encode_error(
                "FRAME_TOO_LARGE",
                f"the answer of {count} jobs would be {size} bytes, over the {DEFAULT_MAX_BODY}-byte frame limit: "
                "ask for fewer at a time (LIST_JOBS limit and offset, WAIT on fewer ids)",
                rid=request.rid,
            )
        self.wal.send(peer, frame)

    def _drop_waiter(self, waiter: _Waiter) -> None:
        waiter.done = True
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        for job_id in waiter.remaining:
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._waiters[job_id]
        if isinstance(waiter.peer.context, _ClientSession):
            waiter.peer.context.waiters.discard(waiter)


def _mtime(folder: Path, name: str) -> float:
    try:
        return os.stat(folder / name).st_mtime
    except OSError:
        return float("inf")  # gone already: nothing to remove


def attempts_held(numbers: list[int]) -> str:
    """ "attempts 1 to 4", "attempts 1 and 3" (a restart skipped 2), "attempt 1", "no attempt yet"."""
    if not numbers:
        return "no attempt yet"
    if len(numbers) == 1:
        return f"attempt {numbers[0]}"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"attempts {numbers[0]} to {numbers[-1]}"
    listed = ", ".join(map(str, numbers[:-1][-8:]))
    return f"attempts {'…, ' if len(numbers) > 9 else ''}{listed} and {numbers[-1]}"
