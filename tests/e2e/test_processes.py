"""End to end with real `python -m titan.master` / `titan.worker` processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from bench.cluster import REPO, LocalCluster
from protocol import JobSpec
from tests.support import wait_until
from titan.client import TitanClient
from titan.config import ClientSettings

pytestmark = pytest.mark.slow

FAST = {
    "master_args": ["--heartbeat-timeout", "0.6", "--heartbeat-interval", "0.1"],
    "worker_args": ["--heartbeat-interval", "0.1"],
}


async def test_fifty_jobs_over_two_worker_processes() -> None:
    async with LocalCluster(workers=2, capacity=2, **FAST) as cluster:
        async with await TitanClient.connect(ClientSettings(port=cluster.port)) as client:
            ids = await asyncio.gather(
                *(client.submit(JobSpec(type="SHELL", data="echo $TITAN_JOB_ID")) for _ in range(50))
            )
            jobs = await client.wait(ids, timeout_s=60)
            assert {job.state for job in jobs} == {"COMPLETED"}
            assert len(Counter(job.worker for job in jobs)) == 2
            stats = await client.stats()
            assert len(stats.workers) == 2
            assert stats.completed == 50


async def test_sigkilled_worker_process_jobs_rerun_on_the_other() -> None:
    async with LocalCluster(workers=2, capacity=2, **FAST) as cluster:
        async with await TitanClient.connect(ClientSettings(port=cluster.port)) as client:
            ids = [await client.submit(JobSpec(type="SHELL", data="sleep 1")) for _ in range(4)]

            async def all_running() -> bool:
                states = [(await client.status(i)).state for i in ids]
                return all(state == "RUNNING" for state in states)

            for _ in range(500):
                if await all_running():
                    break
                await asyncio.sleep(0.01)
            victim = cluster.procs[1]
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
            jobs = await client.wait(ids, timeout_s=60)
            assert {job.state for job in jobs} == {"COMPLETED"}
            assert any(job.attempts == 2 for job in jobs)
            assert {job.worker for job in jobs if job.attempts == 2} == {"[28082]"}


async def test_a_worker_stopped_with_sigterm_hands_its_jobs_back_at_once() -> None:
    # a heartbeat timeout far longer than the wait below: only the hand-back can requeue in time
    slow_loss = {"master_args": ["--heartbeat-timeout", "60", "--heartbeat-interval", "0.1"]}
    async with LocalCluster(workers=2, capacity=1, **slow_loss) as cluster:
        async with await TitanClient.connect(ClientSettings(port=cluster.port)) as client:
            spec = JobSpec(type="SHELL", data="sleep 1", max_attempts=1)
            ids = [await client.submit(spec) for _ in range(2)]
            for _ in range(1000):
                jobs = [await client.status(i) for i in ids]
                if all(job.state == "RUNNING" for job in jobs):
                    break
                await asyncio.sleep(0.01)
            (victim_job,) = [job.id for job in jobs if job.worker == "[28081]"]
            cluster.procs[1].send_signal(signal.SIGTERM)
            assert await cluster.procs[1].wait() == 0
            done = await client.wait(ids, timeout_s=30)
            assert {job.state for job in done} == {"COMPLETED"}
            moved = await client.status(victim_job)
            assert (moved.worker, moved.attempts, moved.tries) == ("[28082]", 2, 1)
            assert [run.state for run in moved.runs] == ["RETURNED", "COMPLETED"]
            assert any("handed back by [28081]" in step.stimulus for step in moved.history)
            workers = {worker.name: worker.health for worker in (await client.stats()).workers}
            assert workers.get("[28081]") in (None, "RETIRED")
            # an idle worker says it is leaving too
            cluster.procs[2].send_signal(signal.SIGTERM)
            assert await cluster.procs[2].wait() == 0

            async def retired() -> bool:  # once the master has read the worker's goodbye
                return {w.name: w.health for w in (await client.stats()).workers}.get("[28082]") == "RETIRED"

            await wait_until(retired, what="[28082] RETIRED")


def _titan_command(cluster: LocalCluster) -> Callable[..., Awaitable[tuple[int, str, str]]]:
    """``titan ARGS`` as a process against ``cluster``: (exit status, stdout, stderr)."""
    env = {**os.environ, "TITAN_MASTER": f"127.0.0.1:{cluster.port}", "PYTHONPATH": str(REPO)}

    async def titan(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "titan.cli", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        return proc.returncode or 0, out.decode(), err.decode()

    return titan


async def test_one_shot_cli_submit_status_wait_json() -> None:
    async with LocalCluster(workers=1, capacity=2, **FAST) as cluster:
        titan = _titan_command(cluster)

        code, out, err = await titan("submit", "RUN|calc.py|2|0")
        assert code == 0, err
        job_id = out.strip()
        assert job_id.startswith("TSK-")
        code, out, err = await titan("wait", job_id, "--timeout", "60")
        assert code == 0, (out, err)
        code, out, _ = await titan("status", job_id, "--json")
        job = json.loads(out)
        assert job["state"] == "COMPLETED" and job["exit_code"] == 0 and job["worker"] == "[28081]"
        for key in ("id", "type", "state", "attempts", "worker", "exit_code", "submitted_at", "started_at",
                    "finished_at", "deps"):  # fmt: skip
            assert key in job
        code, out, _ = await titan("stats", "--json")
        stats = json.loads(out)
        assert stats["workers"][0]["capacity"] == 2
        code, out, err = await titan("submit", "RUN|../etc/passwd")
        assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        code, out, err = await titan("submit", "SHELL|exit 4|1|0", "--attempts", "1")
        bad = out.strip()
        code, out, err = await titan("wait", bad, "--timeout", "30")
        assert code != 0


async def test_one_shot_cli_submit_and_submit_dag_with_wait() -> None:
    async with LocalCluster(workers=1, capacity=2, **FAST) as cluster:
        titan = _titan_command(cluster)

        code, out, err = await titan("submit", "SHELL|echo done", "--wait")
        job_id = out.splitlines()[0]
        assert (code, out.splitlines()) == (0, [job_id, f"{job_id} COMPLETED"]), err
        code, out, err = await titan("submit", "SHELL|exit 4", "--attempts", "1", "--wait", "--json")
        job = json.loads(out)
        assert (code, job["state"], job["exit_code"]) == (1, "DEAD", 4), err
        code, out, err = await titan("submit", "SHELL|sleep 30", "--wait", "--wait-timeout", "0.5")
        job_id = out.splitlines()[0]
        assert (code, out.splitlines()[1]) == (124, f"{job_id} RUNNING")
        assert err == f"titan: error: timed out waiting for {job_id}\n"
        code, out, err = await titan(
            "submit-dag", "A|SHELL|true|1|0|[] ; B|SHELL|exit 2|1|0|[A]", "--attempts", "1", "--wait"
        )
        assert code == 1, err
        assert out.splitlines()[0].startswith("DAG-") and out.splitlines()[1:] == ["A COMPLETED", "B DEAD  exit code 2"]
        code, out, err = await titan("submit-dag", "C|SHELL|true|1|0|[]", "--wait", "--json")
        shown = json.loads(out)
        assert code == 0 and shown["dag"].startswith("DAG-") and shown["ids"] == ["C"], err
        assert [(job["id"], job["state"], job["dag"]) for job in shown["jobs"]] == [("C", "COMPLETED", shown["dag"])]
