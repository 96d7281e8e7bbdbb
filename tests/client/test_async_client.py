"""TitanClient against a fake master on a real socket."""

from __future__ import annotations

import asyncio

import pytest

from protocol import JobReply, JobSpec, JobStatus, Stats, Submit, SubmitDag, Wait
from titan.client import FINAL_STATES, RequestTimeout, TitanClient, WaitTimeout
from titan.client.testing import FakeMaster
from titan.config import ClientSettings
from titan.errors import ConnectError, PeerClosed, RemoteError, UsageError


async def test_submit_status_list_stats_round_trip(client: TitanClient, fake_master: FakeMaster) -> None:
    job_id = await client.submit(JobSpec(type="RUN", data="calc.py"))
    job = await client.status(job_id)
    assert (job.id, job.type, job.data, job.state) == (job_id, "RUN", "calc.py", "PENDING")
    assert [j.id for j in await client.list_jobs()] == [job_id]
    assert await client.list_jobs("RUNNING") == []
    stats = await client.stats()
    assert stats.queued == 1 and stats.workers == []
    assert client.address == fake_master.address and client.welcome.server == "fake-master"


async def test_submit_job_builds_the_spec(client: TitanClient, fake_master: FakeMaster) -> None:
    await client.submit_job(
        "SHELL", "echo hi", priority=5, delay_ms=10, args=("a",), max_attempts=2, timeout_s=1.5, skills=("GPU",)
    )
    request = fake_master.received[-1]
    assert isinstance(request, Submit)
    assert request.job == JobSpec(
        type="SHELL", data="echo hi", priority=5, delay_ms=10, args=["a"], max_attempts=2, timeout_s=1.5, skills=["GPU"]
    )


async def test_submit_dag_returns_ids_in_order(client: TitanClient, fake_master: FakeMaster) -> None:
    specs = [JobSpec(type="RUN", data="a.py", id="A"), JobSpec(type="RUN", data="b.py", id="B", deps=["A"])]
    assert await client.submit_dag(specs) == ["A", "B"]
    request = fake_master.received[-1]
    assert isinstance(request, SubmitDag) and request.jobs == specs
    assert (await client.status("B")).state == "BLOCKED"


async def test_many_requests_in_flight_are_matched_by_rid(client: TitanClient, fake_master: FakeMaster) -> None:
    count = 25
    ids = [fake_master.add_job(f"J{i:02d}").id for i in range(count)]
    gates: dict[str, asyncio.Event] = {}
    everyone_waiting = asyncio.Event()

    async def held_status(request: JobStatus) -> JobReply:
        gate = gates[request.job_id] = asyncio.Event()
        if len(gates) == count:
            everyone_waiting.set()
        await gate.wait()
        return JobReply(job=fake_master.jobs[request.job_id])

    fake_master.on(JobStatus, held_status)
    calls = [asyncio.create_task(client.status(job_id)) for job_id in ids]
    await everyone_waiting.wait()  # all requests are pending on one connection at once
    for job_id in reversed(ids):  # answer in the opposite order
        gates[job_id].set()
    answers = await asyncio.gather(*calls)
    assert [job.id for job in answers] == ids


async def test_remote_error_keeps_its_code(client: TitanClient, fake_master: FakeMaster) -> None:
    with pytest.raises(RemoteError) as info:
        await client.status("TSK-missing")
    assert info.value.code == "UNKNOWN_JOB" and "TSK-missing" in str(info.value)

    def refuse(request: Stats) -> JobReply:
        raise RemoteError("OVERLOADED", "the master is busy")

    fake_master.on(Stats, refuse)
    with pytest.raises(RemoteError) as info:
        await client.stats()
    assert info.value.code == "OVERLOADED"
    # the connection is still usable after an error answer
    assert await client.list_jobs() == []


async def test_cancel_and_retry(client: TitanClient, fake_master: FakeMaster) -> None:
    fake_master.add_job("A")
    assert (await client.cancel("A")).state == "CANCELLED"
    with pytest.raises(RemoteError) as info:
        await client.cancel("A")
    assert info.value.code == "INVALID_TRANSITION"
    fake_master.add_job("D", state="DEAD", attempts=3)
    assert (await client.retry("D")).state == "PENDING"


async def test_peer_closed_when_the_master_drops(client: TitanClient, fake_master: FakeMaster) -> None:
    arrived = asyncio.Event()
    never = asyncio.Event()

    async def hang(request: Stats) -> JobReply:
        arrived.set()
        await never.wait()
        raise AssertionError("unreachable")

    fake_master.on(Stats, hang)
    call = asyncio.create_task(client.stats())
    await arrived.wait()
    await fake_master.drop_clients()
    with pytest.raises(PeerClosed):
        await call
    assert not client.is_open
    with pytest.raises(PeerClosed):
        await client.list_jobs()


async def test_wait_returns_when_jobs_are_final(client: TitanClient, fake_master: FakeMaster) -> None:
    fake_master.add_job("A")
    fake_master.add_job("B", state="COMPLETED")
    waiting = asyncio.create_task(client.wait(["A", "B"]))
    request = await fake_master.request_of(Wait)
    assert request.job_ids == ["A", "B"] and not waiting.done()
    fake_master.set_state("A", "DEAD", exit_code=1)
    jobs = await waiting
    assert [(job.id, job.state) for job in jobs] == [("A", "DEAD"), ("B", "COMPLETED")]
    assert {"COMPLETED", "DEAD"} <= FINAL_STATES


async def test_wait_timeout_names_unfinished_jobs(client: TitanClient, fake_master: FakeMaster) -> None:
    fake_master.add_job("A", state="RUNNING")
    fake_master.add_job("B", state="COMPLETED")
    with pytest.raises(WaitTimeout) as info:
        await client.wait(["A", "B"], timeout_s=0.01)
    assert isinstance(info.value, RequestTimeout)
    assert info.value.pending == ["A"] and "A" in str(info.value) and "B" not in str(info.value)
    assert [job.state for job in info.value.jobs] == ["RUNNING", "COMPLETED"]


async def test_request_timeout_when_the_master_is_silent(fake_master: FakeMaster) -> None:
    never = asyncio.Event()

    async def hang(request: Stats) -> JobReply:
        await never.wait()
        raise AssertionError("unreachable")

    fake_master.on(Stats, hang)
    settings = ClientSettings(host="127.0.0.1", port=fake_master.port, request_timeout_s=0.05)
    async with await TitanClient.connect(settings) as client:
        with pytest.raises(RequestTimeout):
            await client.stats()


async def test_logs_stream_the_stored_log(client: TitanClient, fake_master: FakeMaster) -> None:
    fake_master.add_job("A", state="COMPLETED")
    fake_master.logs["A"] = [("stdout", b"hello\n"), ("stderr", b"oops\n"), ("stdout", b"bye\n")]
    async with client.logs("A") as stream:
        chunks = [(chunk.stream, chunk.data) async for chunk in stream]
    assert stream.attempt == 1
    assert chunks == fake_master.logs["A"]
    assert client._log_streams == {}


async def test_logs_refused_by_a_master_without_them(client: TitanClient, fake_master: FakeMaster) -> None:
    fake_master.add_job("A")
    with pytest.raises(RemoteError) as info:
        async with client.logs("A"):
            pass
    assert info.value.code == "UNKNOWN_OPCODE"
    assert client._log_streams == {}


async def test_connect_error_when_nothing_listens() -> None:
    master = await FakeMaster().start()
    port = master.port
    await master.aclose()
    with pytest.raises(ConnectError) as info:
        await TitanClient.connect(master=f"127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in str(info.value)


async def test_bad_master_address_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        await TitanClient.connect(master="127.0.0.1:http")


async def test_token_handshake() -> None:
    async with FakeMaster(token="s3cret") as master:
        good = ClientSettings(host="127.0.0.1", port=master.port, token="s3cret")
        async with await TitanClient.connect(good) as client:
            assert await client.list_jobs() == []
        with pytest.raises(ConnectError, match="token"):
            await TitanClient.connect(ClientSettings(host="127.0.0.1", port=master.port))
        with pytest.raises(ConnectError):
            await TitanClient.connect(ClientSettings(host="127.0.0.1", port=master.port, token="wrong"))


async def test_master_keyword_overrides_settings(fake_master: FakeMaster) -> None:
    settings = ClientSettings(host="127.0.0.1", port=1)
    async with await TitanClient.connect(settings, master=fake_master.address) as client:
        assert client.settings.port == fake_master.port


async def test_a_string_in_place_of_settings_is_the_masters_address(fake_master: FakeMaster) -> None:
    async with await TitanClient.connect(fake_master.address) as client:
        assert client.settings.port == fake_master.port
    with pytest.raises(UsageError):
        await TitanClient.connect("127.0.0.1:http")


async def test_a_large_dag_goes_in_parts_and_comes_back_whole(
    client: TitanClient, fake_master: FakeMaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("titan.client._client.DAG_PART_JOBS", 2)
    specs = [JobSpec(type="RUN", data="a.py", id=f"J{i}", deps=[f"J{i - 1}"] if i else []) for i in range(5)]
    assert await client.submit_dag(specs) == [f"J{i}" for i in range(5)]
    parts = [request for request in fake_master.received if isinstance(request, SubmitDag)]
    assert [(part.part, part.parts, len(part.jobs)) for part in parts] == [(0, 3, 2), (1, 3, 2), (2, 3, 1)]
