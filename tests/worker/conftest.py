"""Fixtures for the worker's tests: a process runner, a fake master on real sockets, workers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from titan.config import WorkerSettings
from titan.worker import ProcessRunner, Worker, process

from .fake_master import FakeMaster
from .helpers import FAST_WORKER


@pytest.fixture(params=["fork_exec", "posix_spawn"])
def spawn_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every runner test runs through both ways of spawning (see ``titan/worker/process.py``)."""
    if request.param == "posix_spawn":
        monkeypatch.setattr(process, "FORK_EXEC", None)
    elif process.FORK_EXEC is None:
        pytest.skip("this Python's fork_exec is not one the worker knows")
    return str(request.param)


@pytest.fixture
async def runner(tmp_path: Path, spawn_method: str) -> AsyncIterator[ProcessRunner]:
    runner = ProcessRunner(tmp_path / "ws", worker_id="w-test", kill_grace_s=0.5)
    yield runner
    await runner.aclose()
    assert not runner.running


@pytest.fixture
async def master() -> AsyncIterator[FakeMaster]:
    fake = await FakeMaster(heartbeat_interval_s=10.0).start()
    yield fake
    await fake.aclose()


@pytest.fixture
async def make_worker(tmp_path: Path, master: FakeMaster) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """``await make_worker(**settings)``: a started worker dialling the fake master."""
    made: list[Worker] = []

    async def factory(**overrides: Any) -> Worker:
        values: dict[str, Any] = {
            **FAST_WORKER,
            "master_host": "127.0.0.1",
            "master_port": master.port,
            "port": 18081 + len(made),
            "workspace": tmp_path / f"worker-{len(made)}",
            **overrides,
        }
        worker = Worker(WorkerSettings(**values))
        made.append(worker)
        await worker.start()
        return worker

    yield factory
    for worker in made:
        await worker.aclose()
        assert not worker.running
