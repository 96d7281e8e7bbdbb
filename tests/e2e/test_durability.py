"""Nothing acknowledged is lost: real master and worker processes, killed for real."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.cluster import LocalCluster
from protocol import JobInfo, JobSpec
from tests.support import wait_until
from titan.cli.logview import LogPiece, read_log
from titan.cli.rewait import through_restarts
from titan.client import TitanClient
from titan.config import ClientSettings
from titan.errors import PeerClosed, TitanError

pytestmark = pytest.mark.slow

# Workers must re-register within the heartbeat timeout after a master restart,
# and their reconnect backoff grows while it is down: keep the timeout generous here.
PATIENT: dict[str, list[str]] = {
    "master_args": ["--heartbeat-timeout", "10", "--heartbeat-interval", "0.2"],
    "worker_args": ["--heartbeat-interval", "0.2"],
}
FAST: dict[str, list[str]] = {
    "master_args": ["--heartbeat-timeout", "0.8", "--heartbeat-interval", "0.1"],
    "worker_args": ["--heartbeat-interval", "0.1"],
}


async def connect(cluster: LocalCluster) -> TitanClient:
    return await TitanClient.connect(ClientSettings(host=cluster.host, port=cluster.port, request_timeout_s=60))


async def all_jobs(client: TitanClient) -> list[JobInfo]:
    return await client.list_jobs(limit=1_000_000)


async def now(client: TitanClient, ids: list[str]) -> list[JobInfo]:
    return [await client.status(job_id) for job_id in ids]


def descendants(pid: int) -> set[int]:
    """Live processes below ``pid`` (the worker's task processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.add(child)
            stack.append(child)
    return found


# ------------------------------------------------------------------ master crash during a submission storm


async def submit_until_killed(
    cluster: LocalCluster, total: int, kill_when: Callable[[int], bool], in_flight: int = 64
) -> list[str]:
    """Submit ``total`` jobs as fast as possible; SIGKILL the master once ``kill_when(acked)``; return the acked ids."""
    acked: list[str] = []
    killed = asyncio.Event()
    spec = JobSpec(type="SHELL", data="true")
    client = await TitanClient.connect(ClientSettings(port=cluster.port, request_timeout_s=60))
    queue = iter(range(total))

    async def submitter() -> None:
        for _ in queue:
            if killed.is_set():
                return
            try:
                acked.append(await client.submit(spec))
            except (TitanError, OSError):
                return  # the master died under this request: not acknowledged
            if not killed.is_set() and kill_when(len(acked)):
                killed.set()
                await cluster.kill_master()

    try:
        await asyncio.gather(*(submitter() for _ in range(in_flight)))
    finally:
        with contextlib.suppress(TitanError, OSError):
            await client.aclose()
    assert killed.is_set(), "the master was never killed"
    return acked


async def check_every_acked_job_survives(cluster: LocalCluster, acked: list[str]) -> None:
    await cluster.start_master()
    async with await connect(cluster) as client:
        jobs = await all_jobs(client)
        ids = [job.id for job in jobs]
        assert len(ids) == len(set(ids))
        missing = set(acked) - set(ids)
        assert not missing, f"{len(missing)} acknowledged jobs lost, e.g. {sorted(missing)[:3]}"
        done = await client.wait(acked, timeout_s=120)
        assert {job.state for job in done} == {"COMPLETED"}
        stats = await client.stats()
        assert stats.extra["recovery_jobs"] >= len(acked)


@pytest.mark.parametrize("kill_at", [300, 2500])
async def test_master_killed_during_a_submission_storm_loses_no_acknowledged_job(kill_at: int) -> None:
    async with LocalCluster(workers=2, capacity=2, **PATIENT) as cluster:
        acked = await submit_until_killed(cluster, 5000, lambda n: n >= kill_at)
        assert len(acked) >= kill_at
        await check_every_acked_job_survives(cluster, acked)


async def test_master_killed_while_writing_a_snapshot_loses_no_acknowledged_job() -> None:
    args = {**PATIENT, "master_args": [*PATIENT["master_args"], "--snapshot-every", "400"]}
    async with LocalCluster(workers=2, capacity=2, **args) as cluster:
        wal = cluster.workspace / "master" / "wal"

        def snapshot_in_progress(acked: int) -> bool:
            return acked > 1000 and any(name.endswith(".tmp") for name in os.listdir(wal))

        acked = await submit_until_killed(cluster, 5000, snapshot_in_progress)
        await check_every_acked_job_survives(cluster, acked)
        assert list(wal.glob("snapshot-*.msgpack")), "no snapshot was ever completed"


# ------------------------------------------------------------------ master crash while workers run


async def test_jobs_that_finish_while_the_master_is_down_are_recorded_once_not_rerun() -> None:
    async with LocalCluster(workers=2, capacity=2, **PATIENT) as cluster:
        async with await connect(cluster) as client:
            ids = [await client.submit(JobSpec(type="SHELL", data="sleep 1")) for _ in range(4)]

            async def all_running() -> bool:
                return all(job.state == "RUNNING" for job in await now(client, ids))

            await wait_until(all_running, timeout_s=30, what="4 jobs running")
        await cluster.kill_master()
        workers = [proc.pid for proc in cluster.procs[1:3]]
        await wait_until(
            lambda: not any(descendants(pid) for pid in workers), timeout_s=30, what="the jobs to end with no master"
        )
        await cluster.start_master()
        async with await connect(cluster) as client:
            jobs = await client.wait(ids, timeout_s=60)
            assert {job.state for job in jobs} == {"COMPLETED"}
            assert [job.attempts for job in jobs] == [1, 1, 1, 1]
            for job in jobs:
                finishes = [step for step in job.history if step.finish == "COMPLETED"]
                assert len(finishes) == 1 and "reported on reconnect" in finishes[0].stimulus
            stats = await client.stats()
            assert stats.completed == 4 and stats.failed == 0
        assert "recovered 4 jobs (4 scheduled or running" in cluster.master_log.read_text()


# ------------------------------------------------------------------ a damaged log


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
async def test_a_damaged_last_wal_record_is_reported_and_the_master_serves(damage: str) -> None:
    async with LocalCluster(workers=0, **FAST) as cluster:
        async with await connect(cluster) as client:
            ids = [await client.submit(JobSpec(type="SHELL", data=f"echo {i}")) for i in range(10)]
        await cluster.kill_master()
        segment = max((cluster.workspace / "master" / "wal").glob("wal-*.log"))
        data = bytearray(segment.read_bytes())
        if damage == "truncate":
            del data[-7:]
        else:
            data[-2] ^= 0x55
        segment.write_bytes(bytes(data))

        await cluster.start_master()
        async with await connect(cluster) as client:
            stats = await client.stats()
            assert "torn tail" in stats.extra["recovery_dropped"]
            assert stats.extra["recovery_jobs"] == 9
            assert {job.id for job in await all_jobs(client)} == set(ids[:9])
            assert (await client.submit(JobSpec(type="SHELL", data="true"))).startswith("TSK-")
        assert "DROPPED torn tail" in cluster.master_log.read_text()


# ------------------------------------------------------------------ workers that die, hang or are cut off


def first_attempt_hangs(marks: Path) -> JobSpec:
    """Sleeps for a long time on its first attempt only, so a rerun elsewhere finishes at once."""
    command = f'mkdir "{marks}/$TITAN_JOB_ID" 2>/dev/null && exec sleep 60; true'
    return JobSpec(type="SHELL", data=command, max_attempts=3)


async def held_by(client: TitanClient, ids: list[str], worker: str) -> list[str]:
    return [job.id for job in await now(client, ids) if job.state == "RUNNING" and job.worker == worker]


async def check_stale_attempt_is_ignored(client: TitanClient, victim_ids: list[str], victim: str) -> None:
    """The victim's jobs completed elsewhere; once it is back its stale reports are ignored."""
    jobs = await client.wait(victim_ids, timeout_s=60)
    for job in jobs:
        assert job.state == "COMPLETED" and job.attempts == 2 and job.worker != victim

    async def stale_report_ignored() -> bool:
        for job_id in victim_ids:
            job = await client.status(job_id)
            if not any("ignored FAILED of attempt 1" in step.stimulus for step in job.history):
                return False
        return True

    await wait_until(stale_report_ignored, timeout_s=60, what="the stale attempts' reports to be ignored")
    for job in await now(client, victim_ids):
        assert job.state == "COMPLETED" and job.attempts == 2  # never overwritten by the old attempt


async def test_sigkilled_worker_jobs_complete_elsewhere_and_it_rejoins(tmp_path: Path) -> None:
    async with LocalCluster(workers=2, capacity=2, **FAST) as cluster:
        async with await connect(cluster) as client:
            ids = [await client.submit(first_attempt_hangs(tmp_path)) for _ in range(2)]
            await wait_until(lambda: _running(client, ids, 2), timeout_s=30, what="one job on each worker")
            victim = cluster.procs[1]
            children = descendants(victim.pid)
            victim_ids = await held_by(client, ids, "[28081]")
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
            for pid in children:  # the orphaned task processes of a killed worker are not ours to keep
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            jobs = await client.wait(victim_ids, timeout_s=60)
            assert [(job.state, job.attempts, job.worker) for job in jobs] == [("COMPLETED", 2, "[28082]")]
            await cluster.start_worker(28081)  # the same worker id comes back empty-handed
            assert (await client.wait([await client.submit(JobSpec(type="SHELL", data="true"))], 30))[0].state == (
                "COMPLETED"
            )


async def _running(client: TitanClient, ids: list[str], n: int) -> bool:
    return sum(job.state == "RUNNING" for job in await now(client, ids)) == n


async def test_stopped_worker_is_lost_its_jobs_rerun_and_its_stale_reports_ignored(tmp_path: Path) -> None:
    async with LocalCluster(workers=2, capacity=2, **FAST) as cluster:
        async with await connect(cluster) as client:
            ids = [await client.submit(first_attempt_hangs(tmp_path)) for _ in range(2)]
            await wait_until(lambda: _running(client, ids, 2), timeout_s=30, what="one job on each worker")
            victim = cluster.procs[1]
            victim_ids = await held_by(client, ids, "[28081]")
            assert victim_ids
            os.kill(victim.pid, signal.SIGSTOP)  # hangs, keeps its socket open
            try:
                jobs = await client.wait(victim_ids, timeout_s=60)
                assert {job.state for job in jobs} == {"COMPLETED"}
            finally:
                os.kill(victim.pid, signal.SIGCONT)
            await check_stale_attempt_is_ignored(client, victim_ids, "[28081]")
            await wait_until(
                lambda: _healthy(client, "[28081]"), timeout_s=30, what="the stopped worker to register again"
            )


async def _healthy(client: TitanClient, name: str) -> bool:
    return any(w.name == name and w.health == "HEALTHY" for w in (await client.stats()).workers)


# ------------------------------------------------------------------ a worker behind a cut network link


async def ip(*args: str, check: bool = True) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.decode().strip()}")
    return proc.returncode or 0, out.decode()


@contextlib.asynccontextmanager
async def network_namespace(tag: str):  # type: ignore[no-untyped-def]
    """A namespace joined to this one by a veth pair on a private /30; removed on exit."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    name, host_if, ns_if = f"titan-{tag}", f"tv{tag}h", f"tv{tag}n"
    code, out = await ip("netns", "add", name, check=False)
    if code != 0:
        pytest.skip(f"the kernel refuses network namespaces here: {out.strip()}")
    try:
        _, used = await ip("-4", "addr")
        octet = next(n for n in range(16, 250) if f"10.231.{n}." not in used)
        host_ip, ns_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"
        code, out = await ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, check=False)
        if code != 0:
            pytest.skip(f"the kernel refuses veth pairs here: {out.strip()}")
        await ip("link", "set", ns_if, "netns", name)
        await ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        await ip("link", "set", host_if, "up")
        await ip("netns", "exec", name, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        await ip("netns", "exec", name, "ip", "link", "set", ns_if, "up")
        await ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name, host_ip, ns_if
    finally:
        await ip("netns", "del", name, check=False)  # takes the veth pair with it
        await ip("link", "del", host_if, check=False)


async def test_worker_behind_a_cut_link_is_lost_and_its_stale_reports_ignored(tmp_path: Path) -> None:
    tag = f"{os.getpid() % 100000}"
    async with network_namespace(tag) as (namespace, host_ip, ns_if):
        async with LocalCluster(workers=0, capacity=2, host=host_ip, **FAST) as cluster:
            await cluster.start_worker(28081, prefix=["ip", "netns", "exec", namespace])
            await cluster.start_worker(28082)
            async with await connect(cluster) as client:
                ids = [await client.submit(first_attempt_hangs(tmp_path)) for _ in range(2)]
                await wait_until(lambda: _running(client, ids, 2), timeout_s=30, what="one job on each worker")
                victim_ids = await held_by(client, ids, "[28081]")
                assert victim_ids
                cut = ["netns", "exec", namespace, "ip", "link", "set", ns_if]
                await ip(*cut, "down")
                try:
                    jobs = await client.wait(victim_ids, timeout_s=60)
                    assert {job.state for job in jobs} == {"COMPLETED"}
                finally:
                    await ip(*cut, "up")
                await check_stale_attempt_is_ignored(client, victim_ids, "[28081]")


# ------------------------------------------------------------------ a client waiting through a restart


async def test_a_wait_rides_out_a_master_restart(capsys: pytest.CaptureFixture[str]) -> None:
    async with LocalCluster(workers=1, capacity=1, **PATIENT) as cluster:
        async with await connect(cluster) as client:
            job_id = await client.submit(JobSpec(type="SHELL", data="sleep 1"))
            waiting = asyncio.ensure_future(
                through_restarts(client, lambda current, left: current.wait([job_id], timeout_s=left), 60)
            )
            async with await connect(cluster) as watcher:
                await wait_until(lambda: job_running(watcher, job_id), timeout_s=30, what="the job running")
            await cluster.kill_master()
            await cluster.start_master()
            (job,) = await asyncio.wait_for(waiting, 60)
            assert job.state == "COMPLETED"
            assert not client.is_open  # the first connection died with the master; a second one answered
    err = capsys.readouterr().err
    assert "lost the master" in err and "reconnected" in err


async def test_a_wait_gives_up_when_the_master_stays_away() -> None:
    async with LocalCluster(workers=0, **PATIENT) as cluster:
        async with await connect(cluster) as client:
            job_id = await client.submit(JobSpec(type="SHELL", data="true"))
            waiting = asyncio.ensure_future(
                through_restarts(client, lambda current, left: current.wait([job_id], timeout_s=left), None, window_s=1)
            )
            await cluster.kill_master()
            with pytest.raises(PeerClosed, match="did not come back within 1s"):
                await asyncio.wait_for(waiting, 30)


TICKER = b"""
import sys, time
for i in range(int(sys.argv[1])):
    print(f"line {i:04d}", flush=True)
    time.sleep(0.02)
"""


async def follow_a_ticker(client: TitanClient, lines: int) -> tuple[str, list[LogPiece], asyncio.Future[JobInfo]]:
    """Submit a job printing ``lines`` lines 20 ms apart and follow its log until 20 of them are shown."""
    job_id = await client.submit(JobSpec(type="RUN", data="ticker.py", payload=TICKER, args=[str(lines)]))
    pieces: list[LogPiece] = []
    following = asyncio.ensure_future(read_log(client, job_id, follow=True, show=pieces.append))
    await wait_until(lambda: sum(p.data.count(b"\n") for p in pieces) >= 20, timeout_s=30, what="20 lines")
    return job_id, pieces, following


async def test_a_followed_log_rides_out_a_master_restart_showing_no_byte_twice(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with LocalCluster(workers=1, capacity=1, **PATIENT) as cluster:
        async with await connect(cluster) as client:
            job_id, pieces, following = await follow_a_ticker(client, lines=150)
            await cluster.kill_master()
            await asyncio.sleep(0.3)  # lines go by while the master is away
            await cluster.start_master()
            job = await asyncio.wait_for(following, 60)
            assert job.state == "COMPLETED"
            async with await connect(cluster) as reader:
                async with reader.logs(job_id) as stream:
                    exact = b"".join([chunk.data async for chunk in stream if chunk.stream == "stdout"])
    assert exact == b"".join(f"line {i:04d}\n".encode() for i in range(150))
    notes = [(index, piece.note) for index, piece in enumerate(pieces) if piece.note]
    assert len(notes) <= 1  # at most the one hole the outage left, said once
    shown = b"".join(piece.data for piece in pieces)
    if notes:
        index, note = notes[0]
        missed = int(note.split()[0].strip("["))
        before = sum(len(piece.data) for piece in pieces[:index])
        assert missed > 0 and shown == exact[:before] + exact[before + missed :]
    else:
        assert shown == exact
    err = capsys.readouterr().err
    assert "lost the master" in err and "following the log again" in err


async def test_a_reader_who_comes_after_a_master_restart_gets_the_log_from_its_start() -> None:
    async with LocalCluster(workers=1, capacity=1, **PATIENT) as cluster:
        async with await connect(cluster) as client:
            job_id, _, following = await follow_a_ticker(client, lines=300)
            await cluster.kill_master()
            await cluster.start_master()
            async with await connect(cluster) as reader:
                assert await job_running(reader, job_id)  # 300 lines take 6 s: it has far to go
                late: list[LogPiece] = []
                job = await read_log(reader, job_id, follow=True, show=late.append)
            await asyncio.wait_for(following, 60)
    assert job.state == "COMPLETED"
    shown = b"".join(piece.data for piece in late)
    assert shown.startswith(b"line 0000\n")  # the restarted master's copy from before it started
    assert shown.endswith(b"line 0299\n")
    assert all("missing" in piece.note for piece in late if piece.note)  # a restart's hole is said, not hidden
    assert job.runs[-1].log_lost == 0  # datagrams sent before the restart are not counted as lost


async def job_running(client: TitanClient, job_id: str) -> bool:
    return (await client.status(job_id)).state == "RUNNING"
