"""The job record and its wire view."""

from __future__ import annotations

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
