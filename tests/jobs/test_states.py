"""The transition table: every allowed pair does its bookkeeping, every other pair is refused."""

from __future__ import annotations

import itertools

import pytest

from protocol import JobSpec
from titan.errors import InvalidTransition
from titan.jobs import (
    FINAL_STATES,
    TRANSITIONS,
    Assign,
    Delay,
    Enqueue,
    Job,
    JobFinished,
    JobState,
    ReleaseDependants,
    SendTask,
    StopTask,
    Unassign,
    transition,
)

S = JobState
REFUSED = [pair for pair in itertools.product(JobState, JobState) if pair not in TRANSITIONS]


def make_job(state: JobState, *, worker: str | None = None, attempts: int = 0, story_limit: int = 50) -> Job:
    job = Job.from_spec(
        JobSpec(type="SHELL", data="true"),
        job_id="J1",
        seq=1,
        now=100.0,
        state=state,
        run_kind="SHELL",
        run_data="true",
        run_args=[],
        story_limit=story_limit,
    )
    job.worker = worker
    job.worker_name = f"[{worker}]" if worker else None
    job.attempts = attempts
    return job


@pytest.mark.parametrize(("start", "finish"), REFUSED, ids=[f"{a.value}->{b.value}" for a, b in REFUSED])
def test_pairs_outside_the_table_are_refused_without_touching_the_job(start: JobState, finish: JobState) -> None:
    job = make_job(start, worker="w1", attempts=1)
    story_before = list(job.story)
    with pytest.raises(InvalidTransition) as info:
        transition(job, finish, stimulus="test", now=101.0, worker="w1")
    assert (info.value.job_id, info.value.start, info.value.finish) == ("J1", start, finish)
    assert job.state is start
    assert list(job.story) == story_before


def test_the_table_has_the_designed_shape() -> None:
    assert len(TRANSITIONS) == 22
    # final states never change, except DEAD which RETRY requeues and the SKIPPED jobs it un-skips
    for start, finish in TRANSITIONS:
        if start in FINAL_STATES:
            assert (start, finish) in ((S.DEAD, S.PENDING), (S.SKIPPED, S.BLOCKED))
    # every non-final state can be cancelled
    for state in set(JobState) - FINAL_STATES:
        assert (state, S.CANCELLED) in TRANSITIONS
    assert (S.RUNNING, S.STOPPED) in TRANSITIONS
    assert {(S.BLOCKED, S.PENDING), (S.BLOCKED, S.SKIPPED), (S.SCHEDULED, S.PENDING), (S.RUNNING, S.PENDING)} <= set(
        TRANSITIONS
    )


def test_every_allowed_pair_is_recorded_in_the_story() -> None:
    for start, finish in TRANSITIONS:
        job = make_job(start, worker="w1", attempts=1)
        transition(job, finish, stimulus=f"go {finish.value}", now=105.0, worker="w1", worker_name="[1]", due=200.0)
        assert job.state is finish
        last = job.story[-1]
        assert (last.start, last.finish, last.stimulus, last.t) == (start, finish, f"go {finish.value}", 105.0)


def test_story_is_bounded() -> None:
    job = make_job(S.PENDING, story_limit=3)
    for i in range(5):
        job.note(f"n{i}", float(i))
    assert [step.stimulus for step in job.story] == ["n2", "n3", "n4"]


def test_schedule_numbers_the_attempt_and_asks_to_send_it() -> None:
    job = make_job(S.PENDING)
    effects = transition(job, S.SCHEDULED, stimulus="dispatch", now=1.0, worker="w1", worker_name="[8081]")
    assert effects == [Assign("w1", job), SendTask("w1", job)]
    assert (job.attempts, job.worker, job.worker_name) == (1, "w1", "[8081]")


def test_schedule_without_a_worker_is_a_bug() -> None:
    with pytest.raises(ValueError):
        transition(make_job(S.PENDING), S.SCHEDULED, stimulus="dispatch", now=1.0)


def test_start_stamps_started_at() -> None:
    job = make_job(S.SCHEDULED, worker="w1", attempts=1)
    assert transition(job, S.RUNNING, stimulus="started", now=7.0) == []
    assert job.started_at == 7.0


def test_complete_frees_the_worker_and_releases_dependants() -> None:
    job = make_job(S.RUNNING, worker="w1", attempts=1)
    effects = transition(job, S.COMPLETED, stimulus="exit 0", now=9.0, exit_code=0)
    assert effects == [Unassign("w1", job), JobFinished(job), ReleaseDependants("J1", satisfied=True)]
    assert (job.exit_code, job.finished_at, job.worker_name) == (0, 9.0, "[w1]")


def test_fail_with_backoff_parks_the_job() -> None:
    job = make_job(S.RUNNING, worker="w1", attempts=1)
    effects = transition(job, S.FAILED, stimulus="exit 3", now=9.0, exit_code=3, due=11.5)
    assert effects == [Unassign("w1", job), Delay(job, 11.5)]
    assert (job.exit_code, job.error, job.due) == (3, "exit code 3", 11.5)


def test_fail_keeps_the_workers_error_text() -> None:
    job = make_job(S.SCHEDULED, worker="w1", attempts=1)
    transition(job, S.FAILED, stimulus="spawn failed", now=9.0, error="timed out after 0.3s")
    assert job.error == "timed out after 0.3s"


def test_dead_letter_finishes_and_skips_dependants() -> None:
    job = make_job(S.FAILED, worker="w1", attempts=3)
    effects = transition(job, S.DEAD, stimulus="out of attempts", now=9.0)
    assert effects == [JobFinished(job), ReleaseDependants("J1", satisfied=False, reason="dependency J1 is DEAD")]


def test_worker_lost_requeues_and_frees_the_slot() -> None:
    job = make_job(S.RUNNING, worker="w1", attempts=1)
    effects = transition(job, S.PENDING, stimulus="worker lost", now=9.0, error="worker lost")
    assert effects == [Unassign("w1", job), Enqueue(job)]
    assert job.attempts == 1 and job.error == "worker lost"


def test_retry_from_dead_letter_gives_fresh_attempts_but_keeps_numbering() -> None:
    job = make_job(S.DEAD, worker="w1", attempts=3)
    job.max_attempts = 3
    assert job.attempts_left == 0
    effects = transition(job, S.PENDING, stimulus="retry", now=9.0)
    assert effects == [Enqueue(job)]
    assert job.attempts_left == 3 and job.attempts == 3


@pytest.mark.parametrize("start", [S.SCHEDULED, S.RUNNING])
def test_cancel_of_an_active_job_stops_it_on_its_worker(start: JobState) -> None:
    job = make_job(start, worker="w1", attempts=2)
    effects = transition(job, S.CANCELLED, stimulus="cancel", now=9.0)
    assert effects[:3] == [StopTask("w1", "J1", 2, "cancelled"), Unassign("w1", job), JobFinished(job)]


@pytest.mark.parametrize("start", [S.BLOCKED, S.DELAYED, S.PENDING, S.FAILED])
def test_cancel_of_an_idle_job_sends_nothing(start: JobState) -> None:
    job = make_job(start)
    effects = transition(job, S.CANCELLED, stimulus="cancel", now=9.0)
    assert not any(isinstance(e, (StopTask, Unassign)) for e in effects)
    assert JobFinished(job) in effects


def test_service_stop_kills_it() -> None:
    job = make_job(S.RUNNING, worker="w1", attempts=1)
    effects = transition(job, S.STOPPED, stimulus="stop", now=9.0)
    assert StopTask("w1", "J1", 1, "stopped") in effects


def test_blocked_job_is_skipped_with_the_reason() -> None:
    job = make_job(S.BLOCKED)
    effects = transition(job, S.SKIPPED, stimulus="dep", now=9.0, error="dependency A is DEAD")
    assert job.error == "dependency A is DEAD"
    assert ReleaseDependants("J1", satisfied=False, reason="dependency J1 is SKIPPED") in effects


def test_blocked_job_released_into_its_remaining_delay() -> None:
    job = make_job(S.BLOCKED)
    assert transition(job, S.DELAYED, stimulus="deps done", now=9.0, due=12.0) == [Delay(job, 12.0)]
