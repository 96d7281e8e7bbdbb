"""Services and child workers, end to end in process: a real master and workers, real OS processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import urllib.request

import pytest

from protocol import JobSpec, TaskRef, WorkerInfo
from tests.conftest import Cluster, ClusterFactory
from tests.support import pid_alive, wait_until
from titan.config import AutoscaleSettings
from titan.errors import RemoteError

FAST_SERVICES = {
    "service_settle_s": 0.2,
    "service_restart_backoff_s": 0.05,
    "service_restart_backoff_cap_s": 0.2,
    "child_drain_timeout_s": 5.0,
}


async def service_cluster(make_cluster: ClusterFactory, capacity: int = 2) -> Cluster:
    cluster = await make_cluster(n_workers=0)
    await cluster.add_worker(18181, capacity=capacity, **FAST_SERVICES)
    return cluster


async def job_is(cluster: Cluster, job_id: str, state: str, **fields: object) -> bool:
    job = await cluster.client.status(job_id)
    return job.state == state and all(getattr(job, name) == value for name, value in fields.items())


async def workers(cluster: Cluster) -> list[WorkerInfo]:
    return (await cluster.client.stats()).workers


def service_pid(cluster: Cluster, job_id: str, attempt: int = 1) -> int | None:
    for worker in cluster.workers:
        deployments = worker.deployments
        deployed = deployments.get(TaskRef(job_id, attempt)) if deployments is not None else None
        if deployed is not None:
            return deployed.service.pid
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_service_runs_releases_its_dependants_once_up_and_stop_frees_its_slot(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await service_cluster(make_cluster)
    client = cluster.client
    ids = await client.submit_dag(
        [
            JobSpec(type="DEPLOY", data="sleep.py", id="SVC", args=["600"]),
            JobSpec(type="SHELL", data="echo after", id="AFTER", deps=["SVC"]),
        ]
    )
    (after,) = await client.wait([ids[1]], timeout_s=20)
    assert after.state == "COMPLETED"
    svc = await client.status("SVC")
    assert (svc.state, svc.up) == ("RUNNING", True)
    assert any("service up" in step.stimulus for step in svc.history)
    (worker,) = await workers(cluster)
    assert (worker.services, worker.load) == (["SVC"], 1)
    pid = service_pid(cluster, "SVC")
    assert pid is not None and pid_alive(pid)

    stopped = await client.stop("SVC")
    assert stopped.state == "STOPPED"
    await wait_until(lambda: not pid_alive(pid), what="the service process to end")
    (worker,) = await workers(cluster)
    assert (worker.services, worker.load) == ([], 0)
    # both slots are free again: a two-slot job runs
    big = await client.submit(JobSpec(type="SHELL", data="echo big", slots=2))
    (done,) = await client.wait([big], timeout_s=20)
    assert done.state == "COMPLETED"


async def test_a_service_killed_from_outside_is_restarted_and_the_restart_reported(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await service_cluster(make_cluster)
    job_id = await cluster.client.submit(JobSpec(type="DEPLOY", data="sleep.py", args=["600"]))
    await wait_until(lambda: job_is(cluster, job_id, "RUNNING", up=True), what="the service to be up")
    first = service_pid(cluster, job_id)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await wait_until(lambda: job_is(cluster, job_id, "RUNNING", up=True, restarts=1), what="the restart")
    second = service_pid(cluster, job_id)
    assert second is not None and second != first and pid_alive(second)
    job = await cluster.client.status(job_id)
    assert any("service restart 1" in step.stimulus and "SIGKILL" in step.stimulus for step in job.history)
    await cluster.client.stop(job_id)
    await wait_until(lambda: not pid_alive(second), what="the service to end")


async def test_a_service_that_keeps_crashing_gives_up_and_goes_dead(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=0)
    await cluster.add_worker(18182, capacity=1, **{**FAST_SERVICES, "service_max_restarts": 2})
    job_id = await cluster.client.submit(JobSpec(type="DEPLOY", data="fail.py", max_attempts=1))
    (job,) = await cluster.client.wait([job_id], timeout_s=20)
    assert job.state == "DEAD"
    assert "gave up after 2 restart(s)" in job.error


async def test_a_service_with_a_port_is_up_once_the_port_answers_the_dashboard(make_cluster: ClusterFactory) -> None:
    cluster = await service_cluster(make_cluster)
    port = free_port()
    job_id = await cluster.client.submit(JobSpec(type="DEPLOY", data="server_dashboard.py", port=port))
    await wait_until(lambda: job_is(cluster, job_id, "RUNNING", up=True), timeout_s=20, what="the dashboard")

    def fetch(path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.read()

    page = await asyncio.to_thread(fetch, "/")
    assert b"TITAN CLUSTER" in page
    data = await asyncio.to_thread(fetch, "/api/cluster")
    assert b'"connected": true' in data and job_id.encode() in data
    await cluster.client.stop(job_id)


async def test_deploy_of_the_worker_artifact_starts_a_child_that_stop_drains(make_cluster: ClusterFactory) -> None:
    cluster = await service_cluster(make_cluster)
    client = cluster.client
    await client.submit_dag(
        [
            JobSpec(type="DEPLOY", data="Worker.jar", id="CHILD", port=0),
            JobSpec(type="SHELL", data="echo on the grown cluster", id="NEXT", deps=["CHILD"]),
        ]
    )
    (nxt,) = await client.wait(["NEXT"], timeout_s=30)
    assert nxt.state == "COMPLETED"
    parent, child = sorted(await workers(cluster), key=lambda w: w.parent is not None)
    assert (child.parent, child.spawn_id, child.health) == (parent.id, "CHILD", "HEALTHY")
    assert child.id.startswith(parent.id + "/")
    assert parent.services == ["CHILD"]
    assert (await client.status("CHILD")).up

    await client.stop("CHILD")
    await wait_until(lambda: not pid_alive(child.pid), timeout_s=15, what="the drained child to leave")
    (worker,) = [w for w in await workers(cluster) if w.id == parent.id]
    assert worker.services == [] and worker.load == 0


async def test_a_worker_shutting_down_hands_its_service_and_child_worker_back_to_start_elsewhere(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await service_cluster(make_cluster)
    client = cluster.client
    leaving = cluster.workers[0]
    await client.submit_dag(
        [
            JobSpec(type="DEPLOY", data="sleep.py", id="SVC", args=["600"], max_attempts=1),
            JobSpec(type="DEPLOY", data="Worker.jar", id="CHILD", port=0, max_attempts=1),
        ]
    )
    await wait_until(lambda: job_is(cluster, "SVC", "RUNNING", up=True), timeout_s=30, what="SVC up")
    await wait_until(lambda: job_is(cluster, "CHILD", "RUNNING", up=True), timeout_s=30, what="CHILD up")
    await cluster.add_worker(18182, capacity=2, **FAST_SERVICES)
    await leaving.aclose()  # what SIGTERM does
    for job_id in ("SVC", "CHILD"):
        await wait_until(
            lambda job_id=job_id: job_is(cluster, job_id, "RUNNING", up=True, worker="[18182]"),
            timeout_s=30,
            what=f"{job_id} up again on [18182]",
        )
        job = await client.status(job_id)
        assert (job.attempts, job.tries, [run.state for run in job.runs]) == (2, 1, ["RETURNED", "RUNNING"])
        assert any("handed back by [18181]" in step.stimulus for step in job.history)


async def test_a_deploy_of_the_worker_artifact_past_max_workers_fails_in_one_line(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=0, max_workers=2)
    await cluster.add_worker(18181, capacity=2, **FAST_SERVICES)
    client = cluster.client
    await client.submit_dag([JobSpec(type="DEPLOY", data="worker", id="FIRST", port=0)])
    await wait_until(lambda: job_is(cluster, "FIRST", "RUNNING", up=True), timeout_s=30, what="the first child")
    await client.submit_dag([JobSpec(type="DEPLOY", data="worker", id="SECOND", port=0, max_attempts=1)])
    (second,) = await client.wait(["SECOND"], timeout_s=30)
    assert second.state == "DEAD"
    assert second.error == "the cluster has 2 workers, as many as --max-workers 2 allows"
    assert len(await workers(cluster)) == 2


async def test_spawn_and_retire_a_child_worker(make_cluster: ClusterFactory) -> None:
    cluster = await service_cluster(make_cluster)
    client = cluster.client
    reply = await client.spawn("18181", port=0, capacity=1)
    assert reply.spawn_id.startswith("SPAWN-")

    async def child() -> WorkerInfo | None:
        return next((w for w in await workers(cluster) if w.spawn_id == reply.spawn_id), None)

    async def registered() -> bool:
        info = await child()
        return info is not None and info.health == "HEALTHY"

    await wait_until(registered, timeout_s=20, what="the spawned child to register")
    info = await child()
    assert info is not None and info.parent == reply.parent and info.capacity == 1
    # it takes no slot on its parent
    parent = next(w for w in await workers(cluster) if w.id == reply.parent)
    assert parent.load == 0

    assert await client.retire(info.id) == [info.id]
    await wait_until(lambda: not pid_alive(info.pid), timeout_s=15, what="the retired child to leave")

    async def retired() -> bool:
        gone = next((w for w in await workers(cluster) if w.id == info.id), None)
        return gone is None or gone.health == "RETIRED"

    await wait_until(retired, timeout_s=15, what="the child recorded as retired")
    if any(w.id == info.id for w in await workers(cluster)):
        with pytest.raises(RemoteError, match="is RETIRED already: nothing to drain"):
            await client.retire(info.id)


async def test_spawn_and_stop_refuse_bad_input_with_one_line(make_cluster: ClusterFactory) -> None:
    cluster = await service_cluster(make_cluster)
    client = cluster.client
    for call, words in (
        (client.spawn("nope"), "no worker 'nope'"),
        (client.retire("nope"), "no worker 'nope'"),
        (client.stop("MISSING"), "MISSING"),
    ):
        try:
            await call
        except RemoteError as exc:
            assert words in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError(f"expected a refusal mentioning {words!r}")
    job_id = await client.submit(JobSpec(type="SHELL", data="echo x"))
    await client.wait([job_id], timeout_s=10)
    try:
        await client.stop(job_id)
    except RemoteError as exc:
        assert "not a service" in str(exc)
    else:
        raise AssertionError("STOP of a SHELL job should be refused")


async def test_the_autoscaler_grows_under_a_burst_and_shrinks_back_within_its_limits(
    make_cluster: ClusterFactory,
) -> None:
    limits = AutoscaleSettings(
        max_workers=3,
        max_children=2,
        max_depth=2,
        scale_up_after_s=0.1,
        cooldown_s=0.2,
        idle_retire_s=0.5,
        max_step=2,
        interval_s=0.05,
    )
    cluster = await make_cluster(n_workers=0, autoscale=limits)
    await cluster.add_worker(18183, capacity=2, **FAST_SERVICES)
    client = cluster.client
    seen: list[int] = []
    pids: set[int] = set()

    async def watch() -> None:
        while True:
            live = [w for w in await workers(cluster) if w.health in ("HEALTHY", "DRAINING")]
            seen.append(len(live))
            pids.update(w.pid for w in live if w.parent)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        ids = [await client.submit(JobSpec(type="SHELL", data="sleep 1")) for _ in range(24)]
        jobs = await client.wait(ids, timeout_s=60)
        assert {job.state for job in jobs} == {"COMPLETED"}
        assert max(seen) > 1, "the cluster never grew"
        assert max(seen) <= limits.max_workers
        assert len({job.worker for job in jobs}) > 1

        async def shrunk() -> bool:
            return [w.parent for w in await workers(cluster) if w.health in ("HEALTHY", "DRAINING")] == [None]

        await wait_until(shrunk, timeout_s=20, what="the idle children to be retired")
    finally:
        watcher.cancel()
    await wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout_s=15, what="retired children to exit")
    extra = (await client.stats()).extra["autoscaler"]
    actions = [decision["action"] for decision in extra["decisions"]]
    assert "spawn" in actions and "retire" in actions
    assert all(decision["reason"] for decision in extra["decisions"])
