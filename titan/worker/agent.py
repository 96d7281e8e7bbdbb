"""The worker: one connection to the master, and the attempts it runs.

Theory of operation
-------------------
A :class:`Worker` dials the master, says REGISTER (a request: the answer is a
:class:`~protocol.RegisterReply`) and then heartbeats on the same connection
while the master pushes TASK_START, TASK_STOP, DRAIN down to it. Attempts run
in a :class:`~titan.worker.engine.ProcessRunner` and do not care about the
connection: when it drops they keep running, and the worker dials again with
exponential backoff and jitter.

Nothing a worker finishes is lost while it is disconnected. A final
TASK_STATUS that cannot be sent goes to the *outbox*; the next REGISTER
carries the outbox as ``finished`` (and the attempts still running as
``running``), and those entries leave the outbox only once the master has
answered that REGISTER. Whatever finished while the REGISTER was in flight is
sent as ordinary TASK_STATUS right after.

Lifetime: ``start()`` launches the connection loop, ``aclose()`` ends it,
stops every attempt (SIGTERM, SIGKILL after the grace period) and waits for
them. ``simulate_crash()`` is the in-process stand-in for ``kill -9``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import Any, Final

from protocol import (
    Drain,
    Frame,
    Heartbeat,
    Message,
    Opcode,
    ProtocolError,
    Register,
    RegisterReply,
    SpawnWorker,
    TaskRef,
    TaskStart,
    TaskStatus,
    TaskStop,
    parse_request,
)
from titan.config import WorkerSettings
from titan.errors import AuthRefused, ConnectError, TitanError
from titan.net import Peer, dial
from titan.workspace import WorkspaceLock

from . import undelivered
from .children import ChildWorkers, PortTaken
from .command import LaunchError
from .deployments import Deployments, service_host
from .dirs import workspace_problem
from .engine import Attempt, ProcessRunner
from .leftovers import kill_leftovers
from .logship import LogShipper, read_logs
from .offer import fit_in_one_frame, machine_memory_mb, offered_skills

__all__ = ["Worker"]

log = logging.getLogger(__name__)

#: what a master may send down a worker connection
_FROM_MASTER: Final[Mapping[Opcode, type[Message]]] = {
    Opcode.TASK_START: TaskStart,
    Opcode.TASK_STOP: TaskStop,
    Opcode.DRAIN: Drain,
    Opcode.SPAWN_WORKER: SpawnWorker,
}
# Payloads above this are hashed and written in a thread, not on the event loop.
_INLINE_PAYLOAD_BYTES: Final = 256 * 1024
# room left in a final TASK_STATUS for its own fields besides the logs and the outputs
_STATUS_HEADROOM: Final = 64 * 1024


class Worker:
    """A Titan worker (DESIGN §1): registers, heartbeats, runs what the master sends.

    Attributes:
        worker_id: stable id (``settings.worker_id``, else ``<hostname>:<port>``).
        name: display name, ``[<port>]``.
        registered: set on each successful registration, cleared when the connection drops.
        drained: set once a DRAIN has been received and nothing is left to run or report.
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.port = settings.port or random.randint(20000, 60999)
        self.name = f"[{self.port}]"
        self.host = socket.gethostname()
        self.worker_id = settings.worker_id or f"{self.host}:{self.port}"
        # what jobs may reserve here (JobSpec.memory_mb): by default all of this machine's memory
        self.memory_mb = settings.memory_mb if settings.memory_mb is not None else machine_memory_mb()
        # made once (it reads the CA file): a bad file stops the worker before it starts
        self._tls_context = settings.tls.context() if settings.tls is not None else None
        self.registered = asyncio.Event()
        self.drained = asyncio.Event()
        # set with ``refusal`` when the master refuses our token before we were ever registered
        self.refused = asyncio.Event()
        self.refusal = ""
        self._ever_registered = False
        self.registrations = 0
        self._runner: ProcessRunner | None = None
        self._lock: WorkspaceLock | None = None  # taken in start(), held until aclose()
        self.shipper: LogShipper | None = None
        self.children: ChildWorkers | None = None  # child workers started for SPAWN_WORKER
        self.deployments: Deployments | None = None  # DEPLOY attempts: services and child workers
        self._storing: dict[str, asyncio.Future[str]] = {}  # payload hash -> its store in a thread
        self._peer: Peer | None = None  # the connection once registered on it
        self._outbox: list[TaskStatus] = []
        self._slots: dict[TaskRef, int] = {}
        self._running_reports: dict[TaskRef, asyncio.TimerHandle] = {}  # RUNNING reports not sent yet
        self._preparing: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._draining = False
        self._crashed = False
        self._closed = False
        self._random = random.Random()
        self._heartbeat_s = settings.heartbeat_interval_s
        # the master's heartbeat interval, once it has answered a REGISTER: reconnects never wait
        # longer, so a worker is back well within the master's timeout (about three intervals) and
        # what it finished meanwhile is applied, not rerun
        self._master_interval_s = float("inf")

    def __repr__(self) -> str:
        return f"<Worker {self.name} id={self.worker_id} running={len(self.running)}>"

    # ------------------------------------------------------------------ public surface
    @property
    def running(self) -> Mapping[TaskRef, Attempt]:
        """The attempts running here now, by task reference."""
        return self._runner.running if self._runner is not None else {}

    def running_pids(self) -> dict[TaskRef, int]:
        """Pid (= process group id) of each running attempt."""
        return {ref: attempt.pid for ref, attempt in self.running.items() if attempt.pid is not None}

    def running_refs(self) -> list[TaskRef]:
        """Every attempt this worker holds: tasks, then services."""
        tasks = list(self._runner.running) if self._runner is not None else []
        return [*tasks, *self.deployments] if self.deployments is not None else tasks

    @property
    def load(self) -> int:
        """Slots in use."""
        return sum(self._slots.values())

    @property
    def outbox(self) -> list[TaskStatus]:
        """Final results not yet delivered to the master (a copy)."""
        return list(self._outbox)

    async def start(self) -> None:
        """Start the connection loop and return at once (await ``registered`` to know it is up).

        Raises:
            ValueError: the workspace is a master's (see :func:`~titan.worker.dirs.workspace_problem`).
            WorkspaceError: another worker holds the workspace (``WorkspaceInUse``), or it cannot be made.
        """
        if self._main is not None:
            raise RuntimeError(f"worker {self.name} was already started")
        problem = workspace_problem(self.settings.workspace)
        if problem:
            raise ValueError(problem)
        # before the attempt folders are adopted: two workers here would recycle each other's
        self._lock = WorkspaceLock.acquire(self.settings.workspace, "worker", port=self.port)
        try:
            # with the lock held, whatever still runs in jobs/ was left by a run of ours that was killed
            killed = kill_leftovers(self.settings.workspace / "jobs")
            if killed:
                log.warning(
                    "%s killed %d process group(s) a previous run left in its attempt folders", self.name, killed
                )
            kept = undelivered.load(self.settings.workspace)
            if kept:
                log.info("%s sends %d result(s) its previous run could not deliver", self.name, len(kept))
                self._outbox = kept + self._outbox
            await self._start()
        except BaseException:
            self._lock.release()
            raise

    async def _start(self) -> None:
        """The runner, the log shipper, the service host, then the connection loop."""
        extra = self.settings.extra_env
        self._runner = ProcessRunner(
            self.settings.workspace,
            worker_id=self.worker_id,
            base_env={**os.environ, **extra} if extra else None,
            kill_grace_s=self.settings.kill_grace_s,
            max_output_bytes=self.settings.max_output_bytes,
            keep_attempts_s=self.settings.keep_attempts_s,
        )
        settings = self.settings
        self.shipper = LogShipper(
            settings.master_host,
            settings.master_port,
            token=settings.token,
            interval_s=settings.log_interval_s,
            busy_interval_s=settings.log_busy_interval_s,
            busy_bytes=settings.log_busy_bytes,
            datagram_bytes=settings.log_datagram_bytes,
            local_datagram_bytes=settings.log_local_datagram_bytes,
            backlog_bytes=settings.log_backlog_bytes,
            local_only=settings.tls is not None and not settings.live_logs_in_clear,
        )
        await self.shipper.start()
        self.children, self.deployments = service_host(
            settings,
            self.worker_id,
            base_env={**os.environ, **extra},
            payloads=self._runner.payloads,
            commands=self._runner.commands,
            skills=list(settings.skills),
            report=self._report,
            finished=self._deployment_ended,
        )
        self._main = asyncio.create_task(self._connection_loop(), name=f"titan-worker-{self.port}")

    async def aclose(self) -> None:
        """Say it is leaving, stop and hand back every attempt, then stop heartbeats and the connection.

        The leaving HEARTBEAT goes first, so the master sends nothing new meanwhile. The attempts are
        stopped while the connection is still up: their final reports say the worker handed them
        back, and the master requeues those jobs at once (their attempt not counted) instead of
        waiting a heartbeat timeout to find the worker lost. What cannot be delivered (the master
        is away) is kept on disk for the next run (``undelivered.py``).
        """
        if self._closed:
            return
        self._closed = True
        self._draining = True
        self._cancel_running_reports()
        if self._peer is not None:  # first of all, so that the master sends nothing new meanwhile
            self._peer.send(Heartbeat(load=self.load, running=self.running_refs(), leaving=True))
        # services end with the worker; children the master is draining get time to leave first
        patience = self.settings.child_drain_timeout_s if self.drained.is_set() else 0.0
        if self.deployments is not None:
            await self.deployments.aclose("worker shutting down", patience_s=patience, hand_back=True)
        if self.children is not None:
            await self.children.aclose("worker shutting down", patience_s=patience)
        if self._runner is not None:
            await self._runner.aclose(hand_back=True)
        await self._cancel_background()
        self._keep_undelivered()
        if self.shipper is not None:
            self.shipper.close()
        self.registered.clear()
        if self._lock is not None:
            self._lock.release()  # last: nothing of this worker touches the workspace any more

    def _keep_undelivered(self) -> None:
        """What the master never got (it is away) waits on disk for the next start; see undelivered.py."""
        try:
            if self._outbox:
                path = undelivered.save(self.settings.workspace, self._outbox)
                log.warning(
                    "%s could not deliver %d result(s) to the master; kept in %s for its next start",
                    self.name,
                    len(self._outbox),
                    path,
                )
            else:
                undelivered.forget(self.settings.workspace)
        except OSError as exc:
            log.error("%s cannot keep %d undelivered result(s): %s", self.name, len(self._outbox), exc)

    def simulate_crash(self) -> None:
        """Die like ``kill -9``: abort the connection, SIGKILL every group, report nothing."""
        self._crashed = True
        self.registered.clear()
        self._cancel_running_reports()
        if self._peer is not None:
            self._peer.abort()
        if self._main is not None:
            self._main.cancel()
        for task in self._preparing:
            task.cancel()
        if self._runner is not None:
            self._runner.kill_all()
            self._runner.stop_sweeping()
        # in process there is no "surviving the parent": children and services go too
        for owner in (self.deployments, self.children):
            if owner is not None:
                owner.kill_all()
        if self.shipper is not None:
            self.shipper.close()
        if self._lock is not None:
            self._lock.release()  # the kernel's part in a real kill -9

    # ------------------------------------------------------------------ connection loop
    async def _connection_loop(self) -> None:
        failures = 0
        while True:
            try:
                peer = await self._dial()
            except AuthRefused as exc:
                if not self._ever_registered:
                    # a configuration error at start-up: say so and stop, as a mistyped flag would
                    self.refusal = f"{exc} (master {self.settings.master_host}:{self.settings.master_port})"
                    self.refused.set()  # whoever runs the worker reports it
                    return
                failures += 1  # the token changed under a running worker: keep its jobs, keep trying
                delay = self._backoff_s(failures)
                log.error("%s %s; retry %d in %.2fs", self.name, exc, failures, delay)
                await asyncio.sleep(delay)
                continue
            except ConnectError as exc:
                failures += 1
                delay = self._backoff_s(failures)
                log.log(_retry_level(failures), "%s %s; retry %d in %.2fs", self.name, exc, failures, delay)
                await asyncio.sleep(delay)
                continue
            try:
                await self._register(peer)
            except (TitanError, ProtocolError) as exc:
                failures += 1
                delay = self._backoff_s(failures)
                log.log(
                    _retry_level(failures), "%s REGISTER failed: %s; retry %d in %.2fs", self.name, exc, failures, delay
                )
            else:
                failures = 0
                self._ever_registered = True
                delay = self._backoff_s(1)
                await self._serve(peer)
                log.warning("%s lost the connection to the master; reconnecting in %.2fs", self.name, delay)
            finally:
                self._peer = None
                self.registered.clear()
                await peer.aclose()
            await asyncio.sleep(delay)

    async def _dial(self) -> Peer:
        settings = self.settings
        handshake = asyncio.ensure_future(
            dial(
                settings.master_host,
                settings.master_port,
                role="worker",
                name=self.name,
                token=settings.token,
                on_frame=self._on_frame,
                max_body=settings.max_body,
                timeout_s=settings.connect_timeout_s,
                ssl_context=self._tls_context,
            )
        )
        try:
            peer, _ = await asyncio.shield(handshake)
        except asyncio.CancelledError:
            # dial() cleans up after its own errors, not after cancellation: let it
            # finish (bounded by its timeout) so no half-open transport is leaked.
            try:
                peer, _ = await handshake
            except Exception:
                pass
            else:
                await peer.aclose()
            raise
        return peer

    async def _register(self, peer: Peer) -> None:
        settings = self.settings
        assert self._runner is not None
        finished, deferred = fit_in_one_frame(self._outbox, settings.max_body // 2)
        message = Register(
            worker_id=self.worker_id,
            name=self.name,
            host=self.host,
            port=self.port,
            capacity=settings.capacity,
            skills=offered_skills(self.settings.skills, self._runner.commands),
            parent=settings.parent,
            pid=os.getpid(),
            # reports too big to ride along are sent right after the answer: until then they count as running
            running=[*self.running_refs(), *(TaskRef(status.job_id, status.attempt) for status in deferred)],
            finished=finished,
            payloads=self._runner.payloads.hashes(),
            spawn_id=settings.spawn_id,
            memory_mb=self.memory_mb,
            host_memory_mb=machine_memory_mb(),
            sent_at=time.time(),
        )
        reply = await peer.request(message, timeout_s=settings.connect_timeout_s)
        if not isinstance(reply, RegisterReply):
            raise ConnectError(f"unexpected answer to REGISTER: {type(reply).__name__}")
        delivered = {id(status) for status in finished}
        self._outbox = [status for status in self._outbox if id(status) not in delivered]
        if not self._outbox:  # what a previous run kept has gone with this REGISTER
            undelivered.forget(self.settings.workspace)
        self._peer = peer
        self.registrations += 1
        self.registered.set()
        log.info(
            "%s registered with %s:%d as %s (%d running, %d finished reported)",
            self.name,
            settings.master_host,
            settings.master_port,
            self.worker_id,
            len(message.running),
            len(finished),
        )
        for ref in reply.stale:
            if self._stop(ref, "stale attempt"):
                log.info("%s %s#%d is stale; stopping it", self.name, ref.job_id, ref.attempt)
        self._flush_outbox()
        if self.deployments is not None:
            for status in self.deployments.up_reports():
                self._report(status)
        self._master_interval_s = reply.heartbeat_interval_s or float("inf")
        self._heartbeat_s = min(settings.heartbeat_interval_s, self._master_interval_s)

    async def _serve(self, peer: Peer) -> None:
        """Heartbeat until the connection closes."""
        while peer.is_open:
            try:
                async with asyncio.timeout(self._heartbeat_s):
                    await peer.wait_closed()
            except TimeoutError:
                peer.send(Heartbeat(load=self.load, running=self.running_refs()))

    def _backoff_s(self, failures: int) -> float:
        settings = self.settings
        longest = min(settings.reconnect_max_s, self._master_interval_s)
        ceiling = min(longest, settings.reconnect_initial_s * 2.0 ** min(failures - 1, 30))
        # "equal jitter": never less than half the step, so retries stay spread but bounded
        return ceiling / 2 + self._random.uniform(0, ceiling / 2)

    async def _cancel_background(self) -> None:
        tasks = [t for t in (self._main, *self._preparing) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ frames from the master
    def _on_frame(self, peer: Peer, frame: Frame) -> None:
        message = parse_request(frame, _FROM_MASTER)
        if self._crashed:
            return
        if isinstance(message, TaskStart):
            self._on_task_start(message)
        elif isinstance(message, TaskStop):
            self._on_task_stop(message)
        elif isinstance(message, Drain):
            self._on_drain(message)
        elif isinstance(message, SpawnWorker):
            self._on_spawn(message)

    def _on_task_start(self, task: TaskStart) -> None:
        ref = TaskRef(task.job_id, task.attempt)
        if self._closed:  # sent before the master read our leaving HEARTBEAT
            self._send_final(_handed_back(task))
            return
        if self._draining:
            self._send_final(TaskStatus(task.job_id, task.attempt, "FAILED", error="draining"))
            return
        if ref in self.running or (self.deployments is not None and ref in self.deployments):
            log.info(
                "%s %s#%d is already running; ignoring the repeated TASK_START", self.name, ref.job_id, ref.attempt
            )
            return
        if task.payload is not None and len(task.payload) > _INLINE_PAYLOAD_BYTES:
            self._spawn_background(self._store_then_launch(task))
        elif task.payload is None and task.payload_hash in self._storing:
            # sent by hash only, right behind the TASK_START that ships it: wait for that store
            self._spawn_background(self._launch_after_store(task, self._storing[task.payload_hash]))
        else:
            self._launch(task)

    async def _store_then_launch(self, task: TaskStart) -> None:
        assert self._runner is not None and task.payload is not None
        payloads = self._runner.payloads
        name = task.payload_name or task.data.rsplit("/", 1)[-1]
        store = asyncio.ensure_future(
            asyncio.to_thread(payloads.store, task.payload, name, task.payload_hash, task.payload_mode)
        )
        if task.payload_hash:
            self._storing[task.payload_hash] = store
        try:
            path = await asyncio.shield(store)
        except LaunchError as exc:
            self._send_final(TaskStatus(task.job_id, task.attempt, "FAILED", error=str(exc)))
            return
        finally:
            if self._storing.get(task.payload_hash) is store:
                del self._storing[task.payload_hash]
        # the cache directory is named by the hash: run from the cache without hashing again
        self._launch(replace(task, payload=None, payload_name=name, payload_hash=path.rsplit("/", 2)[-2]))

    async def _launch_after_store(self, task: TaskStart, store: asyncio.Future[str]) -> None:
        try:
            await asyncio.shield(store)
        except LaunchError:
            pass  # the launch below fails with "not in this worker's cache"
        self._launch(task)

    def _launch(self, task: TaskStart) -> None:
        assert self._runner is not None
        if self._crashed:
            return
        if self._closed:  # a task accepted before a DRAIN still runs; one racing a shutdown goes back
            self._send_final(_handed_back(task))
            return
        if task.kind == "DEPLOY":
            self._deploy(task)
            return
        try:
            attempt = self._runner.start(task)
        except Exception as exc:  # a bug of ours, not the job's: still end the attempt, never leave it SCHEDULED
            log.exception("%s %s#%d could not be started", self.name, task.job_id, task.attempt)
            error = f"the worker could not start it: {type(exc).__name__}: {exc}"
            self._send_final(TaskStatus(task.job_id, task.attempt, "FAILED", error=error))
            return
        if attempt.result.done():  # it could not start: the result is the error
            self._on_attempt_done(attempt)
            return
        self._slots[attempt.ref] = task.slots
        if self.shipper is not None:
            self.shipper.watch(attempt.ref, attempt.directory)
        # Scheduled even with no connection in hand: a TASK_START can arrive in the same read as the
        # REGISTER answer, before _register has taken the connection; the report is due later. If
        # the connection is down by then, the next REGISTER lists the attempt as running instead.
        delay = self.settings.running_report_delay_s
        if delay <= 0 and self._peer is not None:
            self._report_running(attempt)
        else:
            self._running_reports[attempt.ref] = asyncio.get_running_loop().call_later(
                delay, self._report_running, attempt
            )
        log.debug("%s %s#%d started as pid %s", self.name, task.job_id, task.attempt, attempt.pid)
        attempt.on_done = self._on_attempt_done

    def _cancel_running_reports(self) -> None:
        for timer in self._running_reports.values():
            timer.cancel()
        self._running_reports.clear()

    def _report_running(self, attempt: Attempt) -> None:
        """RUNNING, built only now: most short jobs end before their report is due, and never need it."""
        self._running_reports.pop(attempt.ref, None)
        if self._peer is not None:
            self._peer.send(
                TaskStatus(attempt.ref.job_id, attempt.ref.attempt, "RUNNING", started_at=attempt.started_at)
            )

    def _on_attempt_done(self, attempt: Attempt) -> None:
        self._slots.pop(attempt.ref, None)
        unsent = self._running_reports.pop(attempt.ref, None)
        if unsent is not None:
            unsent.cancel()  # ended within the delay: its final report says it all
        if self._crashed:
            return
        result = attempt.result.result()
        if result.handed_back:
            log.info("%s %s#%d handed back (%s)", self.name, result.job_id, result.attempt, result.error)
        elif result.error:  # successes are the bulk at high rates: only failures at INFO
            log.info("%s %s#%d FAILED (%s)", self.name, result.job_id, result.attempt, result.error)
        else:
            log.debug("%s %s#%d COMPLETED", self.name, result.job_id, result.attempt)
        final = self._with_logs(attempt.ref, attempt.directory, result.to_status())
        self._send_final(final)
        if self._runner is not None:
            # the report holds the logs and outputs now; over the size limit the files are the only whole copy
            self._runner.release(attempt, keep=final.truncated)
        self._check_drained()

    def _with_logs(self, ref: TaskRef, directory: str, status: TaskStatus) -> TaskStatus:
        """The final report with the attempt's exact logs (tails, within what one frame can carry)."""
        datagrams = self.shipper.finish(ref) if self.shipper is not None else 0
        settings = self.settings
        room = settings.max_body - _STATUS_HEADROOM - sum(len(data) for data in status.outputs.values())
        capture = read_logs(directory, max(0, min(settings.max_log_bytes, room // 2)), datagrams)
        return replace(
            status,
            stdout=capture.stdout,
            stderr=capture.stderr,
            truncated=status.truncated or capture.truncated,
            log_datagrams=capture.datagrams,
        )

    def _on_task_stop(self, stop: TaskStop) -> None:
        if not self._stop(TaskRef(stop.job_id, stop.attempt), stop.reason or "stopped by the master"):
            log.debug("%s TASK_STOP for %s#%d, which is not running here", self.name, stop.job_id, stop.attempt)

    def _stop(self, ref: TaskRef, reason: str) -> bool:
        assert self._runner is not None
        if self.deployments is not None and self.deployments.stop(ref, reason):
            return True
        return self._runner.stop(ref.job_id, ref.attempt, reason)

    def _on_drain(self, drain: Drain) -> None:
        log.info("%s draining%s", self.name, f": {drain.reason}" if drain.reason else "")
        self._draining = True
        if self.deployments is not None:
            self.deployments.stop_all("worker draining")  # services never finish on their own: hand them back
        self._check_drained()

    # ------------------------------------------------------------------ services and children
    def _deploy(self, task: TaskStart) -> None:
        assert self.deployments is not None
        ref = TaskRef(task.job_id, task.attempt)
        self._slots[ref] = task.slots
        self.deployments.start(task)
        deployed = self.deployments.get(ref)
        if deployed is not None and self.shipper is not None and deployed.child_port is None:
            self.shipper.watch(ref, deployed.service.directory)

    def _report(self, status: TaskStatus) -> None:
        """A service's progress (started, up, restarting); if lost, the next REGISTER lists it as running."""
        if self._peer is not None and not self._crashed:
            self._peer.send(status)

    def _deployment_ended(self, ref: TaskRef, directory: str, status: TaskStatus) -> None:
        self._slots.pop(ref, None)
        if self._crashed:
            return
        log.info("%s %s#%d service ended: %s", self.name, ref.job_id, ref.attempt, status.error or status.state)
        self._send_final(self._with_logs(ref, directory, status) if directory else status)
        self._check_drained()

    def _on_spawn(self, spawn: SpawnWorker) -> None:
        if self.children is None or self._draining:
            log.warning("%s refusing SPAWN_WORKER on port %d: draining", self.name, spawn.port)
            return
        try:
            self.children.spawn(spawn.port, spawn_id=spawn.spawn_id or spawn.job_id or "", capacity=spawn.capacity)
        except (PortTaken, OSError) as exc:
            log.warning("%s cannot start a child worker on port %d: %s", self.name, spawn.port, exc)

    # ------------------------------------------------------------------ reporting
    def _send_final(self, status: TaskStatus) -> None:
        peer = self._peer
        if peer is None or not peer.send(status):
            self._outbox.append(status)

    def _flush_outbox(self) -> None:
        pending, self._outbox = self._outbox, []
        for status in pending:
            self._send_final(status)
        self._check_drained()

    def _check_drained(self) -> None:
        if self._draining and not self._closed and not self.running and not self._preparing and not self._outbox:
            if self.deployments is None or not len(self.deployments):
                self.drained.set()

    def _spawn_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._preparing.add(task)

        def forget(done: asyncio.Task[None]) -> None:
            self._preparing.discard(done)
            self._check_drained()

        task.add_done_callback(forget)


def _handed_back(task: TaskStart) -> TaskStatus:
    """The report of a task the worker received while shutting down and never started."""
    return TaskStatus(task.job_id, task.attempt, "FAILED", error="stopped: worker shutting down", handed_back=True)


def _retry_level(failures: int) -> int:
    """WARNING for retries 1, 2, 4, 8, ... and DEBUG between: a master away for an hour is a dozen
    lines in the worker's log, not one per backoff."""
    return logging.WARNING if failures & (failures - 1) == 0 else logging.DEBUG
