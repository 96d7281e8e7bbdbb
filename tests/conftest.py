"""The in-process cluster fixture: a master on 127.0.0.1:0, workers, a client.

Intervals are milliseconds so failure detection takes a fraction of a second.
Teardown checks that nothing leaked: no child processes of this test process
outlive the cluster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.net._net_harness import RawClient
from tests.support import PERM_FILES, child_pids, wait_until
from titan.client import TitanClient
from titan.config import ClientSettings, MasterSettings, WorkerSettings
from titan.master import Master
from titan.worker import Worker

FAST_MASTER = {
    "host": "127.0.0.1",
    "port": 0,
    "heartbeat_interval_s": 0.05,
    "heartbeat_timeout_s": 0.4,
    "retry_backoff_base_s": 0.02,
    "retry_backoff_cap_s": 0.2,
    "validate": True,
}
FAST_WORKER = {
    "heartbeat_interval_s": 0.05,
    "reconnect_initial_s": 0.02,
    "reconnect_max_s": 0.2,
    "kill_grace_s": 0.5,
}


@dataclass
class Cluster:
    master: Master
    workers: list[Worker]
    client: TitanClient
    workspace: Path
    _extra: list[Worker] = field(default_factory=list)

    async def add_worker(self, port: int, **overrides: Any) -> Worker:
        worker = Worker(self._worker_settings(port, **overrides))
        await worker.start()
        await wait_until(worker.registered.is_set, timeout_s=10, what=f"worker {port} registered")
        self.workers.append(worker)
        return worker

    def _worker_settings(self, port: int, **overrides: Any) -> WorkerSettings:
        values: dict[str, Any] = {
            **FAST_WORKER,
            "master_host": "127.0.0.1",
            "master_port": self.master.port,
            "port": port,
            "capacity": 2,
            "workspace": self.workspace / f"worker-{port}",
            **overrides,
        }
        return WorkerSettings(**values)


ClusterFactory = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """``await make_cluster(n_workers=2, capacity=2, **master_overrides)``."""
    made: list[Cluster] = []
    before = child_pids()

    async def factory(n_workers: int = 2, capacity: int = 2, **overrides: Any) -> Cluster:
        settings = MasterSettings(
            **{**FAST_MASTER, "workspace": tmp_path / "master", "perm_files": PERM_FILES, **overrides}
        )
        master = Master(settings)
        await master.start()
        client = await TitanClient.connect(ClientSettings(host="127.0.0.1", port=master.port))
        cluster = Cluster(master, [], client, tmp_path)
        made.append(cluster)
        for i in range(n_workers):
            await cluster.add_worker(18081 + i, capacity=capacity)
        return cluster

    yield factory

    for cluster in made:
        await cluster.client.aclose()
        for worker in cluster.workers:
            await worker.aclose()
        await cluster.master.aclose()
    await wait_until(lambda: child_pids() <= before, timeout_s=5, what="child processes to be reaped")


@pytest.fixture
async def cluster(make_cluster: ClusterFactory) -> Cluster:
    return await make_cluster()


def replace_settings(settings: Any, **changes: Any) -> Any:
    return dataclasses.replace(settings, **changes)


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[int], Awaitable[RawClient]]]:
    """``await raw(port)``: a plain socket that speaks frames byte by byte (closed at teardown)."""
    clients: list[RawClient] = []

    async def factory(port: int) -> RawClient:
        client = await RawClient.connect(port)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()
