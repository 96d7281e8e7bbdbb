"""The asyncio shell over a real socket on 127.0.0.1:0, with fake workers and clients."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from protocol import (
    Cancel,
    Frame,
    Heartbeat,
    JobListReply,
    JobReply,
    JobSpec,
    JobStatus,
    ListJobs,
    Opcode,
    Register,
    RegisterReply,
    Stats,
    StatsReply,
    Submit,
    SubmitDag,
    SubmitDagReply,
    SubmitReply,
    TaskRef,
    TaskStart,
    TaskStatus,
    TaskStop,
    Wait,
    encode_frame,
    parse_request,
)
from titan.config import MasterSettings
from titan.errors import PeerClosed, RemoteError, WorkspaceInUse
from titan.master import Master
from titan.master.client_handlers import attempts_held
from titan.net import Peer, dial

from .helpers import wait_until

FAST: dict[str, Any] = {
    "heartbeat_interval_s": 0.05,
    "heartbeat_timeout_s": 0.3,
    "retry_backoff_base_s": 0.01,
    "retry_backoff_cap_s": 0.05,
}


class FakeWorker:
    """A worker connection that records what the master sends it."""

    def __init__(self, peer: Peer, worker_id: str, port: int) -> None:
        self.peer = peer
        self.worker_id = worker_id
        self.port = port
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.reply: RegisterReply | None = None

    @classmethod
    async def connect(cls, master: Master, worker_id: str = "w1", port: int = 8081, **register: Any) -> FakeWorker:
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        def on_frame(peer: Peer, frame: Frame) -> None:
            inbox.put_nowait(parse_request(frame))

        peer, _ = await dial("127.0.0.1", master.port, role="worker", name=f"[{port}]", on_frame=on_frame)
        worker = cls(peer, worker_id, port)
        worker.inbox = inbox
        msg = Register(
            worker_id=worker_id,
            name=f"[{port}]",
            host="127.0.0.1",
            port=port,
            capacity=register.pop("capacity", 2),
            skills=["GENERAL"],
            **register,
        )
        reply = await peer.request(msg, timeout_s=5)
        assert isinstance(reply, RegisterReply)
        worker.reply = reply
        return worker

    async def next(self, kind: type, timeout_s: float = 5.0) -> Any:
        async with asyncio.timeout(timeout_s):
            message = await self.inbox.get()
        assert isinstance(message, kind), message
        return message

    def status(self, start: TaskStart, state: str, **fields: Any) -> None:
        self.peer.send(TaskStatus(job_id=start.job_id, attempt=start.attempt, state=state, **fields))  # type: ignore[arg-type]


@pytest.fixture
def perm(tmp_path: Path) -> Path:
    root = tmp_path / "perm_files"
    root.mkdir()
    (root / "calc.py").write_text("print(6 * 7)\n")
    return root


@pytest.fixture
async def master(tmp_path: Path, perm: Path) -> AsyncIterator[Master]:
    settings = MasterSettings(
        host="127.0.0.1", port=0, workspace=tmp_path / "ws", perm_files=perm, validate=True, **FAST
    )
    master = Master(settings)
    await master.start()
    yield master
    await master.aclose()


@pytest.fixture
async def client(master: Master) -> AsyncIterator[Peer]:
    peer, _ = await dial("127.0.0.1", master.port, role="client", name="test")
    yield peer
    await peer.aclose()


async def submit(client: Peer, spec: JobSpec) -> str:
    reply = await client.request(Submit(job=spec), timeout_s=5)
    assert isinstance(reply, SubmitReply)
    return reply.job_id


async def test_submit_runs_on_the_worker_and_wait_answers_completed(master: Master, client: Peer) -> None:
    worker = await FakeWorker.connect(master)
    job_id = await submit(client, JobSpec(type="SHELL", data="echo hi"))
    start = await worker.next(TaskStart)
    assert (start.job_id, start.attempt, start.kind, start.data) == (job_id, 1, "SHELL", "echo hi")
    waiting = asyncio.ensure_future(client.request(Wait(job_ids=[job_id], timeout_s=5)))
    worker.status(start, "RUNNING")
    worker.status(start, "COMPLETED", exit_code=0)
    reply = await asyncio.wait_for(waiting, 5)
    assert isinstance(reply, JobListReply) and not reply.timed_out
    (job,) = reply.jobs
    assert (job.state, job.exit_code, job.worker, job.attempts) == ("COMPLETED", 0, "[8081]", 1)
    assert [h.finish for h in job.history] == ["PENDING", "SCHEDULED", "RUNNING", "COMPLETED"]


async def test_run_job_ships_the_file_with_its_hash(master: Master, client: Peer, perm: Path) -> None:
    worker = await FakeWorker.connect(master)
    await submit(client, JobSpec(type="RUN", data="calc.py", args=["1"]))
    start = await worker.next(TaskStart)
    data = (perm / "calc.py").read_bytes()
    assert (start.kind, start.payload, start.payload_name, start.args) == ("RUN", data, "calc.py", ["1"])
    assert start.payload_hash == hashlib.sha256(data).hexdigest()


async def test_wait_times_out_and_says_so(master: Master, client: Peer) -> None:
    job_id = await submit(client, JobSpec(type="SHELL", data="true"))  # no worker: stays PENDING
    reply = await client.request(Wait(job_ids=[job_id], timeout_s=0.05), timeout_s=5)
    assert isinstance(reply, JobListReply) and reply.timed_out
    assert reply.jobs[0].state == "PENDING"
    assert master._waiters == {}


async def test_wait_on_final_jobs_answers_at_once(master: Master, client: Peer) -> None:
    job_id = await submit(client, JobSpec(type="SHELL", data="true"))
    await client.request(Cancel(job_id=job_id), timeout_s=5)
    reply = await client.request(Wait(job_ids=[job_id]), timeout_s=5)
    assert isinstance(reply, JobListReply) and [j.state for j in reply.jobs] == ["CANCELLED"]


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (JobStatus(job_id="TSK-nope"), "UNKNOWN_JOB"),
        (Wait(job_ids=["TSK-nope"]), "UNKNOWN_JOB"),
        (Submit(job=JobSpec(type="RUN", data="../etc/passwd")), "INVALID_JOB"),
        (Submit(job=JobSpec(type="NOPE")), "INVALID_JOB"),
        (ListJobs(state="SLEEPING"), "INVALID_JOB"),
        (SubmitDag(jobs=[JobSpec(type="SHELL", data="x", id="A", deps=["A"])]), "INVALID_JOB"),
        (Heartbeat(load=0), "UNKNOWN_OPCODE"),
    ],
)
async def test_bad_requests_get_an_error_and_the_connection_carries_on(
    master: Master, client: Peer, request_: Any, code: str
) -> None:
    with pytest.raises(RemoteError) as info:
        await client.request(request_, timeout_s=5)
    assert info.value.code == code
    assert "\n" not in str(info.value)
    assert await submit(client, JobSpec(type="SHELL", data="true"))


async def test_cancel_running_job_sends_task_stop(master: Master, client: Peer) -> None:
    worker = await FakeWorker.connect(master)
    job_id = await submit(client, JobSpec(type="SHELL", data="sleep 9"))
    start = await worker.next(TaskStart)
    worker.status(start, "RUNNING")
    reply = await client.request(Cancel(job_id=job_id), timeout_s=5)
    assert isinstance(reply, JobReply) and reply.job.state == "CANCELLED"
    stop = await worker.next(TaskStop)
    assert (stop.job_id, stop.attempt, stop.reason) == (job_id, 1, "cancelled")
    worker.status(start, "FAILED", error="stopped: cancelled")  # fenced
    await wait_until(lambda: "attempt 1's process ended" in master.state.job(job_id).story[-1].stimulus)


async def test_failed_job_is_retried_through_the_timer(master: Master, client: Peer) -> None:
    worker = await FakeWorker.connect(master)
    job_id = await submit(client, JobSpec(type="SHELL", data="exit 1", max_attempts=2))
    first = await worker.next(TaskStart)
    worker.status(first, "FAILED", exit_code=1)
    second = await worker.next(TaskStart)
    assert (second.job_id, second.attempt) == (job_id, 2)
    worker.status(second, "FAILED", exit_code=1)
    reply = await client.request(Wait(job_ids=[job_id], timeout_s=5), timeout_s=5)
    assert isinstance(reply, JobListReply) and reply.jobs[0].state == "DEAD"


async def test_delayed_job_is_dispatched_by_the_timer(master: Master, client: Peer) -> None:
    worker = await FakeWorker.connect(master)
    job_id = await submit(client, JobSpec(type="SHELL", data="true", delay_ms=50))
    assert master.state.job(job_id).state.value == "DELAYED"
    start = await worker.next(TaskStart)
    assert start.job_id == job_id
    assert master.state.job(job_id).submitted_at + 0.05 <= master.clock()


async def test_lost_worker_tasks_move_to_another_worker(master: Master, client: Peer) -> None:
    first = await FakeWorker.connect(master, "w1", 8081, capacity=1)
    job_id = await submit(client, JobSpec(type="SHELL", data="sleep 9"))
    start = await first.next(TaskStart)
    first.status(start, "RUNNING")
    second = await FakeWorker.connect(master, "w2", 8082, capacity=1)

    async def heartbeats() -> None:  # the second worker stays alive while the first one times out
        while True:
            second.peer.send(Heartbeat(load=0))
            await asyncio.sleep(FAST["heartbeat_interval_s"])

    pulse = asyncio.ensure_future(heartbeats())
    await first.peer.aclose()
    try:
        rerun = await second.next(TaskStart, timeout_s=5)
    finally:
        pulse.cancel()
    assert (rerun.job_id, rerun.attempt) == (job_id, 2)
    job = master.state.job(job_id)
    assert any("worker lost" in step.stimulus for step in job.story)
    stats = await client.request(Stats(), timeout_s=5)
    assert isinstance(stats, StatsReply)
    health = {w.name: w.health for w in stats.workers}
    assert health == {"[8081]": "LOST", "[8082]": "HEALTHY"}


async def test_reconnect_reports_stale_attempts(master: Master, client: Peer) -> None:
    worker = await FakeWorker.connect(master, running=[TaskRef(job_id="OLD", attempt=3)])
    assert worker.reply is not None and worker.reply.stale == [TaskRef(job_id="OLD", attempt=3)]
    assert worker.reply.heartbeat_interval_s == FAST["heartbeat_interval_s"]


async def test_second_registration_of_a_connected_worker_is_refused(master: Master) -> None:
    await FakeWorker.connect(master, "w1")
    with pytest.raises(RemoteError) as info:
        await FakeWorker.connect(master, "w1")
    assert info.value.code == "DUPLICATE_WORKER"


async def test_worker_must_register_first(master: Master) -> None:
    peer, _ = await dial("127.0.0.1", master.port, role="worker")
    try:
        with pytest.raises(RemoteError) as info:
            await peer.request(Heartbeat(load=0), timeout_s=5)
        assert info.value.code == "NOT_REGISTERED"
    finally:
        await peer.aclose()


async def test_dag_over_the_wire(master: Master, client: Peer) -> None:
    worker = await FakeWorker.connect(master)
    specs = [JobSpec(type="SHELL", data="true", id="A"), JobSpec(type="SHELL", data="true", id="B", deps=["A"])]
    reply = await client.request(SubmitDag(jobs=specs), timeout_s=5)
    assert isinstance(reply, SubmitDagReply) and reply.job_ids == ["A", "B"]
    start = await worker.next(TaskStart)
    assert start.job_id == "A"
    worker.status(start, "COMPLETED", exit_code=0)
    assert (await worker.next(TaskStart)).job_id == "B"


async def test_list_and_stats(master: Master, client: Peer) -> None:
    await FakeWorker.connect(master, capacity=1)
    ids = [await submit(client, JobSpec(type="SHELL", data="true")) for _ in range(3)]
    reply = await client.request(ListJobs(limit=2), timeout_s=5)
    assert isinstance(reply, JobListReply) and [j.id for j in reply.jobs] == ids[:0:-1]
    stats = await client.request(Stats(), timeout_s=5)
    assert isinstance(stats, StatsReply)
    assert (stats.queued, stats.scheduled) == (2, 1)
    assert stats.workers[0].name == "[8081]" and stats.workers[0].load == 1


@pytest.mark.parametrize("waits", [1, 3])
async def test_client_gone_drops_its_waiters(master: Master, waits: int) -> None:
    peer, _ = await dial("127.0.0.1", master.port, role="client")
    job_ids = [await submit(peer, JobSpec(type="SHELL", data="true")) for _ in range(waits)]
    pending = [asyncio.ensure_future(peer.request(Wait(job_ids=[job_id]))) for job_id in job_ids]
    await wait_until(lambda: all(job_id in master._waiters for job_id in job_ids))
    await peer.aclose()
    for wait in pending:
        with pytest.raises(PeerClosed):
            await wait
    await wait_until(lambda: master._waiters == {})


async def test_aclose_closes_connections(tmp_path: Path, perm: Path) -> None:
    master = Master(MasterSettings(port=0, workspace=tmp_path / "ws", perm_files=perm, **FAST))
    await master.start()
    peer, _ = await dial("127.0.0.1", master.port, role="client")
    serving = asyncio.ensure_future(master.serve_forever())
    await master.aclose()
    await asyncio.wait_for(peer.wait_closed(), 5)
    await asyncio.wait_for(serving, 5)
    await master.aclose()  # twice is fine
    assert Opcode.SUBMIT in master._client_handlers


async def test_the_workspace_is_held_from_start_to_aclose(master: Master) -> None:
    settings = dataclasses.replace(master.settings, port=0)
    with pytest.raises(WorkspaceInUse, match=r"is in use by another master \(pid \d+, port \d+\)"):
        await Master(settings).start()
    await master.aclose()
    async with Master(settings) as again:  # released on close: the next master recovers at once
        assert again.port


def dag_part(index: int, count: int, *specs: JobSpec) -> SubmitDag:
    return SubmitDag(jobs=list(specs), part=index, parts=count)


def shell_job(job_id: str, *deps: str) -> JobSpec:
    return JobSpec(type="SHELL", data="true", id=job_id, deps=list(deps))


async def test_a_dag_in_parts_is_admitted_whole_with_its_last_part(master: Master, client: Peer) -> None:
    requests = [
        client.request(dag_part(0, 3, shell_job("A"), shell_job("B", "A")), timeout_s=5),
        client.request(dag_part(1, 3, shell_job("C", "B")), timeout_s=5),
        client.request(dag_part(2, 3, shell_job("D", "A", "C")), timeout_s=5),
    ]
    first, second, last = await asyncio.gather(*requests)  # sent before any answer, as the client does
    assert isinstance(first, SubmitDagReply) and isinstance(second, SubmitDagReply)
    assert first.job_ids == [] and second.job_ids == []
    assert isinstance(last, SubmitDagReply) and last.job_ids == ["A", "B", "C", "D"] and last.dag_id
    assert {job.dag for job in master.state.jobs.values()} == {last.dag_id}


async def test_a_refused_part_refuses_the_whole_dag_and_stores_nothing(master: Master, client: Peer) -> None:
    bad = {
        "jobs": [{"type": "SHELL", "data": "true", "id": "B", "max_attempts": 0}],
        "part": 1,
        "parts": 3,
        "rid": 9001,
    }
    first = asyncio.ensure_future(client.request(dag_part(0, 3, shell_job("A")), timeout_s=5))
    await first
    client.write(encode_frame(Opcode.SUBMIT_DAG, bad))  # a part the master cannot read
    with pytest.raises(RemoteError, match="the DAG is refused: .*max_attempts"):
        await client.request(dag_part(2, 3, shell_job("C", "A")), timeout_s=5)
    assert master.state.jobs == {}
    # a DAG sent afterwards starts afresh
    reply = await client.request(SubmitDag(jobs=[shell_job("A")]), timeout_s=5)
    assert isinstance(reply, SubmitDagReply) and reply.job_ids == ["A"]


async def test_a_dag_whose_parts_stop_coming_is_dropped_with_the_connection(master: Master) -> None:
    peer, _ = await dial("127.0.0.1", master.port, role="client")
    await peer.request(dag_part(0, 2, shell_job("A")), timeout_s=5)
    await peer.aclose()
    other, _ = await dial("127.0.0.1", master.port, role="client")
    with pytest.raises(RemoteError, match="without its first part"):
        await other.request(dag_part(1, 2, shell_job("B", "A")), timeout_s=5)
    await other.aclose()
    assert master.state.jobs == {}


async def test_a_missing_perm_files_folder_is_warned_of_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-perm-files"
    master = Master(MasterSettings(host="127.0.0.1", port=0, workspace=tmp_path / "ws", perm_files=missing, **FAST))
    with caplog.at_level(logging.WARNING, logger="titan.master"):
        await master.start()
    try:
        assert f"no folder {missing}: RUN jobs that name a file in it are refused" in caplog.text
    finally:
        await master.aclose()


@pytest.mark.parametrize(
    ("numbers", "said"),
    [
        ([], "no attempt yet"),
        ([1], "attempt 1"),
        ([1, 2, 3], "attempts 1 to 3"),
        ([1, 3], "attempts 1 and 3"),  # a master restart skipped attempt 2
        ([1, 3, 4], "attempts 1, 3 and 4"),
        (list(range(1, 30, 2)), "attempts …, 13, 15, 17, 19, 21, 23, 25, 27 and 29"),
    ],
)
def test_a_refused_attempt_number_is_answered_with_the_ones_the_job_has(numbers: list[int], said: str) -> None:
    assert attempts_held(numbers) == said
