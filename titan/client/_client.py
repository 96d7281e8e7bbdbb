"""The async client: one connection to a master, many requests in flight.

Every call is one request on the shared :class:`~titan.net.Peer`, which matches
answers to requests by ``rid``; concurrent calls on one client are therefore
safe and do not wait for each other. Errors surface as Titan's own types:
:class:`~titan.errors.RemoteError` (the master said no, with its code),
:class:`~titan.errors.PeerClosed` (the connection dropped),
:class:`~titan.errors.RequestTimeout` and :class:`~titan.errors.ConnectError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Final, TypeVar

from protocol import (
    Cancel,
    Frame,
    Gc,
    GcReply,
    JobInfo,
    JobListReply,
    JobOutputs,
    JobOutputsReply,
    JobReply,
    JobSpec,
    JobStatus,
    ListJobs,
    LogData,
    LogsSubscribe,
    LogsSubscribed,
    Message,
    Opcode,
    ProtocolError,
    Retire,
    RetireReply,
    Retry,
    SchemaError,
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
    Welcome,
)
from titan.config import ClientSettings, parse_address
from titan.errors import PeerClosed, RemoteError, RequestTimeout, UsageError
from titan.net import Peer, dial
from titan.runtime import paused_gc

__all__ = ["DAG_PART_JOBS", "FINAL_STATES", "LIST_PAGE", "LogStream", "TitanClient", "WaitTimeout"]

# a DAG with more jobs than this is sent in parts of this many (see TitanClient.submit_dag_info)
DAG_PART_JOBS: Final = 10_000

#: states a job never leaves (DESIGN §3)
FINAL_STATES: Final = frozenset({"COMPLETED", "DEAD", "CANCELLED", "SKIPPED", "STOPPED"})
#: jobs asked for in one LIST_JOBS or WAIT: an answer of a thousand jobs stays far under a frame's 16 MiB
LIST_PAGE: Final = 1000
_NAMED_PENDING: Final = 10  # ids a WaitTimeout's message names; ``pending`` has them all

R = TypeVar("R", bound=Message)


class _Default(enum.Enum):
    TIMEOUT = enum.auto()


# "use settings.request_timeout_s", distinct from None ("no limit")
_DEFAULT_TIMEOUT: Final = _Default.TIMEOUT


class WaitTimeout(RequestTimeout):
    """``wait`` ran out of time; ``jobs`` holds the last known state of every job, ``pending`` the ids
    of those not final."""

    def __init__(self, pending: list[str], jobs: list[JobInfo]) -> None:
        named = ", ".join(pending[:_NAMED_PENDING])
        more = f" and {len(pending) - _NAMED_PENDING} more" if len(pending) > _NAMED_PENDING else ""
        super().__init__(f"timed out waiting for {named}{more}")  # one line, for a DAG of any size
        self.pending = pending
        self.jobs = jobs


class LogStream:
    """The chunks of one job's log, as the master pushes them after LOGS_SUBSCRIBE.

    Use as ``async with client.logs(job_id) as stream: async for chunk in stream``.
    Iteration ends at the chunk marked ``eof``. Without ``follow`` the master sends the
    stored log and then ``eof``; with it, the stream stays open until the job is final
    (across its retries: each chunk names its ``attempt``).

    Raises (while iterating):
        RemoteError: code ``FOLLOWER_CUT_OFF``: this connection fell too far behind and
            the master ended the subscription.
    """

    def __init__(
        self,
        client: TitanClient,
        job_id: str,
        *,
        follow: bool,
        idle_timeout_s: float | None,
        attempt: int | None = None,
    ) -> None:
        self.job_id = job_id
        self.follow = follow
        self.wanted_attempt = attempt
        self.attempt: int | None = None
        self._client = client
        self._idle_timeout_s = idle_timeout_s
        self._queue: asyncio.Queue[LogData | None] = asyncio.Queue()
        self._done = False

    async def __aenter__(self) -> LogStream:
        # listen before asking, so no chunk pushed ahead of the answer is lost
        self._client._log_streams.setdefault(self.job_id, []).append(self._queue)
        try:
            request = LogsSubscribe(job_id=self.job_id, follow=self.follow, attempt=self.wanted_attempt)
            reply = await self._client._call(request, LogsSubscribed)
        except BaseException:
            self._detach()
            raise
        self.attempt = reply.attempt
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._detach()

    def _detach(self) -> None:
        queues = self._client._log_streams.get(self.job_id, [])
        if self._queue in queues:
            queues.remove(self._queue)
        if not queues:
            self._client._log_streams.pop(self.job_id, None)

    def __aiter__(self) -> LogStream:
        return self

    async def __anext__(self) -> LogData:
        if self._done:
            raise StopAsyncIteration
        try:
            async with asyncio.timeout(None if self.follow else self._idle_timeout_s):
                chunk = await self._queue.get()
        except TimeoutError:
            raise RequestTimeout(f"the log of {self.job_id} stopped arriving") from None
        if chunk is None:
            raise PeerClosed(f"connection to the master closed while reading the log of {self.job_id}")
        if chunk.eof:
            self._done = True
            if chunk.error:
                raise RemoteError("FOLLOWER_CUT_OFF", chunk.error)
            if not chunk.data:
                raise StopAsyncIteration
        return chunk


class TitanClient:
    """An async connection to a Titan master (DESIGN §8: the library the REPL and CLI use).

    Create with :meth:`connect`; close with :meth:`aclose` or ``async with``.
    """

    def __init__(self, peer: Peer, welcome: Welcome, settings: ClientSettings) -> None:
        self.settings = settings
        self.welcome = welcome
        self._peer = peer
        self._log_streams: dict[str, list[asyncio.Queue[LogData | None]]] = {}
        peer.on_frame = self._on_frame
        peer.on_close = self._on_close

    @classmethod
    async def connect(cls, settings: ClientSettings | str | None = None, *, master: str | None = None) -> TitanClient:
        """Dial the master and complete the handshake.

        ``master`` (``HOST:PORT``) overrides the address in ``settings``; without
        settings, :meth:`ClientSettings.from_env` supplies them (``TITAN_MASTER``).
        A string in place of the settings is the master's address:
        ``connect("10.0.0.5:9090")`` is ``connect(master="10.0.0.5:9090")``.

        Raises:
            ConnectError: nothing answers there, or the handshake was refused.
            UsageError: ``master`` is not ``HOST:PORT``.
        """
        if isinstance(settings, str):
            settings, master = None, master or settings
        try:
            if settings is None:
                settings = ClientSettings.from_env(master=master)
            elif master is not None:
                host, port = parse_address(master)
                settings = dataclasses.replace(settings, host=host, port=port)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        peer, welcome = await dial(
            settings.host,
            settings.port,
            role="client",
            name="titan-client",
            token=settings.token,
            max_body=settings.max_body,
            timeout_s=settings.connect_timeout_s,
            ssl_context=settings.tls.context() if settings.tls is not None else None,
        )
        return cls(peer, welcome, settings)

    # ------------------------------------------------------------------ lifetime
    @property
    def address(self) -> str:
        """``host:port`` of the master."""
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def is_open(self) -> bool:
        return self._peer.is_open

    async def aclose(self) -> None:
        """Close the connection; pending calls fail with :class:`PeerClosed`."""
        await self._peer.aclose()

    async def __aenter__(self) -> TitanClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ plumbing
    def _on_frame(self, peer: Peer, frame: Frame) -> None:
        if frame.opcode != Opcode.LOG_DATA:
            # a client accepts no requests; say so instead of ignoring it silently
            peer.send_error("UNEXPECTED", f"a client does not accept opcode {frame.opcode:#04x}", rid=frame.rid)
            return
        try:
            chunk = LogData.from_wire(frame.body)
        except ProtocolError as exc:
            peer.send_error(exc.error_code, exc.message)
            return
        for queue in self._log_streams.get(chunk.job_id, []):
            queue.put_nowait(chunk)

    def _on_close(self, peer: Peer) -> None:
        for queues in self._log_streams.values():
            for queue in queues:
                queue.put_nowait(None)

    async def _call(
        self, message: Message, expected: type[R], *, timeout_s: float | None | _Default = _DEFAULT_TIMEOUT
    ) -> R:
        limit = self.settings.request_timeout_s if isinstance(timeout_s, _Default) else timeout_s
        reply = await self._peer.request(message, timeout_s=limit)
        if not isinstance(reply, expected):
            raise SchemaError(f"expected {expected.__name__} in answer, got {type(reply).__name__}")
        return reply

    # ------------------------------------------------------------------ jobs
    async def submit(self, spec: JobSpec) -> str:
        """Submit one job; returns its id once the master has it on disk."""
        return (await self.submit_info(spec)).job_id

    async def submit_info(self, spec: JobSpec) -> SubmitReply:
        """Like :meth:`submit`, but the whole answer: the id, and a ``warning`` when no worker that
        is up can run the job yet (it waits for one)."""
        return await self._call(Submit(job=spec), SubmitReply)

    async def submit_job(
        self,
        type: str,
        data: str = "",
        *,
        priority: int = 1,
        delay_ms: int = 0,
        args: Sequence[str] = (),
        max_attempts: int = 3,
        timeout_s: float | None = None,
        skills: Sequence[str] = ("GENERAL",),
        slots: int = 1,
        memory_mb: int | None = None,
        job_id: str | None = None,
        payload: bytes | None = None,
    ) -> str:
        """Build a :class:`JobSpec` from keywords and :meth:`submit` it."""
        spec = JobSpec(
            type=type,
            data=data,
            id=job_id,
            args=list(args),
            priority=priority,
            delay_ms=delay_ms,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            slots=slots,
            memory_mb=memory_mb,
            skills=list(skills),
            payload=payload,
        )
        return await self.submit(spec)

    async def submit_dag(self, specs: Iterable[JobSpec]) -> list[str]:
        """Submit a DAG, accepted whole or not at all; returns the ids in order."""
        return (await self.submit_dag_info(specs)).job_ids

    async def submit_dag_info(self, specs: Iterable[JobSpec]) -> SubmitDagReply:
        """Like :meth:`submit_dag`, but the whole answer: the ids and the DAG's id.

        A DAG of more than :data:`DAG_PART_JOBS` jobs goes in parts, all sent
        before the first answer is awaited: the master checks one part while the
        next is encoded, and admits them together, all or nothing, with the last
        (see ``titan/master/dag_parts.py``). A DAG of thousands of jobs is
        encoded with the cyclic GC held off (see :func:`titan.runtime.paused_gc`),
        until the master's answer is in.

        Raises:
            RemoteError: the DAG was refused (the first refused part's reason).
        """
        jobs = list(specs)
        with paused_gc(len(jobs) >= 1000):
            if len(jobs) <= DAG_PART_JOBS:
                return await self._call(SubmitDag(jobs=jobs), SubmitDagReply)
            count = -(-len(jobs) // DAG_PART_JOBS)
            # each call sends its part before it first waits: all parts go out in order, now
            calls = [
                asyncio.ensure_future(
                    self._call(
                        SubmitDag(jobs=jobs[i * DAG_PART_JOBS : (i + 1) * DAG_PART_JOBS], part=i, parts=count),
                        SubmitDagReply,
                    )
                )
                for i in range(count)
            ]
            answers = await asyncio.gather(*calls, return_exceptions=True)
        for answer in answers:  # in part order: the first refusal is the reason
            if isinstance(answer, BaseException):
                raise answer
        last = answers[-1]
        assert isinstance(last, SubmitDagReply)
        return last

    async def status(self, job_id: str) -> JobInfo:
        """The job with its story (``history``)."""
        reply = await self._call(JobStatus(job_id=job_id), JobReply)
        return reply.job

    async def list_jobs(self, state: str | None = None, limit: int = 1000, *, dag: str | None = None) -> list[JobInfo]:
        """Jobs, optionally only those in ``state``, or only those of a DAG (a DAG id or any of its job ids).

        Read :data:`LIST_PAGE` at a time, so that no answer outgrows a frame however many match.
        """
        found: list[JobInfo] = []
        seen: set[str] = set()
        offset = 0
        while len(found) < limit:
            ask = min(LIST_PAGE, limit - len(found))
            page = (await self._call(ListJobs(state=state, limit=ask, dag=dag, offset=offset), JobListReply)).jobs
            offset += len(page)
            # newest first moves as jobs arrive: a job pushed into the next page is not listed twice
            found.extend(job for job in page if job.id not in seen)
            seen.update(job.id for job in page)
            if len(page) < ask:
                break
        return found

    async def dag_jobs(self, ref: str) -> list[JobInfo]:
        """Every job of a DAG, in submission order; ``ref`` is the DAG id or the id of one of its jobs."""
        return await self.list_jobs(limit=2**31 - 1, dag=ref)

    async def stats(self) -> StatsReply:
        """Counts per state and every worker."""
        return await self._call(Stats(), StatsReply)

    async def cancel(self, job_id: str, *, dag: bool = False) -> JobInfo:
        """Cancel a job that is not final; returns it as it is now.

        With ``dag``, cancel every unfinished job of the DAG that ``job_id`` belongs
        to (``job_id`` may also be the DAG id).
        """
        reply = await self._call(Cancel(job_id=job_id, dag=dag), JobReply)
        return reply.job

    async def retry(self, job_id: str) -> JobInfo:
        """Requeue a job from the dead-letter queue."""
        reply = await self._call(Retry(job_id=job_id), JobReply)
        return reply.job

    async def wait(self, job_ids: Sequence[str], timeout_s: float | None = None) -> list[JobInfo]:
        """Block until every job is final; returns them in the order asked.

        Raises:
            WaitTimeout: (a :class:`RequestTimeout`) the master answered that
                ``timeout_s`` passed first; names the unfinished ids.
        """
        ids = list(job_ids)
        if len(ids) > LIST_PAGE:  # a whole DAG's answer could outgrow a frame: wait for it a page at a time
            return await self._wait_in_pages(ids, timeout_s)
        # the master enforces timeout_s; our own limit only guards against a silent master
        guard = None if timeout_s is None else timeout_s + self.settings.request_timeout_s
        reply = await self._call(Wait(job_ids=ids, timeout_s=timeout_s), JobListReply, timeout_s=guard)
        if reply.timed_out:
            pending = [job.id for job in reply.jobs if job.state not in FINAL_STATES]
            raise WaitTimeout(pending or ids, reply.jobs)
        return reply.jobs

    async def _wait_in_pages(self, ids: list[str], timeout_s: float | None) -> list[JobInfo]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        done: list[JobInfo] = []
        for start in range(0, len(ids), LIST_PAGE):
            page = ids[start : start + LIST_PAGE]
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                done.extend(await self.wait(page, left))
            except WaitTimeout as exc:
                pending, jobs = list(exc.pending), [*done, *exc.jobs]
                for later in range(start + LIST_PAGE, len(ids), LIST_PAGE):  # where the rest stand now
                    try:
                        jobs.extend(await self.wait(ids[later : later + LIST_PAGE], 0.0))
                    except WaitTimeout as more:
                        pending.extend(more.pending)
                        jobs.extend(more.jobs)
                raise WaitTimeout(pending, jobs) from None
        return done

    async def outputs(self, job_id: str, attempt: int | None = None) -> JobOutputsReply:
        """The files an attempt wrote under ``TITAN_OUTPUT_DIR`` (default: its latest attempt that has any)."""
        return await self._call(JobOutputs(job_id=job_id, attempt=attempt), JobOutputsReply)

    # ------------------------------------------------------------------ services and scaling
    async def stop(self, job_id: str) -> JobInfo:
        """End a RUNNING service (a DEPLOY job); returns it, now STOPPED."""
        reply = await self._call(Stop(job_id=job_id), JobReply)
        return reply.job

    async def spawn(self, worker: str | None = None, port: int = 0, capacity: int = 0) -> SpawnReply:
        """Ask ``worker`` (id, ``[8081]`` or port; default: the master picks) to start a child worker.

        ``port`` 0 lets the worker pick a free display port; ``capacity`` 0 gives the child the
        parent's. The answer comes once the request is on its way; the child registers later,
        with ``spawn_id`` set to the answer's.
        """
        return await self._call(Spawn(worker=worker, port=port, capacity=capacity), SpawnReply)

    async def retire(self, worker: str) -> list[str]:
        """Drain ``worker`` and its children; each leaves once idle. Returns the ids now draining."""
        reply = await self._call(Retire(worker=worker), RetireReply)
        return reply.workers

    async def gc(self, older_than_s: float) -> GcReply:
        """Remove the workspace folders of jobs final for longer than ``older_than_s`` (never an unfinished job's)."""
        return await self._call(Gc(older_than_s=older_than_s), GcReply)

    def logs(self, job_id: str, *, follow: bool = False, attempt: int | None = None) -> LogStream:
        """A :class:`LogStream` of the job's output (``async with`` it); ``attempt``: an earlier one's."""
        return LogStream(self, job_id, follow=follow, idle_timeout_s=self.settings.request_timeout_s, attempt=attempt)
