"""The job record and its wire view."""

from __future__ import annotations

import dataclasses
import random

from protocol import JobInfo, JobSpec
from titan.jobs import Job, JobState, check_job_id, new_job_id, transition


def test_generated_ids_look_like_tsk_and_eight_hex_digits() -> None:
    rng = random.Random(1)
    ids = {new_job_id(rng) for _ in range(100)}
    assert len(ids) == 100
    for job_id in ids:
        assert job_id.startswith("TSK-") and len(job_id) == 12
        int(job_id[4:], 16)


def test_job_ids_that_would_escape_a_folder_are_refused() -> None:
    assert check_job_id("RUN_CALC") is None
    assert check_job_id("TSK-1a2b3c4d") is None
    for bad in ("../x", "a/b", "", ".hidden", "-x", "x" * 65):
        assert check_job_id(bad) is not None


def test_to_info_carries_spec_runtime_and_story() -> None:
    spec = JobSpec(type="shell", data="echo hi", args=["a"], priority=5, delay_ms=10, deps=[], skills=["gpu"])
    job = Job.from_spec(
        spec, job_id="J", seq=3, now=50.0, state=JobState.PENDING, run_kind="SHELL", run_data="echo hi", run_args=["a"]
    )
    transition(job, JobState.SCHEDULED, stimulus="dispatch", now=51.0, worker="w-1", worker_name="[8081]")
    info = job.to_info()
    assert isinstance(info, JobInfo)
    assert (info.id, info.type, info.state, info.priority, info.attempts, info.worker) == (
        "J",
        "SHELL",
        "SCHEDULED",
        5,
        1,
        "[8081]",
    )
    assert info.skills == ["GPU"]
    assert [(h.start, h.finish, h.stimulus) for h in info.history] == [
        ("NEW", "PENDING", "submit"),
        ("PENDING", "SCHEDULED", "dispatch"),
    ]
    # the wire round trip keeps everything
    assert JobInfo.from_wire(info.to_wire()) == info


def _job(spec: JobSpec, **runtime: object) -> Job:
    job = Job.from_spec(
        spec, job_id="J", seq=3, now=50.0, state=JobState.PENDING, run_kind="SHELL", run_data=spec.data, run_args=()
    )
    for name, value in runtime.items():
        setattr(job, name, value)
    return job


def test_info_wire_is_to_info_on_the_wire_for_a_fresh_job() -> None:
    job = _job(JobSpec(type="SHELL", data="true"))
    assert job.info_wire() == job.to_info().to_wire()
    assert JobInfo.from_wire(job.info_wire()) == job.to_info()


def test_info_wire_is_to_info_on_the_wire_with_every_field_set() -> None:
    spec = JobSpec(
        type="DEPLOY",
        data="app.py",
        args=["--x", "1"],
        priority=7,
        delay_ms=250,
        deps=["A", "B"],
        max_attempts=4,
        timeout_s=9.5,
        memory_mb=512,
        skills=["gpu", "GENERAL"],
        affinity=True,
    )
    job = _job(spec, dag="DAG-1", restarts=2, service_up=True, retry_base=1)
    transition(job, JobState.SCHEDULED, stimulus="dispatch", now=51.0, worker="w-1", worker_name="[8081]")
    transition(job, JobState.RUNNING, stimulus="started", now=52.0)
    transition(job, JobState.FAILED, stimulus="failed", now=53.0, exit_code=3, error="exit code 3", due=54.0)
    job.runs[-1].outputs = ["a.txt"]
    job.runs[-1].backoff_s = 1.0
    transition(job, JobState.PENDING, stimulus="retry", now=54.0)
    transition(job, JobState.SCHEDULED, stimulus="dispatch", now=55.0, worker="w-1", worker_name="[8081]")
    transition(job, JobState.RUNNING, stimulus="started", now=56.0)
    transition(job, JobState.FAILED, stimulus="failed", now=57.0, exit_code=1, error="exit code 1")
    transition(job, JobState.DEAD, stimulus="out of attempts", now=57.0)
    wire = job.info_wire()
    assert wire == job.to_info().to_wire()
    # every field of JobInfo was set away from its default, so each one is compared above
    assert set(wire) == {f.name for f in dataclasses.fields(JobInfo)}
    assert set(wire["runs"][0]) >= {"worker", "started_at", "finished_at", "exit_code", "error", "backoff_s", "outputs"}
    assert JobInfo.from_wire(wire) == job.to_info()
