"""MasterState, in distributed's style: build state, apply a stimulus, assert the effects."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from protocol import JobSpec, TaskRef
from titan.errors import InvalidTransition, UnknownJob, ValidationError
from titan.jobs import CloseWorker, JobFinished, JobState, SendTask, StopTask
from titan.master import DuplicateWorker

from .helpers import TIMEOUT_S, make_state, register, report, sent, shell

S = JobState


def test_submit_with_no_worker_waits_then_registration_dispatches() -> None:
    state = make_state()
    job, effects = state.submit(shell(), now=1.0)
    assert effects == [] and job.state is S.PENDING
    assert job.id.startswith("TSK-")
    _, effects = register(state, now=2.0)
    assert effects == [SendTask("w1", job)]
    assert (job.state, job.attempts, job.worker, job.worker_name) == (S.SCHEDULED, 1, "w1", "[8081]")


def test_submit_reaches_an_idle_worker_in_the_same_stimulus() -> None:
    state = make_state()
    register(state)
    job, effects = state.submit(shell(), now=1.0)
    assert sent(effects) == [("w1", job.id)]


def test_full_life_running_then_completed() -> None:
    state = make_state()
    register(state)
    job, _ = state.submit(shell(), now=1.0)
    assert state.task_status("w1", report(job, "RUNNING"), now=2.0) == []
    assert (job.state, job.started_at) == (S.RUNNING, 2.0)
    effects = state.task_status("w1", report(job, "COMPLETED", exit_code=0), now=3.0)
    assert effects == [JobFinished(job)]
    assert (job.state, job.exit_code, job.finished_at) == (S.COMPLETED, 0, 3.0)
    assert state.registry.get("w1").used_slots == 0  # type: ignore[union-attr]
    stats = state.stats(now=4.0)
    assert (stats.completed, stats.running, stats.queued) == (1, 0, 0)
    assert [(s.start, s.finish) for s in job.story] == [
        (None, S.PENDING),
        (S.PENDING, S.SCHEDULED),
        (S.SCHEDULED, S.RUNNING),
        (S.RUNNING, S.COMPLETED),
    ]


def test_completed_without_a_running_report_passes_through_running() -> None:
    state = make_state()
    register(state)
    job, _ = state.submit(shell(), now=1.0)
    state.task_status("w1", report(job, "COMPLETED", exit_code=0), now=2.0)
    assert [s.finish for s in job.story][-2:] == [S.RUNNING, S.COMPLETED]


@pytest.mark.parametrize(
    ("worker_start", "worker_end", "expected_start"),
    [
        (500.25, 500.75, 9.5),  # ran 0.5 s by the worker's clock, however far off that clock is
        (500.0, 600.0, 1.0),  # longer than since the dispatch: not before the dispatch
        (500.0, 400.0, 10.0),  # the worker's clock stepped back: no better guess than now
        (500.0, float("nan"), 10.0),
    ],
)
def test_a_final_report_without_running_dates_the_start_by_the_workers_own_measure(
    worker_start: float, worker_end: float, expected_start: float
) -> None:
    state = make_state()
    register(state)
    job, _ = state.submit(shell(), now=1.0)
    final = dataclasses.replace(report(job, "COMPLETED", exit_code=0), started_at=worker_start, finished_at=worker_end)
    state.task_status("w1", final, now=10.0)
    assert (job.started_at, job.finished_at) == (expected_start, 10.0)
    assert [step.t for step in job.story] == sorted(step.t for step in job.story)


def test_finishing_frees_a_slot_for_the_next_job() -> None:
    state = make_state()
    register(state, capacity=1)
    first, _ = state.submit(shell(), now=1.0)
    second, effects = state.submit(shell(), now=1.0)
    assert effects == [] and second.state is S.PENDING
    effects = state.task_status("w1", report(first, "COMPLETED", exit_code=0), now=2.0)
    assert effects == [JobFinished(first), SendTask("w1", second)]


def test_priority_beats_submission_order() -> None:
    state = make_state()
    low, _ = state.submit(shell(priority=1), now=1.0)
    high, _ = state.submit(shell(priority=9), now=2.0)
    same, _ = state.submit(shell(priority=1), now=3.0)
    _, effects = register(state, capacity=3)
    assert [job_id for _, job_id in sent(effects)] == [high.id, low.id, same.id]


def test_unplaceable_job_does_not_block_the_queue() -> None:
    state = make_state()
    register(state)
    gpu, _ = state.submit(shell(skills=["GPU"], priority=9), now=1.0)
    plain, effects = state.submit(shell(), now=2.0)
    assert sent(effects) == [("w1", plain.id)]
    assert gpu.state is S.PENDING
    _, effects = register(state, "w2", port=8082, skills=["GENERAL", "GPU"])
    assert sent(effects) == [("w2", gpu.id)]


def test_job_too_big_for_every_worker_waits_for_one() -> None:
    state = make_state()
    register(state, capacity=2)
    big, _ = state.submit(shell(slots=4), now=1.0)
    small, effects = state.submit(shell(), now=1.0)
    assert sent(effects) == [("w1", small.id)] and big.state is S.PENDING
    _, effects = register(state, "w2", port=8082, capacity=4)
    assert sent(effects) == [("w2", big.id)]
    assert state.registry.get("w2").used_slots == 4  # type: ignore[union-attr]


def test_memory_is_reserved_where_a_job_runs_and_given_back_when_it_ends() -> None:
    state = make_state()
    register(state, "small", port=8081, capacity=4, memory_mb=1000)
    register(state, "big", port=8082, capacity=4, memory_mb=4000)
    first, effects = state.submit(shell(memory_mb=2000), now=1.0)
    assert sent(effects) == [("big", first.id)]  # the small worker has the slots, not the memory
    second, effects = state.submit(shell(memory_mb=2000), now=1.0)
    assert sent(effects) == [("big", second.id)]
    third, effects = state.submit(shell(memory_mb=2000), now=1.0)
    assert sent(effects) == [] and third.state is S.PENDING  # 4 000 MiB reserved: it waits
    light, effects = state.submit(shell(), now=1.0)  # reserves nothing: not held up behind it
    assert sent(effects) == [("small", light.id)]
    assert state.registry.get("big").used_memory_mb == 4000  # type: ignore[union-attr]
    effects = state.task_status("big", report(first, "COMPLETED", exit_code=0), 2.0)
    assert sent(effects) == [("big", third.id)]
    assert state.registry.get("big").used_memory_mb == 4000  # type: ignore[union-attr]
    assert third.to_info().memory_mb == 2000


def test_workers_on_one_host_share_its_memory_whatever_each_offers() -> None:
    state = make_state()
    # a parent and its child on a 1 000 MiB machine, each offering the whole of it; another machine
    register(state, "parent", port=8081, capacity=4, memory_mb=1000, host="a", host_memory_mb=1000)
    register(state, "child", port=8082, capacity=4, memory_mb=1000, host="a", host_memory_mb=1000)
    register(state, "other", port=8083, capacity=4, memory_mb=1000, host="b", host_memory_mb=1000)
    placed = []
    for _ in range(3):
        job, effects = state.submit(shell(memory_mb=600), now=1.0)
        placed += [worker for worker, _ in sent(effects)]
    # host a takes one 600 MiB job, whichever worker runs it; host b the next; the third waits
    assert len(placed) == 2 and "other" in placed and len({"parent", "child"} & set(placed)) == 1
    assert state.counts[S.PENDING] == 1
    first = state.registry.get(next(w for w in placed if w != "other"))
    assert first is not None and first.host_memory.used_mb == 600 and first.host_memory.total_mb == 1000


def test_a_worker_without_a_memory_limit_takes_any_reservation() -> None:
    state = make_state()
    register(state, "w1", memory_mb=None)
    job, effects = state.submit(shell(memory_mb=1 << 30), now=1.0)
    assert sent(effects) == [("w1", job.id)]


def test_least_connections_spreads_over_workers() -> None:
    state = make_state()
    register(state, "w1", port=8081, capacity=2)
    register(state, "w2", port=8082, capacity=2)
    effects = []
    for _ in range(4):
        _, more = state.submit(shell(), now=1.0)
        effects += more
    assert sorted(w for w, _ in sent(effects)) == ["w1", "w1", "w2", "w2"]


# ------------------------------------------------------------------ failures and retries


def test_failure_backs_off_then_retries_then_dead_letters() -> None:
    state = make_state()
    register(state)
    job, _ = state.submit(shell("exit 3", max_attempts=2), now=10.0)
    assert state.task_status("w1", report(job, "FAILED", exit_code=3), now=11.0) == []
    assert (job.state, job.exit_code, job.error) == (S.FAILED, 3, "exit code 3")
    due = state.next_due()
    assert due is not None and 11.5 <= due <= 12.0  # first backoff: 0.5..1 s with base 1 s
    assert state.stats(now=11.0).delayed == 1
    assert state.timers_due(now=due - 0.01) == []
    effects = state.timers_due(now=due)
    assert sent(effects) == [("w1", job.id)] and job.attempts == 2
    effects = state.task_status("w1", report(job, "FAILED", exit_code=3), now=13.0)
    assert effects == [JobFinished(job)]
    assert job.state is S.DEAD
    assert [s.finish for s in job.story].count(S.FAILED) == 2
    stats = state.stats(now=14.0)
    assert (stats.dead, stats.failed, stats.delayed) == (1, 2, 0)


def test_retry_from_the_dead_letter_queue_gets_fresh_attempts() -> None:
    state = make_state()
    register(state)
    job, _ = state.submit(shell("exit 1", max_attempts=1), now=1.0)
    state.task_status("w1", report(job, "FAILED", exit_code=1), now=2.0)
    assert job.state is S.DEAD
    retried, effects = state.retry(job.id, now=3.0)
    assert retried is job and sent(effects) == [("w1", job.id)]
    assert job.attempts == 2  # numbering goes on, the budget starts over
    assert job.attempts_left == 0
    assert (job.to_info().attempts, job.to_info().tries) == (2, 1)  # shown as 1/1, not 2/1
    state.task_status("w1", report(job, "COMPLETED", exit_code=0), now=4.0)
    assert job.state.value == "COMPLETED"


@pytest.mark.parametrize("final", ["COMPLETED", "CANCELLED"])
def test_retry_of_a_job_not_dead_is_refused(final: str) -> None:
    state = make_state()
    register(state)
    job, _ = state.submit(shell(), now=1.0)
    if final == "COMPLETED":
        state.task_status("w1", report(job, "COMPLETED", exit_code=0), now=2.0)
    else:
        state.cancel(job.id, now=2.0)
    with pytest.raises(ValidationError, match="DEAD jobs only"):
        state.retry(job.id, now=3.0)


def test_delayed_job_waits_for_its_time() -> None:
    state = make_state()
    register(state)
    job, effects = state.submit(shell(delay_ms=500), now=10.0)
    assert effects == [] and job.state is S.DELAYED
    assert state.next_due() == 10.5
    assert state.stats(now=10.0).delayed == 1
    assert sent(state.timers_due(now=10.5)) == [("w1", job.id)]


# ------------------------------------------------------------------ cancel


def test_cancel_running_job_stops_it_and_frees_the_slot() -> None:
    state = make_state()
    register(state, capacity=1)
    job, _ = state.submit(shell("sleep 9"), now=1.0)
    waiting, _ = state.submit(shell(), now=1.0)
    state.task_status("w1", report(job, "RUNNING"), now=2.0)
    cancelled, effects = state.cancel(job.id, now=3.0)
    assert cancelled.state is S.CANCELLED
    assert effects == [StopTask("w1", job.id, 1, "cancelled"), JobFinished(job), SendTask("w1", waiting)]
    # the worker's later report of the killed attempt is fenced
    assert state.task_status("w1", report(job, "FAILED", error="stopped: cancelled"), now=4.0) == []
    assert job.state is S.CANCELLED and job.story[-1].stimulus == "attempt 1's process ended on w1 (stopped: cancelled)"


def test_cancel_pending_job_leaves_the_queue() -> None:
    state = make_state()
    job, _ = state.submit(shell(), now=1.0)
    state.cancel(job.id, now=2.0)
    _, effects = register(state)
    assert effects == []
    assert state.stats(now=3.0).cancelled == 1


def test_cancel_final_or_unknown_job_is_refused() -> None:
    state = make_state()
    job, _ = state.submit(shell(), now=1.0)
    state.cancel(job.id, now=2.0)
    with pytest.raises(InvalidTransition, match=f"^nothing to cancel: job '{job.id}' is already CANCELLED$"):
        state.cancel(job.id, now=3.0)
    with pytest.raises(UnknownJob):
        state.cancel("TSK-nope", now=3.0)
    with pytest.raises(UnknownJob, match="^no DAG or job with id 'DAG-nope'$"):
        state.list_jobs(dag="DAG-nope")


# ------------------------------------------------------------------ fencing


def test_reports_for_old_attempts_or_other_workers_are_ignored() -> None:
    state = make_state()
    register(state, "w1", port=8081)
    job, _ = state.submit(shell(), now=1.0)
    assert state.task_status("w2", report(job, "COMPLETED", exit_code=0), now=2.0) == []
    assert state.task_status("w1", report(job, "COMPLETED", exit_code=0, attempt=7), now=2.0) == []
    assert job.state is S.SCHEDULED
    assert [s.stimulus for s in job.story][-2:] == [
        "ignored COMPLETED of attempt 1 from w2",
        "ignored COMPLETED of attempt 7 from w1",
    ]
    assert state.task_status("w1", report(job, "RUNNING", attempt=99), now=2.0) == []
    assert state.task_status("w1", report(job, "RUNNING"), now=2.0) == []
    assert job.state.value == "RUNNING"


def test_report_for_unknown_job_is_ignored() -> None:
    state = make_state()
    register(state)
    job, _ = state.submit(shell(), now=1.0)
    job_id = job.id
    assert (
        state.task_status("w1", report(job, "COMPLETED").__class__(job_id="X", attempt=1, state="COMPLETED"), 2.0) == []
    )
    assert state.job(job_id).state is S.SCHEDULED


# ------------------------------------------------------------------ worker loss


def test_disconnected_worker_keeps_its_tasks_until_the_timeout() -> None:
    state = make_state()
    register(state, "w1", port=8081)
    job, _ = state.submit(shell(), now=1.0)
    state.task_status("w1", report(job, "RUNNING"), now=1.0)
    state.worker_disconnected("w1", now=2.0)
    assert state.check_health(now=2.0 + TIMEOUT_S - 0.1) == []
    assert job.state is S.RUNNING
    register(state, "w2", port=8082, now=20.0)
    effects = state.check_health(now=2.0 + TIMEOUT_S)
    assert sent(effects) == [("w2", job.id)]
    assert (job.state, job.attempts, job.worker_name) == (S.SCHEDULED, 2, "[8082]")
    assert "worker lost" in job.story[-2].stimulus and job.story[-2].finish is S.PENDING
    assert state.registry.get("w1").health == "LOST"  # type: ignore[union-attr]
    assert state.stats(now=40.0).failed == 1


def test_silent_connected_worker_is_lost_and_its_connection_closed() -> None:
    state = make_state()
    register(state, "w1", now=0.0)
    job, _ = state.submit(shell(), now=1.0)
    state.heartbeat("w1", now=10.0)
    assert state.check_health(now=10.0 + TIMEOUT_S - 1) == []
    effects = state.check_health(now=10.0 + TIMEOUT_S)
    assert CloseWorker("w1", f"no heartbeat for {TIMEOUT_S:g}s") in effects
    assert job.state is S.PENDING


def test_worker_lost_on_the_last_attempt_goes_to_the_dead_letter_queue() -> None:
    state = make_state()
    register(state)
    job, _ = state.submit(shell(max_attempts=1), now=1.0)
    state.worker_disconnected("w1", now=2.0)
    effects = state.check_health(now=2.0 + TIMEOUT_S)
    assert effects == [JobFinished(job)]
    assert (job.state, job.error) == (S.DEAD, "worker lost")


def test_lost_records_are_forgotten_after_another_timeout() -> None:
    state = make_state()
    register(state)
    state.worker_disconnected("w1", now=1.0)
    state.check_health(now=1.0 + TIMEOUT_S)
    assert len(state.stats(now=40.0).workers) == 1
    state.check_health(now=1.0 + 2 * TIMEOUT_S)
    assert state.stats(now=70.0).workers == []


def test_a_drained_worker_that_leaves_idle_is_retired_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    state = make_state()
    register(state)
    state.drain("w1", now=1.0)
    state.worker_disconnected("w1", now=2.0)
    assert [worker.health for worker in state.stats(now=2.0).workers] == ["RETIRED"]
    with caplog.at_level(logging.WARNING):
        state.check_health(now=2.0 + TIMEOUT_S / 2)
        assert [worker.health for worker in state.stats(now=2.0 + TIMEOUT_S / 2).workers] == ["RETIRED"]
        state.check_health(now=2.0 + TIMEOUT_S)
    assert "lost" not in caplog.text
    assert state.stats(now=2.0 + TIMEOUT_S).workers == []  # shown for one timeout, as a lost one is


def test_a_draining_worker_that_drops_with_tasks_is_disconnected_as_any() -> None:
    state = make_state()
    register(state)
    job, _ = state.submit(shell(), now=1.0)
    state.drain("w1", now=1.5)
    state.worker_disconnected("w1", now=2.0)
    assert [worker.health for worker in state.stats(now=2.0).workers] == ["DISCONNECTED"]
    state.check_health(now=2.0 + TIMEOUT_S)
    assert job.state.value == "PENDING" or job.attempts_left < job.max_attempts  # requeued as lost


def test_reconnect_within_timeout_keeps_running_tasks_and_applies_finished_ones() -> None:
    state = make_state()
    register(state, capacity=3)
    a, _ = state.submit(shell(), now=1.0)
    b, _ = state.submit(shell(), now=1.0)
    c, _ = state.submit(shell(), now=1.0)
    state.task_status("w1", report(a, "RUNNING"), now=1.5)
    state.worker_disconnected("w1", now=2.0)
    stale, effects = register(
        state,
        now=3.0,
        capacity=3,
        running=[TaskRef(a.id, 1), TaskRef("OLD", 4)],
        finished=[report(b, "COMPLETED", exit_code=0)],
    )
    # a keeps running, b's result counts, c never reached the worker: requeued and sent again
    assert stale == [TaskRef("OLD", 4)]
    assert (a.state, b.state) == (S.RUNNING, S.COMPLETED)
    assert JobFinished(b) in effects and SendTask("w1", c) in effects
    assert c.attempts == 2 and "not running on [8081] at reconnect" in c.story[-2].stimulus


def test_a_result_reported_on_reconnect_is_dated_by_when_it_ended() -> None:
    state = make_state()
    register(state, capacity=2)
    job, _ = state.submit(shell(), now=1.0)
    state.task_status("w1", report(job, "RUNNING"), now=2.0)
    state.worker_disconnected("w1", now=3.0)
    # ended 20 s before the REGISTER was sent, by the worker's clock, which is an hour off ours
    done = dataclasses.replace(
        report(job, "COMPLETED", exit_code=0), started_at=7000.0 - 23.0, finished_at=7000.0 - 20.0
    )
    register(state, now=30.0, capacity=2, finished=[done], sent_at=7000.0)
    assert (job.state, job.started_at, job.finished_at) == (S.COMPLETED, 2.0, 10.0)
    # never before what the story already holds, and without sent_at: when it arrived
    other, _ = state.submit(shell(), now=31.0)
    state.task_status("w1", report(other, "RUNNING"), now=32.0)
    state.worker_disconnected("w1", now=33.0)
    long_ago = dataclasses.replace(report(other, "FAILED", exit_code=1), started_at=1.0, finished_at=2.0)
    register(state, now=40.0, capacity=2, finished=[long_ago], sent_at=7000.0)
    assert other.finished_at == 32.0  # it started then: it cannot have ended sooner
    assert [step.t for step in other.story] == sorted(step.t for step in other.story)


def test_a_handed_back_attempt_is_requeued_uncounted_and_its_worker_gets_nothing_new() -> None:
    state = make_state()
    register(state, "w1", port=8081)
    job, _ = state.submit(shell(max_attempts=1), now=1.0)
    state.task_status("w1", report(job, "RUNNING"), now=2.0)
    state.heartbeat("w1", now=2.5, leaving=True)  # a worker says so before it stops anything
    back = dataclasses.replace(
        report(job, "FAILED", exit_code=-15, error="stopped: worker shutting down"), handed_back=True
    )
    effects = state.task_status("w1", back, now=3.0)
    assert effects == []  # nowhere to go: the only worker is leaving
    assert (job.state, job.attempts, job.attempts_left) == (S.PENDING, 1, 1)
    assert job.runs[-1].state == "RETURNED" and "handed back by [8081]" in job.story[-1].stimulus
    assert state.registry.get("w1").health.value == "DRAINING"  # type: ignore[union-attr]
    _, effects = register(state, "w2", port=8082, now=4.0)
    assert effects == [SendTask("w2", job)]
    state.task_status("w2", report(job, "COMPLETED", exit_code=0), now=5.0)
    assert (job.state, job.attempts, job.attempts - job.retry_base) == (S.COMPLETED, 2, 1)


def test_an_idle_worker_that_says_it_is_leaving_retires_rather_than_being_lost() -> None:
    state = make_state()
    register(state, "w1", port=8081)
    state.heartbeat("w1", now=1.0, leaving=True)
    assert state.registry.get("w1").health.value == "DRAINING"  # type: ignore[union-attr]
    state.submit(shell(), now=2.0)
    assert state.registry.get("w1").active == {}  # type: ignore[union-attr]  # nothing new for it
    state.worker_disconnected("w1", now=3.0)
    assert state.registry.get("w1").health.value == "RETIRED"  # type: ignore[union-attr]


def test_a_task_handed_back_before_it_started_never_shows_running() -> None:
    state = make_state()
    register(state)
    job, _ = state.submit(shell(), now=1.0)
    state.heartbeat("w1", now=1.5, leaving=True)
    back = dataclasses.replace(report(job, "FAILED", error="stopped: worker shutting down"), handed_back=True)
    state.task_status("w1", back, now=2.0)
    assert [step.finish for step in job.story] == [S.PENDING, S.SCHEDULED, S.PENDING]


def test_a_hand_back_kept_over_a_restart_comes_with_register_and_the_new_run_takes_tasks() -> None:
    state = make_state()
    register(state, "w1", port=8081)
    job, _ = state.submit(shell(max_attempts=1), now=1.0)
    state.task_status("w1", report(job, "RUNNING"), now=2.0)
    state.worker_disconnected("w1", now=3.0)  # the master was away when the worker stopped
    back = dataclasses.replace(
        report(job, "FAILED", exit_code=-15, error="stopped: worker shutting down"), handed_back=True
    )
    _, effects = register(state, "w1", port=8081, now=4.0, finished=[back])
    assert state.registry.get("w1").health.value == "HEALTHY"  # type: ignore[union-attr]
    assert effects == [SendTask("w1", job)]  # requeued, the attempt not counted, and sent to the new run
    assert (job.attempts, job.attempts - job.retry_base, job.runs[0].state) == (2, 1, "RETURNED")


def test_stale_attempt_after_loss_is_killed_on_reconnect() -> None:
    state = make_state()
    register(state, "w1", port=8081)
    job, _ = state.submit(shell(), now=1.0)
    state.worker_disconnected("w1", now=2.0)
    register(state, "w2", port=8082, now=20.0)
    state.check_health(now=2.0 + TIMEOUT_S)
    assert job.worker == "w2"
    stale, _ = register(state, "w1", port=8081, now=40.0, running=[TaskRef(job.id, 1)])
    assert stale == [TaskRef(job.id, 1)]
    assert state.registry.get("w1").health == "HEALTHY"  # type: ignore[union-attr]


def test_duplicate_registration_of_a_connected_worker_is_refused() -> None:
    state = make_state()
    register(state)
    with pytest.raises(DuplicateWorker, match="already connected"):
        register(state)
    state.worker_disconnected("w1", now=1.0)
    register(state, now=2.0)  # after a drop, the same id may come back


def test_draining_worker_gets_no_new_tasks() -> None:
    state = make_state()
    register(state, "w1", port=8081)
    register(state, "w2", port=8082)
    state.drain("w1", now=1.0)
    effects = []
    for _ in range(2):
        effects += state.submit(shell(), now=1.0)[1]
    assert [w for w, _ in sent(effects)] == ["w2", "w2"]


# ------------------------------------------------------------------ queries


def test_list_jobs_most_recent_first_with_filter_and_limit() -> None:
    state = make_state()
    ids = [state.submit(shell(), now=float(i))[0].id for i in range(5)]
    state.cancel(ids[1], now=9.0)
    assert [j.id for j in state.list_jobs()] == ids[::-1]
    assert [j.id for j in state.list_jobs(limit=2)] == ids[:2:-1][:2]
    assert [j.id for j in state.list_jobs("cancelled")] == [ids[1]]
    with pytest.raises(ValidationError, match="unknown state"):
        state.list_jobs("SLEEPING")


def test_stats_counts_and_workers() -> None:
    state = make_state()
    register(state, capacity=2)
    for _ in range(3):
        state.submit(shell(), now=1.0)
    stats = state.stats(now=2.0)
    assert (stats.queued, stats.scheduled, stats.running) == (1, 2, 0)
    (worker,) = stats.workers
    assert (worker.name, worker.load, worker.capacity, worker.health, worker.skills) == (
        "[8081]",
        2,
        2,
        "HEALTHY",
        ["GENERAL"],
    )
    assert len(worker.tasks) == 2


def test_unknown_job_lookup() -> None:
    with pytest.raises(UnknownJob, match="TSK-0"):
        make_state().job("TSK-0")


def test_given_ids_are_kept() -> None:
    state = make_state()
    job, _ = state.submit(JobSpec(type="SHELL", data="true", id="MY_JOB"), now=1.0)
    assert state.job("MY_JOB") is job
