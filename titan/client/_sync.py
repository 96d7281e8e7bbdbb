"""A blocking facade over :class:`TitanClient` for scripts and notebooks.

The async client runs on a private event loop in one background thread; each
method hands its coroutine to that loop and blocks on the result. A thread
(rather than driving a loop per call) keeps the connection serviced between
calls and lets the facade be used from code that already runs an event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from protocol import GcReply, JobInfo, JobOutputsReply, JobSpec, LogData, SpawnReply, StatsReply, SubmitDagReply
from titan.config import ClientSettings

from ._client import TitanClient

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """Blocking client: the same methods as :class:`TitanClient`, without ``await``.

    Close it with :meth:`close` or use it as a context manager; closing stops the
    background thread and its loop.
    """

    def __init__(self, settings: ClientSettings | str | None = None, *, master: str | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        # daemon: a client that is never closed must not keep the interpreter alive
        self._thread = threading.Thread(target=self._loop.run_forever, name="titan-client", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._client = self._run(TitanClient.connect(settings, master=master))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def _stop_loop(self) -> None:
        self._closed = True
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    # ------------------------------------------------------------------ lifetime
    @property
    def address(self) -> str:
        return self._client.address

    def close(self) -> None:
        """Close the connection and stop the background loop. Idempotent."""
        if self._closed:
            return
        try:
            self._run(self._client.aclose())
        finally:
            self._stop_loop()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ jobs
    def submit(self, spec: JobSpec) -> str:
        return self._run(self._client.submit(spec))

    def submit_job(
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
        return self._run(
            self._client.submit_job(
                type,
                data,
                priority=priority,
                delay_ms=delay_ms,
                args=args,
                max_attempts=max_attempts,
                timeout_s=timeout_s,
                skills=skills,
                slots=slots,
                memory_mb=memory_mb,
                job_id=job_id,
                payload=payload,
            )
        )

    def submit_dag(self, specs: Iterable[JobSpec]) -> list[str]:
        return self._run(self._client.submit_dag(list(specs)))

    def submit_dag_info(self, specs: Iterable[JobSpec]) -> SubmitDagReply:
        return self._run(self._client.submit_dag_info(list(specs)))

    def status(self, job_id: str) -> JobInfo:
        return self._run(self._client.status(job_id))

    def list_jobs(self, state: str | None = None, limit: int = 1000, *, dag: str | None = None) -> list[JobInfo]:
        return self._run(self._client.list_jobs(state, limit, dag=dag))

    def dag_jobs(self, ref: str) -> list[JobInfo]:
        return self._run(self._client.dag_jobs(ref))

    def outputs(self, job_id: str, attempt: int | None = None) -> JobOutputsReply:
        return self._run(self._client.outputs(job_id, attempt))

    def stats(self) -> StatsReply:
        return self._run(self._client.stats())

    def gc(self, older_than_s: float) -> GcReply:
        return self._run(self._client.gc(older_than_s))

    def cancel(self, job_id: str, *, dag: bool = False) -> JobInfo:
        return self._run(self._client.cancel(job_id, dag=dag))

    def retry(self, job_id: str) -> JobInfo:
        return self._run(self._client.retry(job_id))

    def stop(self, job_id: str) -> JobInfo:
        return self._run(self._client.stop(job_id))

    def spawn(self, worker: str | None = None, port: int = 0, capacity: int = 0) -> SpawnReply:
        return self._run(self._client.spawn(worker, port, capacity))

    def retire(self, worker: str) -> list[str]:
        return self._run(self._client.retire(worker))

    def wait(self, job_ids: Sequence[str], timeout_s: float | None = None) -> list[JobInfo]:
        return self._run(self._client.wait(job_ids, timeout_s))

    def logs(self, job_id: str, *, follow: bool = False, attempt: int | None = None) -> Iterator[LogData]:
        """Yield the job's log chunks (``attempt``: an earlier one's); the subscription ends with the generator."""
        stream = self._client.logs(job_id, follow=follow, attempt=attempt)
        self._run(stream.__aenter__())
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(stream.__aexit__(None, None, None))
