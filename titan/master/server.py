"""``Master``: the asyncio shell around :class:`~titan.master.core.MasterState`.

It owns the listening socket, the connections, one delay timer and the health
check; it turns frames into stimuli and effects into frames. No scheduling
decision is made here. Dispatch happens synchronously in the callback that
received the stimulus, so a SUBMIT reaches a worker in the same loop iteration.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from protocol import (
    Cancel,
    Frame,
    Heartbeat,
    Hello,
    JobListReply,
    JobReply,
    JobStatus,
    ListJobs,
    Opcode,
    Register,
    RegisterReply,
    Retry,
    Stats,
    Submit,
    SubmitDag,
    SubmitDagReply,
    SubmitReply,
    TaskStart,
    TaskStatus,
    TaskStop,
    UnknownOpcode,
    Wait,
)
from titan.config import MasterSettings
from titan.errors import ValidationError
from titan.jobs import CloseWorker, Effect, Job, JobFinished, SendTask, StopTask
from titan.net import HandshakeGate, Peer

from .core import MasterState
from .files import PermFiles

__all__ = ["Master"]

log = logging.getLogger(__name__)

FrameMethod = Callable[[Peer, Frame], None]


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


class Master:
    """A Titan master: ``await start()``, then ``serve_forever()`` or ``aclose()``.

    Args:
        settings: host/port (port 0 picks a free one; :attr:`port` is the real one
            after :meth:`start`), perm_files, heartbeat timeout, token ...
        clock: epoch seconds; the core gets every ``now`` from it.
    """

    def __init__(self, settings: MasterSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.files = PermFiles(settings.perm_files, max_bytes=settings.max_payload_bytes)
        self.state = MasterState(settings, self.files, now=clock())
        self.port = settings.port
        self._server: asyncio.Server | None = None
        self._peers: set[Peer] = set()
        self._workers: dict[str, Peer] = {}  # worker id -> its registered connection
        self._waiters: dict[str, set[_Waiter]] = {}  # job id -> WAITs that include it
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._health: asyncio.TimerHandle | None = None
        self._closing = False
        self._stopped = asyncio.Event()
        self._gate = HandshakeGate(
            server_name=settings.name,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            max_body=settings.max_body,
            token=settings.token,
            on_accept=self._on_accept,
        )
        self._client_handlers: dict[int, FrameMethod] = {
            Opcode.SUBMIT: self._on_submit,
            Opcode.SUBMIT_DAG: self._on_submit_dag,
            Opcode.JOB_STATUS: self._on_job_status,
            Opcode.LIST_JOBS: self._on_list_jobs,
            Opcode.STATS: self._on_stats,
            Opcode.CANCEL: self._on_cancel,
            Opcode.RETRY: self._on_retry,
            Opcode.WAIT: self._on_wait,
        }
        self._worker_handlers: dict[int, FrameMethod] = {
            Opcode.HEARTBEAT: self._on_heartbeat,
            Opcode.TASK_STATUS: self._on_task_status,
        }

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> None:
        """Bind and listen. Raises OSError when the address is taken."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._make_peer, self.settings.host, self.settings.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._schedule_health()
        log.info("listening on %s:%d", self.settings.host, self.port)

    async def serve_forever(self) -> None:
        """Serve until :meth:`aclose` is called (starting first if needed)."""
        if self._server is None:
            await self.start()
        await self._stopped.wait()

    async def aclose(self) -> None:
        """Stop listening, close every connection, cancel timers. Idempotent."""
        if self._closing:
            await self._stopped.wait()
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        for handle in (self._timer, self._health):
            if handle is not None:
                handle.cancel()
        self._timer = self._health = None
        for waiters in self._waiters.values():
            for waiter in waiters:
                if waiter.timer is not None:
                    waiter.timer.cancel()
        self._waiters.clear()
        await asyncio.gather(*(peer.aclose() for peer in list(self._peers)), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._stopped.set()

    async def __aenter__(self) -> Master:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ connections
    def _make_peer(self) -> Peer:
        peer = Peer(self._gate, max_body=self.settings.max_body, on_close=self._on_peer_closed)
        self._peers.add(peer)
        return peer

    def _on_accept(self, peer: Peer, hello: Hello) -> None:
        if hello.role == "worker":
            peer.context = None  # the worker id, once it has registered
            peer.on_frame = self._on_worker_frame
        else:
            peer.context = _ClientSession()
            peer.on_frame = self._on_client_frame

    def _on_peer_closed(self, peer: Peer) -> None:
        self._peers.discard(peer)
        self._gate.forget(peer)
        context = peer.context
        if isinstance(context, _ClientSession):
            for waiter in context.waiters:
                self._drop_waiter(waiter)
            context.waiters.clear()
        elif isinstance(context, str) and self._workers.get(context) is peer:
            del self._workers[context]
            if not self._closing:
                self._apply(self.state.worker_disconnected(context, self.clock()))

    # ------------------------------------------------------------------ worker frames
    def _on_worker_frame(self, peer: Peer, frame: Frame) -> None:
        if frame.opcode == Opcode.REGISTER and not frame.is_reply:
            self._on_register(peer, frame)
            return
        handler = self._worker_handlers.get(frame.opcode)
        if handler is None or frame.is_reply:
            raise UnknownOpcode(f"opcode {frame.opcode:#04x} is not accepted from a worker")
        if peer.context is None:
            peer.send_error("NOT_REGISTERED", "send REGISTER before anything else", rid=frame.rid)
            return
        handler(peer, frame)

    def _on_register(self, peer: Peer, frame: Frame) -> None:
        msg = Register.from_wire(frame.body)
        if peer.context is not None:
            raise ValidationError(f"this connection is already registered as worker '{peer.context}'")
        stale, effects = self.state.worker_registered(msg, self.clock())
        peer.context = msg.worker_id
        self._workers[msg.worker_id] = peer
        # the answer goes first: tasks for this worker follow it on the wire
        peer.reply(
            frame,
            RegisterReply(
                worker_id=msg.worker_id, heartbeat_interval_s=self.settings.heartbeat_interval_s, stale=stale
            ),
        )
        log.info("%s registered (capacity %d, skills %s)", msg.name, msg.capacity, ",".join(msg.skills))
        self._apply(effects)

    def _on_heartbeat(self, peer: Peer, frame: Frame) -> None:
        Heartbeat.from_wire(frame.body)
        self._apply(self.state.heartbeat(peer.context, self.clock()))

    def _on_task_status(self, peer: Peer, frame: Frame) -> None:
        status = TaskStatus.from_wire(frame.body)
        self._apply(self.state.task_status(peer.context, status, self.clock()))

    # ------------------------------------------------------------------ client frames
    def _on_client_frame(self, peer: Peer, frame: Frame) -> None:
        handler = self._client_handlers.get(frame.opcode)
        if handler is None or frame.is_reply:
            raise UnknownOpcode(f"opcode {frame.opcode:#04x} is not accepted from a client")
        handler(peer, frame)

    def _on_submit(self, peer: Peer, frame: Frame) -> None:
        msg = Submit.from_wire(frame.body)
        job, effects = self.state.submit(msg.job, self.clock())
        self._apply(effects)
        peer.reply(frame, SubmitReply(job_id=job.id))

    def _on_submit_dag(self, peer: Peer, frame: Frame) -> None:
        msg = SubmitDag.from_wire(frame.body)
        jobs, effects = self.state.submit_dag(msg.jobs, self.clock())
        self._apply(effects)
        peer.reply(frame, SubmitDagReply(job_ids=[job.id for job in jobs]))

    def _on_job_status(self, peer: Peer, frame: Frame) -> None:
        msg = JobStatus.from_wire(frame.body)
        peer.reply(frame, JobReply(job=self.state.job(msg.job_id).to_info()))

    def _on_list_jobs(self, peer: Peer, frame: Frame) -> None:
        msg = ListJobs.from_wire(frame.body)
        jobs = self.state.list_jobs(msg.state, msg.limit)
        peer.reply(frame, JobListReply(jobs=[job.to_info() for job in jobs]))

    def _on_stats(self, peer: Peer, frame: Frame) -> None:
        Stats.from_wire(frame.body)
        peer.reply(frame, self.state.stats(self.clock()))

    def _on_cancel(self, peer: Peer, frame: Frame) -> None:
        msg = Cancel.from_wire(frame.body)
        job, effects = self.state.cancel(msg.job_id, self.clock())
        self._apply(effects)
        peer.reply(frame, JobReply(job=job.to_info()))

    def _on_retry(self, peer: Peer, frame: Frame) -> None:
        msg = Retry.from_wire(frame.body)
        job, effects = self.state.retry(msg.job_id, self.clock())
        self._apply(effects)
        peer.reply(frame, JobReply(job=job.to_info()))

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
        waiter.peer.reply(
            waiter.request, JobListReply(jobs=[jobs[i].to_info() for i in waiter.job_ids], timed_out=timed_out)
        )

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

    # ------------------------------------------------------------------ effects
    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SendTask):
                self._send_task(effect.worker_id, effect.job)
            elif isinstance(effect, JobFinished):
                self._finished(effect.job)
            elif isinstance(effect, StopTask):
                peer = self._workers.get(effect.worker_id)
                if peer is not None:
                    peer.send(TaskStop(job_id=effect.job_id, attempt=effect.attempt, reason=effect.reason))
            elif isinstance(effect, CloseWorker):
                peer = self._workers.pop(effect.worker_id, None)
                if peer is not None:
                    log.warning("closing the connection of lost worker %s: %s", effect.worker_id, effect.reason)
                    peer.close()
            else:  # the core applies every other kind itself
                raise AssertionError(f"unexpected effect {effect!r}")
        self._arm_timer()

    def _send_task(self, worker_id: str, job: Job) -> None:
        peer = self._workers.get(worker_id)
        if peer is None:  # gone between dispatch and now: the health check requeues it
            log.warning("%s scheduled on %s which has no connection", job.id, worker_id)
            return
        try:
            start = self._task_start(job)
        except ValidationError as exc:
            # the file changed or vanished after submission: this attempt fails, retries may follow
            report = TaskStatus(job_id=job.id, attempt=job.attempts, state="FAILED", error=str(exc))
            self._apply(self.state.task_status(worker_id, report, self.clock()))
            return
        peer.send(start)

    def _task_start(self, job: Job) -> TaskStart:
        if job.run_kind != "RUN":
            return TaskStart(
                job_id=job.id,
                attempt=job.attempts,
                kind=job.run_kind,
                data=job.run_data,
                args=job.run_args,
                timeout_s=job.timeout_s,
                slots=job.slots,
            )
        if job.payload is not None:
            data, digest, mode, name = job.payload, hashlib.sha256(job.payload).hexdigest(), 0o755, job.run_data
        else:
            payload = self.files.load(job.run_data)
            data, digest, mode, name = payload.data, payload.sha256, payload.mode, payload.name
        return TaskStart(
            job_id=job.id,
            attempt=job.attempts,
            kind="RUN",
            data=job.run_data,
            args=job.run_args,
            timeout_s=job.timeout_s,
            payload=data,
            payload_name=name,
            payload_hash=digest,
            payload_mode=mode,
            slots=job.slots,
        )

    def _finished(self, job: Job) -> None:
        waiters = self._waiters.pop(job.id, None)
        if not waiters:
            return
        for waiter in waiters:
            waiter.remaining.discard(job.id)
            if not waiter.remaining:
                self._answer(waiter, timed_out=False)

    # ------------------------------------------------------------------ timers
    def _arm_timer(self) -> None:
        """Keep one timer, set to the earliest due time of the delay heap."""
        if self._closing:
            return
        due = self.state.next_due()
        if due is None or (self._timer is not None and self._timer_due is not None and self._timer_due <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = asyncio.get_running_loop().call_later(max(0.0, due - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_due = None
        self._apply(self.state.timers_due(self.clock()))

    def _schedule_health(self) -> None:
        if self._closing:
            return
        period = max(0.01, self.settings.heartbeat_timeout_s / 4)
        self._health = asyncio.get_running_loop().call_later(period, self._on_health)

    def _on_health(self) -> None:
        try:
            self._apply(self.state.check_health(self.clock()))
        except Exception:  # a bug here must not stop future checks
            log.exception("health check failed")
        self._schedule_health()
