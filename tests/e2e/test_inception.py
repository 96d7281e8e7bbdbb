"""The Inception DAG (DESIGN §8) and child workers, with real master and worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import urllib.request
from pathlib import Path

import pytest

from bench.cluster import LocalCluster
from protocol import JobSpec, WorkerInfo
from tests.support import pid_alive, wait_until
from titan.cli.parse import SubmitDagCommand, parse_line
from titan.client import TitanClient
from titan.config import ClientSettings

pytestmark = pytest.mark.slow

INCEPTION = (
    "SUBMIT_DAG START_DASH|DEPLOY|server_dashboard.py|1|0|[] ; WORKER_A|DEPLOY|Worker.jar|8081|1|2|[START_DASH] ; "
    "WORKER_B|DEPLOY|Worker.jar|8082|1|2|[START_DASH] ; RUN_CALC|RUN|calc.py|2|0|[WORKER_A, WORKER_B] ; "
    "WORKER_C|DEPLOY|Worker.jar|8083|1|5|[RUN_CALC]"
)
FAST = {
    "master_args": ["--heartbeat-timeout", "0.8", "--heartbeat-interval", "0.1"],
    "worker_args": ["--heartbeat-interval", "0.1"],
}


def processes_under(folder: Path) -> list[int]:
    """Live processes whose command line mentions ``folder`` (workers, children, services)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if str(folder).encode() in cmdline and pid_alive(int(entry)):
            found.append(int(entry))
    return found


async def live(client: TitanClient) -> list[WorkerInfo]:
    return [w for w in (await client.stats()).workers if w.health == "HEALTHY"]


async def test_the_inception_dag_as_written_grows_the_cluster_into_a_tree() -> None:
    cluster = LocalCluster(workers=1, capacity=4, **FAST)
    async with cluster:
        async with await TitanClient.connect(ClientSettings(port=cluster.port)) as client:
            command = parse_line(INCEPTION)
            assert isinstance(command, SubmitDagCommand)
            await client.submit_dag(command.specs)
            (calc,) = await client.wait(["RUN_CALC"], timeout_s=60)
            assert calc.state == "COMPLETED"

            async def worker_c_up() -> bool:
                return (await client.status("WORKER_C")).up

            await wait_until(worker_c_up, timeout_s=30, what="WORKER_C's child to register")
            jobs = {job.id: job for job in await client.dag_jobs("RUN_CALC")}
            assert {job_id: job.state for job_id, job in jobs.items()} == {
                "START_DASH": "RUNNING",
                "WORKER_A": "RUNNING",
                "WORKER_B": "RUNNING",
                "RUN_CALC": "COMPLETED",
                "WORKER_C": "RUNNING",
            }
            # RUN_CALC started only once both children had registered
            calc_started = calc.started_at
            assert calc_started is not None
            for deploy in ("WORKER_A", "WORKER_B"):
                up = next(step.t for step in jobs[deploy].history if "registered" in step.stimulus)
                assert up <= calc_started

            workers = await live(client)
            assert len(workers) == 4
            by_name = {w.name: w for w in workers}
            by_spawn = {w.spawn_id: w for w in workers if w.spawn_id}
            assert sorted(by_spawn) == ["WORKER_A", "WORKER_B", "WORKER_C"]
            for deploy, port in (("WORKER_A", 8081), ("WORKER_B", 8082), ("WORKER_C", 8083)):
                child = by_spawn[deploy]
                host = by_name[jobs[deploy].worker or ""]
                assert (child.port, child.parent) == (port, host.id)
                assert deploy in host.services
            root = next(w for w in workers if w.parent is None)
            assert {"START_DASH", "WORKER_A", "WORKER_B"} <= set(root.services)

            # the dashboard is up and shows the same cluster
            url = await dashboard_url(client)
            data = json.loads(await asyncio.to_thread(fetch, url + "api/cluster"))
            assert data["connected"] and len(data["stats"]["workers"]) == 4
    await wait_until(lambda: not processes_under(cluster.workspace), timeout_s=20, what="every process to be gone")


async def dashboard_url(client: TitanClient) -> str:
    found: list[str] = []

    async def printed() -> bool:
        async with client.logs("START_DASH") as stream:
            text = b"".join([chunk.data async for chunk in stream]).decode()
        found[:] = re.findall(r"serving (http://\S+/)", text)
        return bool(found)

    await wait_until(printed, timeout_s=20, interval_s=0.1, what="the dashboard's address in its log")
    return found[0]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


async def test_a_child_worker_keeps_serving_when_its_parent_is_sigkilled() -> None:
    cluster = LocalCluster(workers=1, capacity=2, **FAST)
    child_pid = 0
    try:
        async with cluster:
            async with await TitanClient.connect(ClientSettings(port=cluster.port)) as client:
                await client.submit(JobSpec(type="DEPLOY", data="Worker.jar", id="KID", port=0))

                async def kid_up() -> bool:
                    return (await client.status("KID")).up

                await wait_until(kid_up, timeout_s=30, what="the child to register")
                (child,) = [w for w in await live(client) if w.spawn_id == "KID"]
                child_pid, parent_id = child.pid, child.parent
                parent = cluster.procs[1]
                parent.send_signal(signal.SIGKILL)
                await parent.wait()

                async def parent_lost() -> bool:
                    workers = (await client.stats()).workers
                    return {w.id: w.health for w in workers} == {parent_id: "LOST", child.id: "HEALTHY"}

                await wait_until(parent_lost, timeout_s=20, what="the parent to be declared lost")
                # its DEPLOY ends; the child is a worker of its own now, not started a second time
                kid = await client.status("KID")
                assert kid.state == "STOPPED" and "carries on" in kid.history[-1].stimulus
                ids = [await client.submit(JobSpec(type="SHELL", data="echo still here")) for _ in range(4)]
                jobs = await client.wait(ids, timeout_s=30)
                assert {(job.state, job.worker) for job in jobs} == {("COMPLETED", child.name)}
                assert pid_alive(child_pid)
    finally:
        if child_pid and pid_alive(child_pid):
            os.kill(child_pid, signal.SIGTERM)  # an orphan now: nobody else stops it
    await wait_until(lambda: not processes_under(cluster.workspace), timeout_s=20, what="every process to be gone")
