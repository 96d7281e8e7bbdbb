"""The blocking Client: same calls, its own loop thread, closed cleanly."""

from __future__ import annotations

import asyncio
import threading

import pytest

from protocol import JobSpec
from titan.client import Client
from titan.client.testing import FakeMaster
from titan.errors import ConnectError, RemoteError


def client_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "titan-client"]


async def test_sync_client_round_trip_and_clean_close(fake_master: FakeMaster) -> None:
    fake_master.logs["A"] = [("stdout", b"line\n")]

    def use() -> tuple[str, list[str], int, str, list[bytes], str]:
        # the blocking client must not run on the loop that serves the fake master
        with Client(fake_master.address) as client:  # the address alone, as a script would write it
            job_id = client.submit_job("RUN", "calc.py")
            client.submit(JobSpec(type="RUN", data="x.py", id="A"))
            ids = [job.id for job in client.list_jobs()]
            queued = client.stats().queued
            try:
                client.status("missing")
            except RemoteError as exc:
                code = exc.code
            logs = [chunk.data for chunk in client.logs("A")]
            dag = client.submit_dag([JobSpec(type="RUN", data="b.py", id="B", deps=["A"])])
            cancelled = client.cancel("B").state
            assert dag == ["B"]
        return job_id, ids, queued, code, logs, cancelled

    job_id, ids, queued, code, logs, cancelled = await asyncio.to_thread(use)
    assert ids == [job_id, "A"] and queued == 2 and code == "UNKNOWN_JOB"
    assert logs == [b"line\n"] and cancelled == "CANCELLED"
    assert client_threads() == []


async def test_sync_wait_and_use_after_close(fake_master: FakeMaster) -> None:
    fake_master.add_job("A", state="COMPLETED")

    def use() -> Client:
        client = Client(master=fake_master.address)
        assert [job.state for job in client.wait(["A"], timeout_s=5)] == ["COMPLETED"]
        client.close()
        client.close()  # idempotent
        return client

    client = await asyncio.to_thread(use)
    with pytest.raises(RuntimeError, match="closed"):
        client.stats()
    assert client_threads() == []


async def test_sync_connect_failure_leaves_no_thread() -> None:
    master = await FakeMaster().start()
    address = master.address
    await master.aclose()
    with pytest.raises(ConnectError):
        await asyncio.to_thread(Client, master=address)
    assert client_threads() == []
