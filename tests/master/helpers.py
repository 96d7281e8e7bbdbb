"""Builders for master tests: a state with fake files, workers, reports."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol import JobSpec, Register, TaskRef, TaskStatus
from titan.config import MasterSettings
from titan.errors import ValidationError
from titan.jobs import Effect, Job, SendTask
from titan.master import MasterState
from titan.master.durable import DurableLog

TIMEOUT_S = 30.0


class FakeFiles:
    """A perm_files catalog held in memory."""

    def __init__(self, names: set[str] | None = None, handlers: set[str] | None = None) -> None:
        self.names = names if names is not None else {"calc.py"}
        self.handlers = handlers if handlers is not None else {"PDF_CONVERT"}

    def resolve(self, name: str) -> str:
        if name not in self.names:
            raise ValidationError(f"no file '{name}' in perm_files/")
        return name

    def handler(self, type_name: str) -> str | None:
        return f"handlers/{type_name.lower()}.py" if type_name in self.handlers else None

    def handler_types(self) -> list[str]:
        return sorted(self.handlers)


def make_state(**overrides: Any) -> MasterState:
    settings = MasterSettings(
        **{
            "heartbeat_timeout_s": TIMEOUT_S,
            "retry_backoff_base_s": 1.0,
            "retry_backoff_cap_s": 8.0,
            "validate": True,
            **overrides,
        }
    )
    return MasterState(settings, FakeFiles(), rng=random.Random(7), now=0.0)


async def write_wal_of_two_masters(directory: Path, jobs_each: int = 3) -> None:
    """The WAL two masters running at once on one workspace left: two segments, seqs 1.. in each.

    Each log opened its own segment after recovering whatever the other had written so far,
    and each numbered its submissions from 1 (as two ``python -m titan.master`` did).
    """
    states = [MasterState(make_state().settings, FakeFiles(), rng=random.Random(i), now=0.0) for i in (1, 2)]
    logs = []
    for state in states:
        wal = DurableLog(directory, state)
        wal.recover(now=0.0)
        await wal.start()
        logs.append(wal)
    for state, wal in zip(states, logs, strict=True):
        for i in range(jobs_each):
            state.submit(shell(f"echo {i}"), float(i))
            wal.commit()
    for wal in logs:
        await wal.aclose()


def register(
    state: MasterState,
    worker_id: str = "w1",
    *,
    port: int = 8081,
    capacity: int = 2,
    skills: list[str] | None = None,
    now: float = 0.0,
    running: list[TaskRef] | None = None,
    finished: list[TaskStatus] | None = None,
    memory_mb: int | None = None,
    host: str = "127.0.0.1",
    host_memory_mb: int | None = None,
    sent_at: float | None = None,
) -> tuple[list[TaskRef], list[Effect]]:
    msg = Register(
        worker_id=worker_id,
        name=f"[{port}]",
        host=host,
        port=port,
        capacity=capacity,
        skills=skills if skills is not None else ["GENERAL"],
        running=running or [],
        finished=finished or [],
        memory_mb=memory_mb,
        host_memory_mb=host_memory_mb,
        sent_at=sent_at,
    )
    return state.worker_registered(msg, now)


def shell(command: str = "true", **fields: Any) -> JobSpec:
    return JobSpec(type="SHELL", data=command, **fields)


def sent(effects: list[Effect]) -> list[tuple[str, str]]:
    """``(worker_id, job_id)`` of every SendTask, in order."""
    return [(e.worker_id, e.job.id) for e in effects if isinstance(e, SendTask)]


def report(
    job: Job, state: str, *, exit_code: int | None = None, error: str = "", attempt: int | None = None
) -> TaskStatus:
    return TaskStatus(
        job_id=job.id,
        attempt=job.attempts if attempt is None else attempt,
        state=state,  # type: ignore[arg-type]
        exit_code=exit_code,
        error=error,
    )


async def wait_until(predicate: Callable[[], bool], *, timeout_s: float = 5.0, interval_s: float = 0.005) -> None:
    """Poll ``predicate`` until it holds (distributed's ``async_poll_for``)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {predicate}")
        await asyncio.sleep(interval_s)
