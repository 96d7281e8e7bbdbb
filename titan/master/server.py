"""``Master``: the asyncio shell around :class:`~titan.master.core.MasterState`.

It owns the listening socket, the connections, the WAL, one delay timer and the
health check; it turns frames into stimuli and effects into frames. No scheduling
decision is made here. Dispatch happens synchronously in the callback that
received the stimulus.

Durability: after every stimulus the changes the core recorded are committed to
the WAL as one record (:class:`~titan.master.durable.DurableLog`), and every
frame the master sends waits until the records before it are on disk: a SUBMIT
is answered only once the job is durable. The exception is TASK_START, which
leaves at once; a restart fences an attempt whose dispatch was lost (see
durable.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import resource
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

from protocol import (
    Drain,
    Frame,
    Heartbeat,
    Hello,
    Message,
    Opcode,
    Register,
    RegisterReply,
    TaskStart,
    TaskStatus,
    TaskStop,
    UnknownOpcode,
    encode_message,
)
from titan.config import MasterSettings
from titan.errors import UsageError, ValidationError
from titan.jobs import ACTIVE_STATES, CloseWorker, DrainWorker, Effect, Job, JobFinished, SendTask, StopTask
from titan.net import HandshakeGate, Peer
from titan.net.loglimit import LogLimit
from titan.net.tls import TlsServer, describe_handshake_failure, server_context
from titan.workspace import WorkspaceLock

from .admission import WORKER_ARTIFACT
from .artifacts import ArtifactStore
from .client_handlers import ClientHandlers, _ClientSession, _Waiter
from .core import MasterState
from .durable import DurableLog
from .files import PermFiles
from .logs import LogHub
from .logstore import LogStore
from .payload_ledger import PayloadLedger
from .scaling import Scaling

__all__ = ["Master"]

log = logging.getLogger(__name__)

# room left in a TASK_START for its own fields besides the script and the inputs
_FRAME_HEADROOM = 64 * 1024

FrameMethod = Callable[[Peer, Frame], Awaitable[None] | None]


def _open_file_limit() -> int | None:
    """The soft RLIMIT_NOFILE, None if there is none."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _open_files() -> int:
    """Descriptors this process has open now (0 where /proc cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


class Master(ClientHandlers):
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
        self.wal = DurableLog(
            settings.workspace / "wal",
            self.state,
            fsync=settings.fsync,
            snapshot_every_records=settings.snapshot_every_records,
            snapshot_every_bytes=settings.snapshot_every_bytes,
            commit_delay_s=settings.wal_commit_delay_s,
            on_failure=self._on_wal_failure,
        )
        self.failure: BaseException | None = None  # why the master stopped on its own
        self._fatal: asyncio.Task[None] | None = None
        self.artifacts = ArtifactStore(
            settings.workspace,
            max_output_bytes=settings.max_output_bytes,
            max_inputs_bytes=settings.max_body - _FRAME_HEADROOM,
        )
        self.logs: LogHub | None = None  # bound in start(), on the UDP port of the TCP port's number
        self.log_store = LogStore(settings.workspace)
        self.payloads = PayloadLedger()
        self.port = settings.port
        self._server: asyncio.Server | TlsServer | None = None
        self._lock: WorkspaceLock | None = None  # taken in start(), held until aclose()
        self._tls: ssl.SSLContext | None = None  # made in start() from the settings' certificate
        self._peers: set[Peer] = set()
        self._tls_refusals = LogLimit(log, burst=5, period_s=60.0)
        # a loop that runs out of descriptors may drop new connections without telling us (uvloop
        # does: libuv accepts and closes them), so the master warns while it is still accepting
        self._file_limit = _open_file_limit()
        self._crowded_at: int | None = None  # connections that leave a fifth of the spare descriptors; set in start()
        self._crowded = LogLimit(log, burst=1, period_s=60.0)
        self._workers: dict[str, Peer] = {}  # worker id -> its registered connection
        self._waiters: dict[str, set[_Waiter]] = {}  # job id -> WAITs that include it
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._health: asyncio.TimerHandle | None = None
        self._closing = False
        self._stopped = asyncio.Event()
        self.scaling = Scaling(
            self.state,
            send=self._send_to_worker,
            apply=self._apply,
            clock=clock,
            settings=settings.autoscale,
            max_workers=settings.max_workers,
            max_depth=settings.max_depth,
        )
        self._gate = HandshakeGate(
            server_name=settings.name,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            max_body=settings.max_body,
            token=settings.token,
            on_accept=self._on_accept,
            timeout_s=settings.handshake_timeout_s,
            max_handshaking=self._handshake_cap(settings.max_handshaking),
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
            Opcode.JOB_OUTPUTS: self._on_job_outputs,
            Opcode.LOGS_SUBSCRIBE: self._on_logs_subscribe,
            Opcode.GC: self._on_gc,
            Opcode.STOP: self._on_stop,
            Opcode.SPAWN: self._on_spawn,
            Opcode.RETIRE: self._on_retire,
        }
        self._worker_handlers: dict[int, FrameMethod] = {
            Opcode.HEARTBEAT: self._on_heartbeat,
            Opcode.TASK_STATUS: self._on_task_status,
        }

    # ------------------------------------------------------------------ lifetime
    def _handshake_cap(self, wanted: int) -> int:
        """``max_handshaking``, lowered to half the open-file limit if that is less.

        Connections nobody has admitted must leave descriptors for the workers', the clients' and the WAL's.
        """
        if self._file_limit is None or wanted <= self._file_limit // 2:
            return wanted
        cap = max(1, self._file_limit // 2)
        log.warning("max_handshaking %d lowered to %d: the open-file limit is %d", wanted, cap, self._file_limit)
        return cap

    async def start(self) -> None:
        """Lock the workspace, recover from the WAL, then bind and listen.

        Raises:
            WorkspaceError: another master holds the workspace (``WorkspaceInUse``), or it cannot be made.
            OSError: the address is taken.
        """
        loop = asyncio.get_running_loop()
        settings = self.settings
        # read first: a certificate that cannot be used stops the master before it takes anything
        self._tls = server_context(settings.tls_cert, settings.tls_key) if settings.tls_cert is not None else None
        # before anything reads the WAL: a second master here would append a history of its own
        self._lock = WorkspaceLock.acquire(self.settings.workspace, "master")
        try:
            # bound first (a taken port fails fast), accepting only once the state is rebuilt
            server, self.logs = await self._bind(loop)
        except BaseException:
            self._lock.release()
            raise
        try:
            self._lock.record(server.sockets[0].getsockname()[1])
            effects = self.wal.recover(self.clock())
            self.logs.inherit(
                (job.id, job.attempts)
                for job in self.state.jobs.values()
                if job.state in ACTIVE_STATES and job.attempts
            )
            await self.wal.start()
        except BaseException:
            server.close()
            self.logs.close()
            self._lock.release()
            raise
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        if self._file_limit is not None:
            self._crowded_at = int((self._file_limit - _open_files()) * 0.8)
        self._apply(effects)
        await server.start_serving()
        self._schedule_health()
        self.scaling.start()
        log.info("listening on %s:%d%s", self.settings.host, self.port, " (TLS)" if self._tls is not None else "")
        perm_files = Path(self.settings.perm_files).absolute()
        if not perm_files.is_dir():
            log.warning("no folder %s: RUN jobs that name a file in it are refused until it exists", perm_files)

    async def _bind(self, loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Server | TlsServer, LogHub]:
        """The TCP server and the UDP log receiver on the same port number (port 0: a free one for both)."""
        settings = self.settings
        for tries_left in range(20, -1, -1):
            server: asyncio.Server | TlsServer
            if self._tls is None:
                server = await loop.create_server(self._make_peer, settings.host, settings.port, start_serving=False)
            else:
                server = await TlsServer.bind(
                    settings.host,
                    settings.port,
                    self._tls,
                    # a TLS handshake gets the deadline the TITAN_PROTO handshake after it has
                    timeout_s=settings.handshake_timeout_s,
                    make_protocol=self._make_peer,
                    on_failure=self._tls_refused,
                )
            hub = LogHub(
                self.log_store,
                self._is_current,
                token=settings.token,
                live_log_bytes=settings.live_log_bytes,
                follower_buffer_bytes=settings.follower_buffer_bytes,
                linger_s=settings.log_linger_s,
            )
            try:
                hub.bind(settings.host, server.sockets[0].getsockname()[1])
            except OSError:
                server.close()
                if settings.port or not tries_left:
                    raise
                continue  # the free TCP port's number is taken on UDP: pick another
            return server, hub
        raise AssertionError("unreachable")

    def _is_current(self, job_id: str, attempt: int) -> bool:
        job = self.state.jobs.get(job_id)
        return job is not None and job.attempts == attempt and job.state in ACTIVE_STATES

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
        self._gate.close()
        if self.logs is not None:
            self.logs.close()
        self.scaling.close()
        for handle in (self._timer, self._health):
            if handle is not None:
                handle.cancel()
        self._timer = self._health = None
        for waiters in self._waiters.values():
            for waiter in waiters:
                if waiter.timer is not None:
                    waiter.timer.cancel()
        self._waiters.clear()
        await self.wal.aclose()  # held frames go out once the log is synced, before the connections close
        await asyncio.gather(*(peer.aclose() for peer in list(self._peers)), return_exceptions=True)
        await asyncio.to_thread(self.log_store.close)  # the last attempts' logs reach the disk
        if self._server is not None:
            await self._server.wait_closed()
        if self._lock is not None:
            self._lock.release()  # last: everything this master writes is on disk
        self._stopped.set()

    def _on_wal_failure(self, exc: BaseException) -> None:
        """The log cannot be written: stop rather than acknowledge what would be lost."""
        self.failure = exc
        if not self._closing:
            self._fatal = asyncio.get_running_loop().create_task(self.aclose(), name="master-stop")

    async def wait_closed(self) -> None:
        """Return once the master has stopped (after :meth:`aclose`, or on its own after a WAL failure)."""
        await self._stopped.wait()

    async def __aenter__(self) -> Master:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ connections
    def _tls_refused(self, address: str, exc: BaseException) -> None:
        self._tls_refusals.warning("%s: TLS handshake failed: %s", address, describe_handshake_failure(exc))

    def _make_peer(self) -> Peer:
        return Peer(self._gate, max_body=self.settings.max_body, on_close=self._on_peer_closed, on_open=self._opened)

    def _opened(self, peer: Peer) -> None:
        """A connection is ours (for TLS: its handshake is done; a peer that never gets here holds nothing)."""
        self._peers.add(peer)
        self._gate.opened(peer)
        if self._crowded_at is not None and len(self._peers) > self._crowded_at:
            self._crowded.warning(
                "%d connections open (%d still in their handshake): close to the open-file limit of %d",
                len(self._peers),
                self._gate.handshaking,
                self._file_limit,
            )

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
        if self.logs is not None:
            self.logs.forget_peer(peer)
        if isinstance(context, _ClientSession):
            for waiter in list(context.waiters):  # a copy: dropping a waiter takes it out of the set
                self._drop_waiter(waiter)
        elif isinstance(context, str) and self._workers.get(context) is peer:
            del self._workers[context]
            self.payloads.disconnected(context)
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
        if any(status.outputs for status in msg.finished):
            msg = dataclasses.replace(
                msg, finished=[self._keep_outputs(msg.worker_id, status) for status in msg.finished]
            )
        stale, effects = self.state.worker_registered(msg, self.clock())
        for status in msg.finished:
            self._attempt_ended(msg.worker_id, status)
        peer.context = msg.worker_id
        self._workers[msg.worker_id] = peer
        self.payloads.registered(msg.worker_id, msg.payloads)
        # the answer goes first: tasks for this worker follow it on the wire
        self._reply(
            peer,
            frame,
            RegisterReply(
                worker_id=msg.worker_id, heartbeat_interval_s=self.settings.heartbeat_interval_s, stale=stale
            ),
        )
        log.info("%s registered (capacity %d, skills %s)", msg.name, msg.capacity, ",".join(msg.skills))
        self.scaling.registered(msg)
        self._apply(effects)

    def _on_heartbeat(self, peer: Peer, frame: Frame) -> None:
        beat = Heartbeat.from_wire(frame.body)
        self._apply(self.state.heartbeat(peer.context, self.clock(), leaving=beat.leaving))

    def _on_task_status(self, peer: Peer, frame: Frame) -> None:
        status = TaskStatus.from_wire(frame.body)
        if status.outputs:
            status = self._keep_outputs(peer.context, status)
        effects = self.state.task_status(peer.context, status, self.clock())
        if status.state != "RUNNING":
            self._attempt_ended(peer.context, status)  # before the effects: followers get the last bytes, then the end
        self._apply(effects)

    def _attempt_ended(self, worker_id: str, status: TaskStatus) -> None:
        """Keep an ended attempt's exact logs and result (even if the report itself was fenced).

        Only for an attempt that worker was given: a report about any other (another worker's, one that
        never existed) must not overwrite what the real one stored, nor the record of its payload.
        """
        if not self.state.ran_attempt(worker_id, status.job_id, status.attempt):
            return
        self.payloads.ended(status.job_id, status.attempt, failed=status.state == "FAILED")
        if self.logs is not None:
            self.logs.attempt_ended(status, self.state.jobs[status.job_id])

    def _keep_outputs(self, worker_id: str, status: TaskStatus) -> TaskStatus:
        """Store an attempt's output files; over the limit (or unwritable) fails the attempt.

        A report the core will fence has its files dropped unwritten: nothing would refer to them, and
        its job id need not even be a job's (a folder name that climbs out of the workspace).
        """
        if not self.state.is_current_report(worker_id, status):
            return dataclasses.replace(status, outputs={})
        problem = self.artifacts.problem(status.outputs)
        if problem is None:
            try:
                self.artifacts.save(status.job_id, status.attempt, status.outputs)
                return status
            except OSError as exc:
                problem = f"cannot keep the outputs: {exc.strerror or exc}"
        log.warning("%s attempt %d: %s", status.job_id, status.attempt, problem)
        if status.state == "COMPLETED":
            return dataclasses.replace(status, state="FAILED", error=problem, outputs={})
        return dataclasses.replace(status, outputs={})

    # ------------------------------------------------------------------ client frames
    def _on_client_frame(self, peer: Peer, frame: Frame) -> Awaitable[None] | None:
        """Hand a client request to its handler (the handlers are in ``client_handlers.py``)."""
        handler = self._client_handlers.get(frame.opcode)
        if handler is None or frame.is_reply:
            raise UnknownOpcode(f"opcode {frame.opcode:#04x} is not accepted from a client")
        return handler(peer, frame)  # an async handler (GC) is awaited by the peer

    # ------------------------------------------------------------------ effects
    def _reply(self, peer: Peer, request: Frame, message: Message) -> None:
        """Answer once every change made so far is durable (see the module docstring)."""
        self.wal.commit()
        self.wal.send(peer, encode_message(message, rid=request.rid, reply_to=Opcode(request.opcode)))

    def _apply(self, effects: list[Effect]) -> None:
        # TASK_STARTs first: they leave before their dispatch is durable in any case (send_early),
        # so the worker starts spawning while this step's record is encoded and appended. Every
        # other frame waits for that record, so it must be committed before they are sent.
        for effect in effects:
            if isinstance(effect, SendTask):
                self._send_task(effect.worker_id, effect.job)
        self.wal.commit()
        for effect in effects:
            if isinstance(effect, SendTask):
                continue
            if isinstance(effect, JobFinished):
                self._finished(effect.job)
            elif isinstance(effect, StopTask):
                peer = self._workers.get(effect.worker_id)
                if peer is not None:
                    stop = TaskStop(job_id=effect.job_id, attempt=effect.attempt, reason=effect.reason)
                    self.wal.send(peer, encode_message(stop))
            elif isinstance(effect, DrainWorker):
                log.info("draining %s: %s", effect.worker_id, effect.reason)
                self._send_to_worker(effect.worker_id, Drain(reason=effect.reason))
            elif isinstance(effect, CloseWorker):
                peer = self._workers.pop(effect.worker_id, None)
                if peer is not None:
                    log.warning("closing the connection of lost worker %s: %s", effect.worker_id, effect.reason)
                    peer.close()
            else:  # the core applies every other kind itself
                raise AssertionError(f"unexpected effect {effect!r}")
        self._arm_timer()

    def _send_to_worker(self, worker_id: str, message: Message) -> bool:
        """Send on the worker's connection once what came before is durable; False if it has none."""
        peer = self._workers.get(worker_id)
        if peer is None:
            return False
        self.wal.send(peer, encode_message(message))
        return True

    def _send_task(self, worker_id: str, job: Job) -> None:
        peer = self._workers.get(worker_id)
        if peer is None:  # gone between dispatch and now: the health check requeues it
            log.warning("%s scheduled on %s which has no connection", job.id, worker_id)
            return
        try:
            if job.is_service and job.run_data == WORKER_ARTIFACT:  # a child worker: bounded as a SPAWN is
                self.scaling.admit_deployed_child(worker_id, job.id)
            start = self._task_start(job)
        except (ValidationError, UsageError) as exc:
            # the file changed or vanished after submission, or a child worker would pass the spawn
            # bounds: this attempt fails, retries may follow
            report = TaskStatus(job_id=job.id, attempt=job.attempts, state="FAILED", error=str(exc))
            self._apply(self.state.task_status(worker_id, report, self.clock()))
            return
        # sent before the dispatch is durable: a restarted master fences an attempt it never heard of
        self.wal.send_early(peer, encode_message(start))

    def _inputs(self, job: Job, script_bytes: int) -> dict[str, bytes]:
        """The parents' kept outputs for a dependant's TASK_START."""
        if not job.deps:
            return {}
        jobs = self.state.jobs
        parents = [(dep, jobs[dep].attempts, jobs[dep].outputs) for dep in job.deps]
        if not any(names for _, _, names in parents):
            return {}
        return self.artifacts.inputs(job.id, parents, self.settings.max_body - _FRAME_HEADROOM - script_bytes)

    def _task_start(self, job: Job) -> TaskStart:
        if job.run_kind != "RUN" and not (job.is_service and job.run_data != WORKER_ARTIFACT):
            return TaskStart(
                job_id=job.id,
                attempt=job.attempts,
                kind=job.run_kind,
                data=job.run_data,
                args=list(job.run_args),
                timeout_s=job.timeout_s,
                slots=job.slots,
                inputs=self._inputs(job, 0),
            )
        if job.payload is not None:
            data, digest, mode, name = job.payload, hashlib.sha256(job.payload).hexdigest(), 0o755, job.run_data
        else:
            payload = self.files.load(job.run_data)
            data, digest, mode, name = payload.data, payload.sha256, payload.mode, payload.name
        assert job.worker is not None
        shipped: bytes | None = data
        if not self.payloads.must_ship(job.worker, job.id, job.attempts, digest, len(data)):
            shipped = None  # the worker has it in its cache: the hash is enough
        return TaskStart(
            job_id=job.id,
            attempt=job.attempts,
            kind=job.run_kind,
            data=job.run_data,
            args=list(job.run_args),
            timeout_s=job.timeout_s,
            payload=shipped,
            payload_name=name,
            payload_hash=digest,
            payload_mode=mode,
            slots=job.slots,
            inputs=self._inputs(job, len(data)),
            port=job.port if job.is_service else None,
        )

    def _finished(self, job: Job) -> None:
        if self.logs is not None:
            self.logs.job_final(job.id)
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
