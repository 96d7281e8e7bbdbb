"""DAGs end to end, in process: a real master, real workers, real OS processes."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from protocol import JobInfo, JobSpec
from tests.conftest import ClusterFactory
from tests.support import wait_until
from titan.cli.demo import render_mandelbrot
from titan.cli.main import main
from titan.client import WaitTimeout
from titan.errors import RemoteError


def shell(job_id: str, command: str, *deps: str, **fields: object) -> JobSpec:
    return JobSpec(type="SHELL", data=command, id=job_id, deps=list(deps), **fields)  # type: ignore[arg-type]


def by_id(jobs: list[JobInfo]) -> dict[str, JobInfo]:
    return {job.id: job for job in jobs}


def ran_after(job: JobInfo, *parents: JobInfo) -> bool:
    assert job.started_at is not None
    return all(p.finished_at is not None and p.finished_at <= job.started_at for p in parents)


async def test_diamond_of_real_processes_runs_in_dependency_order(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=2, capacity=2)
    ids = await cluster.client.submit_dag(
        [
            shell("A", "sleep 0.05"),
            shell("B", "sleep 0.05", "A"),
            shell("C", "sleep 0.05", "A"),
            shell("D", "true", "B", "C"),
        ]
    )
    jobs = by_id(await cluster.client.wait(ids, timeout_s=30))
    assert {job.state for job in jobs.values()} == {"COMPLETED"}
    a, b, c, d = (jobs[i] for i in "ABCD")
    assert ran_after(b, a) and ran_after(c, a) and ran_after(d, b, c)
    assert a.dag is not None and a.dag == d.dag


async def test_delay_and_dependencies_combine(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=1)
    ids = await cluster.client.submit_dag([shell("P", "true"), shell("LATE", "true", "P", delay_ms=300)])
    parent, late = await cluster.client.wait(ids, timeout_s=30)
    assert late.state == "COMPLETED" and late.started_at is not None
    assert late.started_at >= late.submitted_at + 0.3  # its own time, though P was done long before
    assert "DELAYED" in [step.finish for step in late.history]


async def test_flaky_job_completes_on_attempt_three_after_backing_off(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=1)
    job_id = await cluster.client.submit(
        JobSpec(type="RUN", data="flaky.py", args=["2"], max_attempts=3, backoff_base_s=0.05, backoff_cap_s=0.2)
    )
    (job,) = await cluster.client.wait([job_id], timeout_s=30)
    assert (job.state, job.attempts) == ("COMPLETED", 3)
    assert [run.state for run in job.runs] == ["FAILED", "FAILED", "COMPLETED"]
    for failed, following in zip(job.runs, job.runs[1:], strict=False):
        assert failed.exit_code == 1 and failed.backoff_s is not None and failed.backoff_s > 0
        assert following.started_at is not None and failed.finished_at is not None
        assert following.started_at - failed.finished_at >= failed.backoff_s  # the backoff was waited out
    # each attempt has its own folder with its own log in the master's workspace (written just after)
    folder = cluster.workspace / "master" / "jobs" / job_id
    await wait_until(lambda: (folder / "attempt-3" / "result.json").exists(), what="attempt 3 stored")
    logs = sorted(folder.glob("attempt-*/stderr"))
    assert len(logs) == 3
    assert "attempt 1 fails" in logs[0].read_text() and "attempt 2 fails" in logs[1].read_text()


async def test_dead_job_skips_its_dependants_and_retry_brings_them_back(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=2)
    client = cluster.client
    # flaky.py 2 with two attempts: DEAD; after RETRY its attempt 3 succeeds
    ids = await client.submit_dag(
        [
            JobSpec(type="RUN", data="flaky.py", id="FLAKY", args=["2"], max_attempts=2, backoff_base_s=0.01),
            shell("AFTER", "true", "FLAKY"),
            shell("LAST", "true", "AFTER"),
        ]
    )
    jobs = by_id(await client.wait(ids, timeout_s=30))
    assert [jobs[i].state for i in ids] == ["DEAD", "SKIPPED", "SKIPPED"]
    assert jobs["AFTER"].error == "dependency FLAKY is DEAD"
    assert jobs["LAST"].error == "dependency AFTER is SKIPPED"
    dead = await client.list_jobs("DEAD")
    assert [job.id for job in dead] == ["FLAKY"] and dead[0].error == "exit code 1"
    retried = await client.retry("FLAKY")
    assert retried.state in ("PENDING", "SCHEDULED", "RUNNING")
    jobs = by_id(await client.wait(ids, timeout_s=30))
    assert [jobs[i].state for i in ids] == ["COMPLETED", "COMPLETED", "COMPLETED"]
    assert jobs["FLAKY"].attempts == 3 and ran_after(jobs["AFTER"], jobs["FLAKY"])


async def test_outputs_flow_from_two_parents_on_different_workers_into_a_child(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=2, capacity=1)
    ids = await cluster.client.submit_dag(
        [
            shell("LEFT", 'echo left > "$TITAN_OUTPUT_DIR/part.txt"; sleep 0.2'),
            shell("RIGHT", 'mkdir "$TITAN_OUTPUT_DIR/sub"; echo right > "$TITAN_OUTPUT_DIR/sub/part.txt"; sleep 0.2'),
            shell(
                "JOIN",
                'cat "$TITAN_INPUT_DIR/LEFT/part.txt" "$TITAN_INPUT_DIR/RIGHT/sub/part.txt" > "$TITAN_OUTPUT_DIR/all"',
                "LEFT",
                "RIGHT",
            ),
        ]
    )
    jobs = by_id(await cluster.client.wait(ids, timeout_s=30))
    assert [jobs[i].state for i in ids] == ["COMPLETED"] * 3, jobs
    assert jobs["LEFT"].worker != jobs["RIGHT"].worker
    assert jobs["RIGHT"].runs[-1].outputs == ["sub/part.txt"]
    kept = cluster.workspace / "master" / "jobs" / "LEFT" / "attempt-1" / "outputs" / "part.txt"
    assert kept.read_text() == "left\n"
    reply = await cluster.client.outputs("JOIN")
    assert reply.attempt == 1 and reply.files == {"all": b"left\nright\n"}


async def test_outputs_over_the_master_limit_fail_the_job_and_are_not_kept(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=1, max_output_bytes=100)
    job_id = await cluster.client.submit(
        JobSpec(type="SHELL", data='head -c 1000 /dev/zero > "$TITAN_OUTPUT_DIR/big"', max_attempts=1)
    )
    (job,) = await cluster.client.wait([job_id], timeout_s=30)
    assert job.state == "DEAD"
    assert job.error == "outputs are 1000 bytes, over the 100-byte limit per job"
    assert not list((cluster.workspace / "master" / "jobs").glob(f"{job_id}/attempt-*/outputs/*"))


async def test_sink_of_700_roots_submitted_while_they_run_completes(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=2, capacity=8)
    client = cluster.client
    roots = await client.submit_dag([shell(f"R{i}", "true") for i in range(700)])
    await client.wait(roots[:50], timeout_s=30)  # some are done, most still queued or running
    [sink] = await client.submit_dag([shell("SINK", "true", *roots)])
    (job,) = await client.wait([sink], timeout_s=60)
    assert job.state == "COMPLETED"


async def test_mandelbrot_demo_renders_a_png_on_the_cluster(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    cluster = await make_cluster(n_workers=2, capacity=2)
    out = tmp_path / "m.png"
    args = argparse.Namespace(size=48, tiles=4, iterations=50, out=out)
    console = Console(file=io.StringIO(), width=100)
    result = await render_mandelbrot(cluster.client, args, console)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and b"IHDR" in data[:20]
    assert int.from_bytes(data[16:20], "big") == 48 and int.from_bytes(data[20:24], "big") == 48
    assert sum(result.tiles_per_worker.values()) == 4
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "wrote" in shown
    assert re.search(r"stitched by MANDEL-[0-9a-f]{6}-stitch on \[", shown)  # the id STATUS wants


async def test_a_dag_sent_in_parts_is_refused_whole_or_run_whole(
    make_cluster: ClusterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("titan.client._client.DAG_PART_JOBS", 3)
    cluster = await make_cluster(n_workers=1, capacity=2)

    def chain(prefix: str, n: int, first_deps: list[str]) -> list[JobSpec]:
        return [
            JobSpec(type="SHELL", data="true", id=f"{prefix}{i}", deps=[f"{prefix}{i - 1}"] if i else first_deps)
            for i in range(n)
        ]

    # a cycle through three parts: C0 waits on the last job, which comes in the last part
    with pytest.raises(RemoteError, match="cycle"):
        await cluster.client.submit_dag(chain("C", 8, ["C7"]))
    assert await cluster.client.list_jobs() == []
    ids = await cluster.client.submit_dag(chain("OK", 8, []))
    (last,) = await cluster.client.wait([ids[-1]], timeout_s=30)
    assert last.state == "COMPLETED" and ids == [f"OK{i}" for i in range(8)]


async def test_titan_outputs_writes_the_files_and_a_bad_destination_is_one_line(
    make_cluster: ClusterFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = await make_cluster(n_workers=1)
    job_id = await cluster.client.submit(JobSpec(type="SHELL", data='echo hi > "$TITAN_OUTPUT_DIR/r.txt"'))
    (job,) = await cluster.client.wait([job_id], timeout_s=30)
    assert job.state == "COMPLETED"
    master = f"127.0.0.1:{cluster.master.port}"
    assert await asyncio.to_thread(main, ["--master", master, "outputs", job_id, "--dest", str(tmp_path)]) == 0
    assert (tmp_path / job_id / "r.txt").read_text() == "hi\n"
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["--master", master, "outputs", job_id, "--dest", str(blocked)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err and "Not a directory" in err


async def test_a_dag_longer_than_a_page_is_listed_and_awaited_whole(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=0)  # nothing runs: every job waits, PENDING
    client = cluster.client
    jobs = [shell(f"P{i:04d}", "true") for i in range(2_600)]
    reply = await client.submit_dag_info(jobs)
    listed = await client.dag_jobs(reply.dag_id)
    assert [job.id for job in listed] == [job.id for job in jobs]  # every page, in submission order, once
    assert [job.id for job in await client.list_jobs("PENDING", limit=1_500)] == [
        f"P{i:04d}" for i in range(2_599, 1_099, -1)
    ]  # newest first, over two pages
    await client.cancel(reply.dag_id, dag=True)
    waited = await client.wait([job.id for job in jobs], timeout_s=30)
    assert len(waited) == 2_600 and {job.state for job in waited} == {"CANCELLED"}


async def test_an_answer_over_the_frame_limit_is_refused_with_a_reason(
    make_cluster: ClusterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from titan.master import client_handlers

    cluster = await make_cluster(n_workers=0)
    await cluster.client.submit_dag([shell(f"Q{i}", "true") for i in range(200)])
    monkeypatch.setattr(client_handlers, "DEFAULT_MAX_BODY", 10_000)  # 200 jobs are more than that
    with pytest.raises(RemoteError, match=r"the answer of 200 jobs would be \d+ bytes, over the 10000-byte"):
        await cluster.client.list_jobs(limit=200)
    assert len(await cluster.client.list_jobs(limit=20)) == 20  # the connection is still good


async def test_a_wait_on_a_long_dag_that_times_out_says_so_in_one_short_line(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=0)
    jobs = [shell(f"W{i:04d}", "true") for i in range(2_100)]
    await cluster.client.submit_dag(jobs)
    with pytest.raises(WaitTimeout) as raised:
        await cluster.client.wait([job.id for job in jobs], timeout_s=0.2)
    assert len(raised.value.pending) == 2_100 and len(raised.value.jobs) == 2_100  # every page's state
    assert str(raised.value).endswith("W0009 and 2090 more") and len(str(raised.value)) < 200
