"""End to end, in process: a real master, two real workers, real OS processes."""

from __future__ import annotations

import asyncio
import json
import struct
from collections import Counter

import msgpack
import pytest

from protocol import VERSION, FrameDecoder, JobSpec, Opcode
from tests.conftest import Cluster, ClusterFactory
from tests.support import pid_alive, wait_until
from titan.cli.main import main
from titan.worker.offer import machine_memory_mb


async def submit_shell(cluster: Cluster, command: str, **fields) -> str:
    return await cluster.client.submit(JobSpec(type="SHELL", data=command, **fields))


async def test_fifty_jobs_complete_and_spread_over_both_workers(cluster: Cluster) -> None:
    ids = await asyncio.gather(*(submit_shell(cluster, "echo job") for _ in range(50)))
    assert len(set(ids)) == 50
    jobs = await cluster.client.wait(ids, timeout_s=30)
    assert [job.state for job in jobs] == ["COMPLETED"] * 50
    assert all(job.exit_code == 0 for job in jobs)
    per_worker = Counter(job.worker for job in jobs)
    assert len(per_worker) == 2, per_worker
    assert min(per_worker.values()) >= 10, per_worker


async def test_run_job_from_perm_files_captures_stdout(cluster: Cluster) -> None:
    job_id = await cluster.client.submit(JobSpec(type="RUN", data="calc.py", args=["2000"]))
    (job,) = await cluster.client.wait([job_id], timeout_s=30)
    assert job.state == "COMPLETED", job
    async with cluster.client.logs(job_id) as stream:
        stdout = b"".join([chunk.data async for chunk in stream if chunk.stream == "stdout"])
    assert stdout.strip()
    # the worker's scratch copy is recycled once reported; the master's folder is the record
    assert not list(cluster.workspace.glob(f"worker-*/jobs/{job_id}"))


async def test_failing_job_ends_dead_with_its_exit_code(cluster: Cluster) -> None:
    job_id = await submit_shell(cluster, "echo boom >&2; exit 7", max_attempts=1)
    (job,) = await cluster.client.wait([job_id], timeout_s=10)
    assert job.state == "DEAD"
    assert job.exit_code == 7
    assert job.attempts == 1
    assert "7" in job.error


async def test_failing_job_is_retried_until_out_of_attempts(cluster: Cluster) -> None:
    job_id = await submit_shell(cluster, "exit 3", max_attempts=3)
    (job,) = await cluster.client.wait([job_id], timeout_s=10)
    assert (job.state, job.exit_code, job.attempts) == ("DEAD", 3, 3)
    finishes = [step.finish for step in job.history]
    assert finishes.count("FAILED") == 3
    assert finishes.count("RUNNING") == 3


async def test_timeout_kills_the_job(cluster: Cluster) -> None:
    job_id = await submit_shell(cluster, "sleep 30", timeout_s=0.3, max_attempts=1)
    (job,) = await cluster.client.wait([job_id], timeout_s=10)
    assert job.state == "DEAD"
    assert "timed out" in job.error


async def test_cancel_running_job_kills_its_process_group(cluster: Cluster) -> None:
    job_id = await submit_shell(cluster, "sleep 30 & sleep 30; wait")
    await wait_until(lambda: _running(cluster, job_id), what="job running")
    pids = _process_group_pids(cluster, job_id)
    assert pids
    cancelled = await cluster.client.cancel(job_id)
    assert cancelled.state == "CANCELLED"
    await wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout_s=5, what="group killed")
    (job,) = await cluster.client.wait([job_id], timeout_s=5)
    assert job.state == "CANCELLED"


async def test_cancel_unknown_job_is_a_clear_error(cluster: Cluster) -> None:
    from titan.errors import RemoteError

    with pytest.raises(RemoteError) as info:
        await cluster.client.cancel("TSK-nope")
    assert info.value.code == "UNKNOWN_JOB"


@pytest.mark.parametrize("fields", [{"data": "echo a\x00b"}, {"data": "echo", "args": ["x\x00y"]}])
async def test_a_nul_no_program_could_take_is_refused_at_submission(cluster: Cluster, fields: dict) -> None:
    from titan.errors import RemoteError

    with pytest.raises(RemoteError) as info:
        await cluster.client.submit(JobSpec(type="SHELL", **fields))  # once, this was accepted and hung
    assert "must not contain NUL" in str(info.value) and "\n" not in str(info.value)
    job_id = await submit_shell(cluster, "true")
    (job,) = await cluster.client.wait([job_id], timeout_s=30)
    assert job.state == "COMPLETED"


async def test_crashed_worker_jobs_rerun_elsewhere(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=2, capacity=2)
    ids = [await submit_shell(cluster, "sleep 0.5") for _ in range(4)]
    await wait_until(lambda: all(_running(cluster, i) for i in ids), what="all four running")
    victim = cluster.workers[0]
    victims_jobs = {ref for ref in victim.running}
    assert victims_jobs
    victim.simulate_crash()
    jobs = await cluster.client.wait(ids, timeout_s=20)
    assert all(job.state == "COMPLETED" for job in jobs), jobs
    survivor = cluster.workers[1].name
    rerun = [job for job in jobs if job.attempts > 1]
    assert rerun, "the crashed worker's jobs should have needed a second attempt"
    assert all(job.worker == survivor for job in rerun)
    assert all("worker lost" in " ".join(step.stimulus for step in job.history) for job in rerun)


async def test_priority_orders_the_queue(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=1, capacity=1)
    blocker = await submit_shell(cluster, "sleep 0.3")
    await wait_until(lambda: _running(cluster, blocker), what="blocker running")
    low = await submit_shell(cluster, "true", priority=1)
    high = await submit_shell(cluster, "true", priority=9)
    jobs = await cluster.client.wait([blocker, low, high], timeout_s=10)
    by_id = {job.id: job for job in jobs}
    assert by_id[high].started_at <= by_id[low].started_at


# ---------------------------------------------------------------- bad input on the wire


async def _raw_exchange(port: int, payload: bytes, *, half_close: bool = False) -> tuple[list, bool]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    if half_close:
        writer.write_eof()  # as `printf garbage | nc` does: done sending, still listening
    data = await asyncio.wait_for(reader.read(), timeout=5)  # until the master closes
    writer.close()
    await writer.wait_closed()
    decoder = FrameDecoder()
    decoder.feed(data)
    return list(decoder), reader.at_eof()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "BAD_VERSION"),
        (struct.pack(">BBBBI", VERSION, Opcode.HELLO, 0, 0, 2**31), "FRAME_TOO_LARGE"),
        (struct.pack(">BBBBI", 9, Opcode.HELLO, 0, 0, 1) + b"\x80", "BAD_VERSION"),
        (struct.pack(">BBBBI", VERSION, Opcode.HELLO, 0x80, 0, 1) + b"\x80", "BAD_HEADER"),
    ],
)
async def test_bad_frames_get_an_error_and_close_while_others_carry_on(cluster: Cluster, payload, code) -> None:
    frames, closed = await _raw_exchange(cluster.master.port, payload)
    assert closed
    assert frames and frames[-1].opcode == Opcode.ERROR
    assert frames[-1].body["code"] == code
    job_id = await submit_shell(cluster, "true")
    (job,) = await cluster.client.wait([job_id], timeout_s=10)
    assert job.state == "COMPLETED"


@pytest.mark.parametrize("payload", [b"garbage", struct.pack(">BBBBI", VERSION, Opcode.HELLO, 0, 0, 40) + b"\x80"])
async def test_a_stream_that_ends_inside_a_frame_gets_truncated_frame(cluster: Cluster, payload: bytes) -> None:
    frames, closed = await _raw_exchange(cluster.master.port, payload, half_close=True)
    assert closed
    assert [frame.body["code"] for frame in frames] == ["TRUNCATED_FRAME"]
    assert "left over" in frames[0].body["message"]


async def test_skipping_the_handshake_is_refused(cluster: Cluster) -> None:
    body = msgpack.packb({"job": {"type": "SHELL", "data": "true"}, "rid": 1})
    frames, closed = await _raw_exchange(
        cluster.master.port, struct.pack(">BBBBI", VERSION, Opcode.SUBMIT, 0, 0, len(body)) + body
    )
    assert closed
    assert frames[-1].body["code"] == "HANDSHAKE_FAILED"


def _running(cluster: Cluster, job_id: str) -> bool:
    return any(ref.job_id == job_id for worker in cluster.workers for ref in worker.running)


def _process_group_pids(cluster: Cluster, job_id: str) -> list[int]:
    """Pids of every live process in the job's process group."""
    import os

    pgids = {pid for worker in cluster.workers for ref, pid in worker.running_pids().items() if ref.job_id == job_id}
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) in pgids:
                    found.append(int(entry))
            except OSError:
                pass
    return found


async def test_a_job_no_worker_can_run_is_accepted_with_a_warning(
    make_cluster: ClusterFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = await make_cluster(n_workers=1, capacity=2)
    client = cluster.client
    assert (await client.submit_info(JobSpec(type="SHELL", data="true"))).warning == ""
    gpu = await client.submit_info(JobSpec(type="SHELL", data="true", skills=["GPU", "GENERAL"]))
    assert "no worker that is up offers GPU:" in gpu.warning  # GENERAL is offered: only what is missing
    wide = await client.submit_info(JobSpec(type="SHELL", data="true", slots=3))
    assert "has 3 slots" in wide.warning
    # a worker offers this machine's memory unless told otherwise (--memory): no machine has a petabyte
    (worker,) = (await client.stats()).workers
    assert worker.memory_mb == machine_memory_mb() and worker.memory_used_mb == 0
    vast = await client.submit_info(JobSpec(type="SHELL", data="true", memory_mb=1 << 30))
    assert f"has {1 << 30} MiB of memory for its jobs" in vast.warning
    assert (await client.status(gpu.job_id)).state == "PENDING"  # accepted all the same, waiting
    master = f"127.0.0.1:{cluster.master.port}"
    argv = ["--master", master, "submit", "SHELL|true", "--skills", "NOPE"]
    assert await asyncio.to_thread(main, argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("TSK-") and captured.err.count("\n") == 1 and "NOPE" in captured.err
    argv = ["--master", master, "submit", "SHELL|true", "--memory", str(1 << 30), "--json"]
    assert await asyncio.to_thread(main, argv) == 0
    captured = capsys.readouterr()
    job_id = json.loads(captured.out)["id"]
    assert (await client.status(job_id)).memory_mb == 1 << 30 and "MiB of memory" in captured.err


async def test_a_dag_with_jobs_no_worker_can_run_is_accepted_with_one_warning(
    make_cluster: ClusterFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = await make_cluster(n_workers=1, capacity=2)
    client = cluster.client
    fine = await client.submit_dag_info([JobSpec(type="SHELL", data="true", id="OK")])
    assert fine.warning == ""
    dag = [
        JobSpec(type="SHELL", data="true", id="A"),
        JobSpec(type="SHELL", data="true", id="B", deps=["A"], skills=["GPU"]),
        JobSpec(type="SHELL", data="true", id="C", deps=["A"], skills=["GPU"]),
    ]
    reply = await client.submit_dag_info(dag)
    assert reply.warning == (
        "B and 1 more cannot start yet (no worker that is up offers GPU): they wait until a worker that can registers"
    )
    master = f"127.0.0.1:{cluster.master.port}"
    argv = ["--master", master, "submit-dag", "D|SHELL|true|1|0|[]", "--memory", str(1 << 30), "--json"]
    assert await asyncio.to_thread(main, argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["warning"].startswith("D cannot start yet (no worker that is up has")
    assert captured.err.startswith("titan: warning: D cannot start yet") and captured.err.count("\n") == 1


async def test_with_no_worker_up_a_submission_says_it_waits(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=0)
    reply = await cluster.client.submit_info(JobSpec(type="SHELL", data="true"))
    assert reply.warning == "no worker is up: the job waits until one registers"
