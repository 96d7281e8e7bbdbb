"""A stand-in master for testing code that talks to Titan through the client.

:class:`FakeMaster` listens on a real TCP socket (``127.0.0.1:0`` by default),
runs the real handshake (:class:`~titan.net.HandshakeGate`) and answers client
requests from a small in-memory job table. Tests steer it by replacing a
request's handler (:meth:`FakeMaster.on`), by changing job states
(:meth:`FakeMaster.set_state`, which also releases pending WAITs) or by
dropping every connection (:meth:`FakeMaster.drop_clients`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

from protocol import (
    DEFAULT_MAX_BODY,
    REQUESTS,
    AttemptInfo,
    Cancel,
    Frame,
    Hello,
    JobInfo,
    JobListReply,
    JobReply,
    JobSpec,
    JobStatus,
    ListJobs,
    LogData,
    LogsSubscribe,
    LogsSubscribed,
    Message,
    Opcode,
    Retire,
    RetireReply,
    Retry,
    Spawn,
    SpawnReply,
    Stats,
    StatsReply,
    Stop,
    Submit,
    SubmitDag,
    SubmitDagReply,
    SubmitReply,
    Wait,
    WorkerInfo,
    parse_request,
)
from titan.errors import RemoteError, UnknownJob
from titan.net import HandshakeGate, Peer

from ._client import FINAL_STATES

__all__ = ["FakeMaster", "Handler", "worker_info"]

M = TypeVar("M", bound=Message)
Stream = Literal["stdout", "stderr"]
Handler = Callable[[Any], "Message | Awaitable[Message]"]

_CLIENT_REQUESTS: Mapping[Opcode, type[Message]] = {
    op: REQUESTS[op]
    for op in (
        Opcode.SUBMIT,
        Opcode.SUBMIT_DAG,
        Opcode.JOB_STATUS,
        Opcode.LIST_JOBS,
        Opcode.STATS,
        Opcode.CANCEL,
        Opcode.RETRY,
        Opcode.WAIT,
        Opcode.LOGS_SUBSCRIBE,
        Opcode.STOP,
        Opcode.SPAWN,
        Opcode.RETIRE,
    )
}


def worker_info(
    port: int,
    *,
    load: int = 0,
    capacity: int = 4,
    parent: str | None = None,
    health: str = "HEALTHY",
    skills: Sequence[str] = ("GENERAL",),
    services: Sequence[str] = (),
    tasks: Sequence[str] = (),
) -> WorkerInfo:
    """A :class:`WorkerInfo` with id ``w-<port>`` and plausible defaults."""
    return WorkerInfo(
        id=f"w-{port}",
        name=f"worker-{port}",
        host="127.0.0.1",
        port=port,
        load=load,
        capacity=capacity,
        skills=list(skills),
        health=health,
        parent=parent,
        services=list(services),
        tasks=list(tasks),
    )


class FakeMaster:
    """A canned-reply master on a real socket; see the module docstring."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.jobs: dict[str, JobInfo] = {}
        self.workers: list[WorkerInfo] = []
        #: stored logs served to LOGS_SUBSCRIBE; a job without one gets an UNKNOWN_OPCODE error
        self.logs: dict[str, list[tuple[Stream, bytes]]] = {}
        #: STATS ``extra`` (a real master's has the WAL, recovery, live-log and autoscaler figures)
        self.stats_extra: dict[str, Any] = {}
        #: every request received, in order
        self.received: list[Message] = []
        self.peers: set[Peer] = set()
        self._handlers: dict[type[Message], Handler] = {
            Submit: self._submit,
            SubmitDag: self._submit_dag,
            JobStatus: self._status,
            ListJobs: self._list,
            Stats: self._stats,
            Cancel: self._cancel,
            Retry: self._retry,
            Wait: self._wait,
            LogsSubscribe: self._logs,
            Stop: self._stop,
            Spawn: self._spawn,
            Retire: self._retire,
        }
        self._ids = itertools.count(1)
        self._dag_parts: list[JobSpec] = []
        self._changed = asyncio.Event()
        self._arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._gate = HandshakeGate(
            server_name="fake-master",
            heartbeat_interval_s=1.0,
            max_body=DEFAULT_MAX_BODY,
            token=token,
            on_accept=self._accept,
        )

    # ------------------------------------------------------------------ lifetime
    async def start(self) -> FakeMaster:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Peer(self._gate, on_close=self._forget, on_open=self._gate.opened), self.host, self.port
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop_clients()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeMaster:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def drop_clients(self) -> None:
        """Close every connection, as a master that crashed would."""
        for peer in list(self.peers):
            await peer.aclose()

    def _accept(self, peer: Peer, hello: Hello) -> None:
        peer.on_frame = self._on_frame
        self.peers.add(peer)

    def _forget(self, peer: Peer) -> None:
        self._gate.forget(peer)
        self.peers.discard(peer)

    # ------------------------------------------------------------------ steering
    def on(self, request_type: type[Message], handler: Handler) -> None:
        """Answer ``request_type`` with ``handler(request)`` (a reply, or an awaitable of one).

        A handler that raises a ``TitanError`` is answered with an ERROR of its code.
        """
        self._handlers[request_type] = handler

    async def request_of(self, request_type: type[M]) -> M:
        """The first request of ``request_type`` received, waiting for it if need be."""
        while True:
            for request in self.received:
                if isinstance(request, request_type):
                    return request
            self._arrived.clear()
            await self._arrived.wait()

    def add_job(self, job_id: str, job_type: str = "RUN", data: str = "calc.py", **fields: Any) -> JobInfo:
        """Put a job in the table (state PENDING unless given)."""
        values: dict[str, Any] = {
            "state": "PENDING",
            "priority": 1,
            "attempts": 0,
            "max_attempts": 3,
            "submitted_at": time.time(),
        }
        values.update(fields)
        values.setdefault("tries", values["attempts"])  # no RETRY, no skipped numbers
        job = JobInfo(id=job_id, type=job_type, data=data, **values)
        self.jobs[job_id] = job
        self._changed.set()
        return job

    def set_state(self, job_id: str, state: str, **fields: Any) -> JobInfo:
        """Change a job (and wake WAITs that may now be answered)."""
        job = dataclasses.replace(self.jobs[job_id], state=state, **fields)
        self.jobs[job_id] = job
        self._changed.set()
        return job

    # ------------------------------------------------------------------ dispatch
    async def _on_frame(self, peer: Peer, frame: Frame) -> None:
        request = parse_request(frame, _CLIENT_REQUESTS)
        self.received.append(request)
        self._arrived.set()
        result = self._handlers[type(request)](request)
        reply = await result if inspect.isawaitable(result) else result
        peer.reply(frame, reply)
        if isinstance(request, LogsSubscribe):
            for stream, data in self.logs.get(request.job_id, []):
                peer.send(LogData(job_id=request.job_id, attempt=1, stream=stream, data=data))
            peer.send(LogData(job_id=request.job_id, attempt=1, stream="stdout", data=b"", eof=True))

    def _job(self, job_id: str) -> JobInfo:
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        return job

    def _store(self, spec: JobSpec, job_id: str, dag: str | None = None) -> None:
        state = "BLOCKED" if spec.deps else "DELAYED" if spec.delay_ms else "PENDING"
        self.add_job(
            job_id,
            spec.type,
            spec.data,
            state=state,
            priority=spec.priority,
            max_attempts=spec.max_attempts,
            deps=list(spec.deps),
            delay_ms=spec.delay_ms,
            skills=list(spec.skills),
            dag=dag,
        )

    def _submit(self, request: Submit) -> SubmitReply:
        job_id = request.job.id or f"TSK-{next(self._ids):08x}"
        self._store(request.job, job_id)
        return SubmitReply(job_id=job_id)

    def _submit_dag(self, request: SubmitDag) -> SubmitDagReply:
        specs = request.jobs
        if request.parts > 1:  # kept until the last part, as the master does (no checks of order here)
            if request.part == 0:
                self._dag_parts = []
            self._dag_parts.extend(specs)
            if request.part < request.parts - 1:
                return SubmitDagReply(job_ids=[])
            specs, self._dag_parts = self._dag_parts, []
        ids = [spec.id or f"TSK-{next(self._ids):08x}" for spec in specs]
        dag = f"DAG-{next(self._ids):08x}"
        for spec, job_id in zip(specs, ids, strict=True):
            self._store(spec, job_id, dag)
        return SubmitDagReply(job_ids=ids, dag_id=dag)

    def _status(self, request: JobStatus) -> JobReply:
        return JobReply(job=self._job(request.job_id))

    def _list(self, request: ListJobs) -> JobListReply:
        jobs = [
            job
            for job in self.jobs.values()
            if (request.state is None or job.state == request.state)
            and (request.dag is None or request.dag in (job.dag, job.id))
        ]
        if request.dag is not None and jobs and jobs[0].dag is not None:
            jobs = [job for job in self.jobs.values() if job.dag == jobs[0].dag]
        return JobListReply(jobs=jobs[request.offset : request.offset + request.limit])

    def _stats(self, request: Stats) -> StatsReply:
        count = {state: 0 for state in ("PENDING", "DELAYED", "BLOCKED", "DEAD", "RUNNING", "SCHEDULED")}
        for job in self.jobs.values():
            if job.state in count:
                count[job.state] += 1
        states = [job.state for job in self.jobs.values()]
        return StatsReply(
            queued=count["PENDING"],
            delayed=count["DELAYED"],
            blocked=count["BLOCKED"],
            dead=count["DEAD"],
            running=count["RUNNING"],
            scheduled=count["SCHEDULED"],
            completed=states.count("COMPLETED"),
            failed=0,
            cancelled=states.count("CANCELLED"),
            workers=list(self.workers),
            extra=dict(self.stats_extra),
        )

    def _cancel(self, request: Cancel) -> JobReply:
        job = self._job(request.job_id)
        if job.state in FINAL_STATES:
            raise RemoteError("INVALID_TRANSITION", f"nothing to cancel: job '{job.id}' is already {job.state}")
        return JobReply(job=self.set_state(job.id, "CANCELLED"))

    def _retry(self, request: Retry) -> JobReply:
        job = self._job(request.job_id)
        if job.state != "DEAD":
            raise RemoteError("INVALID_TRANSITION", f"job '{job.id}' is {job.state}, not in the dead-letter queue")
        return JobReply(job=self.set_state(job.id, "PENDING", attempts=0))

    async def _wait(self, request: Wait) -> JobListReply:
        for job_id in request.job_ids:
            self._job(job_id)
        try:
            async with asyncio.timeout(request.timeout_s):
                while not all(self.jobs[i].state in FINAL_STATES for i in request.job_ids):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return JobListReply(jobs=[self.jobs[i] for i in request.job_ids], timed_out=True)
        return JobListReply(jobs=[self.jobs[i] for i in request.job_ids])

    def _stop(self, request: Stop) -> JobReply:
        job = self._job(request.job_id)
        if job.type != "DEPLOY" or job.state != "RUNNING":
            raise RemoteError("INVALID_JOB", f"job '{job.id}' is not a RUNNING service")
        return JobReply(job=self.set_state(job.id, "STOPPED"))

    def _spawn(self, request: Spawn) -> SpawnReply:
        parent = self._worker(request.worker) if request.worker is not None else self.workers[0]
        return SpawnReply(parent=parent.id, spawn_id=f"SPAWN-{next(self._ids)}", port=request.port)

    def _retire(self, request: Retire) -> RetireReply:
        worker = self._worker(request.worker)
        return RetireReply(workers=[worker.id, *(w.id for w in self.workers if w.parent == worker.id)])

    def _worker(self, ref: str) -> WorkerInfo:
        for worker in self.workers:
            if ref in (worker.id, str(worker.port), f"[{worker.port}]"):
                return worker
        raise RemoteError("USAGE", f"no worker '{ref}'")

    def _logs(self, request: LogsSubscribe) -> LogsSubscribed:
        job = self._job(request.job_id)
        if request.job_id not in self.logs:
            raise RemoteError("UNKNOWN_OPCODE", "opcode LOGS_SUBSCRIBE is not accepted here")
        if not job.runs:  # a job with a log has run: as a real master would, it has an attempt on record
            self.jobs[job.id] = dataclasses.replace(
                job, attempts=max(1, job.attempts), runs=[AttemptInfo(attempt=1, state=job.state)]
            )
        return LogsSubscribed(job_id=request.job_id, attempt=1)
