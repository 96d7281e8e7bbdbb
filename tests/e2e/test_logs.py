"""Live logs, exact logs at rest, payload shipping and gc on an in-process cluster."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from protocol import JobSpec, LogRecord, encode_log_record, log_key, log_record_mac
from tests.conftest import FAST_MASTER, FAST_WORKER, Cluster, ClusterFactory
from tests.support import PERM_FILES, wait_until
from titan.client import TitanClient
from titan.config import ClientSettings, MasterSettings, WorkerSettings
from titan.errors import RemoteError
from titan.master import Master
from titan.worker import Worker

CHATTY = b"""
import sys, time
n = int(sys.argv[1])
for i in range(n):
    if i % 3 == 0:
        sys.stderr.write(f"err {i}\\n")
    else:
        sys.stdout.write(f"out {i} " + "x" * (i % 40) + "\\n")
    if i % 10000 == 0:
        sys.stdout.flush(); sys.stderr.flush(); time.sleep(0.01)
"""


def chatty_expected(n: int) -> tuple[bytes, bytes]:
    out = "".join(f"out {i} " + "x" * (i % 40) + "\n" for i in range(n) if i % 3)
    err = "".join(f"err {i}\n" for i in range(0, n, 3))
    return out.encode(), err.encode()


async def follow(client: TitanClient, job_id: str) -> dict[str, bytes]:
    got = {"stdout": bytearray(), "stderr": bytearray()}
    async with client.logs(job_id, follow=True) as stream:
        async for chunk in stream:
            got[chunk.stream] += chunk.data
    return {name: bytes(data) for name, data in got.items()}


def stored(cluster: Cluster, job_id: str, name: str, attempt: int = 1) -> bytes:
    cluster.master.log_store.flush()
    return (cluster.master.settings.workspace / "jobs" / job_id / f"attempt-{attempt}" / name).read_bytes()


async def test_a_hundred_thousand_lines_are_followed_live_and_stored_exactly(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=1)
    job_id = await cluster.client.submit(JobSpec(type="RUN", data="chatty.py", payload=CHATTY, args=["100000"]))
    live = await follow(cluster.client, job_id)
    (job,) = await cluster.client.wait([job_id], timeout_s=30)
    assert job.state == "COMPLETED"
    out, err = chatty_expected(100_000)
    assert stored(cluster, job_id, "stdout") == out
    assert stored(cluster, job_id, "stderr") == err
    assert cluster.master.logs is not None and cluster.master.logs.counts["received"] > 0  # it really went live
    run = (await cluster.client.status(job_id)).runs[-1]
    if run.log_lost == 0:
        assert live == {"stdout": out, "stderr": err}
    result = json.loads(stored(cluster, job_id, "result.json"))
    assert result["state"] == "COMPLETED" and result["exit_code"] == 0 and result["worker"] == "[18081]"


async def test_dropped_datagrams_leave_a_gap_live_but_the_stored_log_is_exact(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=1)
    shipper = cluster.workers[0].shipper
    assert shipper is not None
    shipper.drop = lambda record: record.stream == "stdout" and record.seq % 2 == 1
    job_id = await cluster.client.submit(JobSpec(type="RUN", data="chatty.py", payload=CHATTY, args=["30000"]))
    live = await follow(cluster.client, job_id)
    out, err = chatty_expected(30_000)
    assert live["stdout"] != out and len(live["stdout"]) < len(out)
    assert stored(cluster, job_id, "stdout") == out and stored(cluster, job_id, "stderr") == err
    run = (await cluster.client.status(job_id)).runs[-1]
    assert run.log_lost >= shipper.dropped > 0


async def test_logs_of_a_finished_job_and_of_an_unknown_one(cluster: Cluster) -> None:
    job_id = await cluster.client.submit(JobSpec(type="SHELL", data="echo hello; echo oops >&2"))
    await cluster.client.wait([job_id], timeout_s=10)
    chunks = []
    async with cluster.client.logs(job_id) as stream:
        chunks = [(chunk.stream, chunk.data) async for chunk in stream]
    assert chunks == [("stdout", b"hello\n"), ("stderr", b"oops\n")]
    with pytest.raises(RemoteError) as info:
        async with cluster.client.logs("TSK-nope"):
            pass
    assert info.value.code == "UNKNOWN_JOB"


async def test_with_a_token_a_forged_datagram_is_dropped(tmp_path: Path) -> None:
    token = "cluster-secret"
    settings = MasterSettings(**{**FAST_MASTER, "workspace": tmp_path / "m", "perm_files": PERM_FILES, "token": token})
    async with Master(settings) as master:
        worker = Worker(
            WorkerSettings(**FAST_WORKER, master_port=master.port, port=18090, workspace=tmp_path / "w", token=token)
        )
        await worker.start()
        client = await TitanClient.connect(ClientSettings(port=master.port, token=token))
        try:
            await wait_until(worker.registered.is_set, what="worker registered")
            job_id = await client.submit(JobSpec(type="SHELL", data="echo start; sleep 30", max_attempts=1))
            assert master.logs is not None
            await wait_until(lambda: master.logs is not None and master.logs.counts["received"] > 0, what="live log")
            forged = LogRecord(job_id, 1, "stdout", 1000, b"forged!\n", 10_000, mac=b"\x00" * 32)
            proper = LogRecord(job_id, 1, "stdout", 1001, b"", 0)
            proper = LogRecord(job_id, 1, "stdout", 1001, b"", 0, log_record_mac(log_key(token), proper))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(encode_log_record(forged), ("127.0.0.1", master.port))
                sock.sendto(encode_log_record(proper), ("127.0.0.1", master.port))
                sock.sendto(encode_log_record(proper), ("127.0.0.1", master.port))  # a replay
            await wait_until(lambda: master.logs is not None and master.logs.counts["replayed"] == 1, what="replay")
            assert master.logs.counts["forged"] == 1
            await client.cancel(job_id)
            live_copy = tmp_path / "m" / "jobs" / job_id / "attempt-1" / "stdout"
            assert b"forged" not in live_copy.read_bytes()
        finally:
            await client.aclose()
            await worker.aclose()


async def test_a_payload_is_shipped_once_per_worker(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=1)
    size = (PERM_FILES / "calc.py").stat().st_size
    first = await cluster.client.submit(JobSpec(type="RUN", data="calc.py"))
    await cluster.client.wait([first], timeout_s=10)
    extra = (await cluster.client.stats()).extra
    assert (extra["payload_bytes_shipped"], extra["payload_bytes_spared"]) == (size, 0)
    second = await cluster.client.submit(JobSpec(type="RUN", data="calc.py"))
    (job,) = await cluster.client.wait([second], timeout_s=10)
    assert job.state == "COMPLETED"
    extra = (await cluster.client.stats()).extra
    assert (extra["payload_bytes_shipped"], extra["payload_bytes_spared"]) == (size, size)  # no bytes the 2nd time


async def test_a_restarted_worker_advertises_its_cache(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=1)
    first = await cluster.client.submit(JobSpec(type="RUN", data="calc.py"))
    await cluster.client.wait([first], timeout_s=10)
    await cluster.workers.pop().aclose()
    await cluster.add_worker(18081, capacity=2)  # same workspace, so the same cache
    second = await cluster.client.submit(JobSpec(type="RUN", data="calc.py"))
    (job,) = await cluster.client.wait([second], timeout_s=10)
    assert job.state == "COMPLETED"
    assert (await cluster.client.stats()).extra["payload_bytes_spared"] > 0


async def test_refused_names_each_get_their_error(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    perm = tmp_path / "perm"
    perm.mkdir()
    (perm / "ok.py").write_text("print('ok')\n")
    (perm / "big.bin").write_bytes(b"\0" * 2048)
    (tmp_path / "secret.py").write_text("print('secret')\n")
    os.symlink(tmp_path / "secret.py", perm / "escape.py")
    os.symlink("ok.py", perm / "inside.py")  # a symlink that stays inside is fine
    cluster = await make_cluster(n_workers=0, perm_files=perm, max_payload_bytes=1024)
    await cluster.add_worker(18085, extra_env={"PATH": str(tmp_path / "no-java-here")})
    refused = {
        "../secret.py": "escapes perm_files/",
        "/etc/passwd": "absolute path",
        "escape.py": "symlink that points outside",
        "big.bin": "over the 1024-byte payload limit",
        "missing.py": "no file 'missing.py'",
        "app.jar": "no worker has Java",
    }
    (perm / "app.jar").write_bytes(b"PK")
    for name, message in refused.items():
        with pytest.raises(RemoteError) as info:
            await cluster.client.submit(JobSpec(type="RUN", data=name))
        assert info.value.code == "INVALID_JOB" and message in str(info.value), name
    with pytest.raises(RemoteError, match="over the 1024-byte limit"):
        await cluster.client.submit(JobSpec(type="RUN", data="big.py", payload=b"#" * 2048))
    ok = await cluster.client.submit(JobSpec(type="RUN", data="inside.py"))
    assert (await cluster.client.wait([ok], timeout_s=10))[0].state == "COMPLETED"


async def test_a_jar_runs_with_java_where_a_worker_has_it(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    perm = tmp_path / "perm"
    perm.mkdir()
    (perm / "app.jar").write_bytes(b"PK not really a jar")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_java = bin_dir / "java"
    fake_java.write_text('#!/bin/sh\necho "java $1 ${2##*/} $3"\n')
    fake_java.chmod(0o755)
    cluster = await make_cluster(n_workers=0, perm_files=perm)
    await cluster.add_worker(18085, extra_env={"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"})
    job_id = await cluster.client.submit(JobSpec(type="RUN", data="app.jar", args=["hi"]))
    (job,) = await cluster.client.wait([job_id], timeout_s=10)
    assert job.state == "COMPLETED" and "JAVA" in job.skills
    assert stored(cluster, job_id, "stdout") == b"java -jar app.jar hi\n"


async def test_gc_removes_old_finished_jobs_and_keeps_unfinished_ones(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=1)
    done = await cluster.client.submit(JobSpec(type="SHELL", data="echo done"))
    await cluster.client.wait([done], timeout_s=10)
    running = await cluster.client.submit(JobSpec(type="SHELL", data="echo running; sleep 30"))
    jobs_dir = cluster.master.settings.workspace / "jobs"
    await wait_until(lambda: (jobs_dir / running / "attempt-1" / "stdout").exists(), what="live log of the job")
    reply = await cluster.client.gc(older_than_s=3600)
    assert reply.removed == [] and (jobs_dir / done).exists()
    reply = await cluster.client.gc(older_than_s=0)
    assert reply.removed == [done] and reply.freed_bytes > 0
    assert not (jobs_dir / done).exists() and (jobs_dir / running).exists()
    await cluster.client.cancel(running)


async def test_after_gc_the_story_says_so_and_logs_and_outputs_say_why_they_are_gone(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(n_workers=1)
    job_id = await cluster.client.submit(JobSpec(type="SHELL", data='echo hi; echo x > "$TITAN_OUTPUT_DIR/r.txt"'))
    await cluster.client.wait([job_id], timeout_s=10)
    quiet = await cluster.client.submit(JobSpec(type="SHELL", data="true"))
    await cluster.client.wait([quiet], timeout_s=10)
    assert (await cluster.client.gc(older_than_s=0)).removed == [job_id]
    job = await cluster.client.status(job_id)
    assert job.history[-1].stimulus == "logs and outputs removed by titan gc"
    with pytest.raises(RemoteError, match=f"the outputs of {job_id} were removed by titan gc"):
        await cluster.client.outputs(job_id)
    with pytest.raises(RemoteError, match=f"the logs of {job_id} were removed by titan gc"):
        async with cluster.client.logs(job_id) as stream:
            async for _ in stream:
                pass
    async with cluster.client.logs(quiet) as stream:  # a job that printed nothing still reads as empty
        assert [chunk async for chunk in stream if chunk.data] == []


async def test_an_earlier_attempts_log_is_read_by_its_number(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=1)
    spec = JobSpec(
        type="SHELL",
        data='echo "try $TITAN_ATTEMPT"; [ "$TITAN_ATTEMPT" -ge 2 ]',
        max_attempts=2,
        backoff_base_s=0.01,
    )
    job_id = await cluster.client.submit(spec)
    (job,) = await cluster.client.wait([job_id], timeout_s=30)
    assert job.state == "COMPLETED" and job.attempts == 2

    async def read(attempt: int | None) -> bytes:
        async with cluster.client.logs(job_id, attempt=attempt) as stream:
            return b"".join([chunk.data async for chunk in stream])

    assert (await read(1), await read(2), await read(None)) == (b"try 1\n", b"try 2\n", b"try 2\n")
    with pytest.raises(RemoteError, match=f"{job_id} has no attempt 3: it has attempts 1 to 2"):
        await read(3)
