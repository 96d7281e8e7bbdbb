"""DAG admission: whole or nothing, cycles named, dependants released exactly."""

from __future__ import annotations

import random
from typing import Any

import pytest

from protocol import JobSpec
from titan.errors import CycleError, InvalidTransition, ValidationError
from titan.jobs import Effect, JobFinished, JobState, SendTask, StopTask
from titan.master import check_dag

from .helpers import make_state, register, report, sent, shell

S = JobState


def node(job_id: str, *deps: str, **fields: Any) -> JobSpec:
    return JobSpec(type="SHELL", data="true", id=job_id, deps=list(deps), **fields)


def test_dag_runs_in_dependency_order() -> None:
    state = make_state()
    register(state, capacity=4)
    jobs, effects = state.submit_dag([node("A"), node("B", "A"), node("C", "A"), node("D", "B", "C")], now=1.0)
    a, b, c, d = jobs
    assert sent(effects) == [("w1", "A")]
    assert (b.state, c.state, d.state) == (S.BLOCKED, S.BLOCKED, S.BLOCKED)
    assert state.stats(now=1.0).blocked == 3
    effects = state.task_status("w1", report(a, "COMPLETED", exit_code=0), now=2.0)
    assert sorted(job_id for _, job_id in sent(effects)) == ["B", "C"]
    state.task_status("w1", report(b, "COMPLETED", exit_code=0), now=3.0)
    assert d.state is S.BLOCKED  # still waits for C
    effects = state.task_status("w1", report(c, "COMPLETED", exit_code=0), now=4.0)
    assert sent(effects) == [("w1", "D")]


def test_a_dead_dependency_skips_the_whole_branch() -> None:
    state = make_state()
    register(state)
    (a, b, c, other), _ = state.submit_dag(
        [node("A", max_attempts=1), node("B", "A"), node("C", "B"), node("OTHER")], now=1.0
    )
    effects = state.task_status("w1", report(a, "FAILED", exit_code=2), now=2.0)
    assert (a.state, b.state, c.state) == (S.DEAD, S.SKIPPED, S.SKIPPED)
    assert b.error == "dependency A is DEAD" and c.error == "dependency B is SKIPPED"
    assert [e.job.id for e in effects if isinstance(e, JobFinished)] == ["A", "B", "C"]
    assert other.state is S.SCHEDULED


def test_dependency_on_an_existing_completed_job_is_ready_at_once() -> None:
    state = make_state()
    register(state)
    first, _ = state.submit(JobSpec(type="SHELL", data="true", id="FIRST"), now=1.0)
    state.task_status("w1", report(first, "COMPLETED", exit_code=0), now=2.0)
    job, effects = state.submit(node("NEXT", "FIRST"), now=3.0)
    assert sent(effects) == [("w1", "NEXT")]
    assert [s.finish for s in job.story] == [S.BLOCKED, S.PENDING, S.SCHEDULED]


def test_dependency_on_an_existing_cancelled_job_skips_at_once() -> None:
    state = make_state()
    state.submit(JobSpec(type="SHELL", data="true", id="GONE"), now=1.0)
    state.cancel("GONE", now=2.0)
    job, _ = state.submit(node("NEXT", "GONE"), now=3.0)
    assert job.state is S.SKIPPED and job.error == "dependency GONE is CANCELLED"


def test_released_job_still_honours_its_delay() -> None:
    state = make_state()
    register(state)
    (a, b), _ = state.submit_dag([node("A"), node("B", "A", delay_ms=5000)], now=1.0)
    state.task_status("w1", report(a, "COMPLETED", exit_code=0), now=2.0)
    assert b.state is S.DELAYED and state.next_due() == 6.0


def test_cancelling_a_blocked_job_skips_its_dependants() -> None:
    state = make_state()
    (a, b, c), _ = state.submit_dag([node("A"), node("B", "A"), node("C", "B")], now=1.0)
    state.cancel("B", now=2.0)
    assert c.state is S.SKIPPED
    register(state, now=3.0)
    state.task_status("w1", report(a, "COMPLETED", exit_code=0), now=4.0)
    assert (b.state, c.state) == (S.CANCELLED, S.SKIPPED)


def test_cycle_is_refused_whole_and_named() -> None:
    state = make_state()
    with pytest.raises(CycleError) as info:
        state.submit_dag([node("A", "C"), node("B", "A"), node("C", "B"), node("FREE")], now=1.0)
    assert set(info.value.ids) == {"A", "B", "C"}
    assert "cycle" in str(info.value)
    assert state.jobs == {}


def test_unknown_dependency_and_duplicate_ids_are_refused_whole() -> None:
    state = make_state()
    with pytest.raises(ValidationError, match="unknown dependencies: X, Y"):
        state.submit_dag([node("A", "X"), node("B", "Y")], now=1.0)
    with pytest.raises(ValidationError, match="already exists"):
        state.submit_dag([node("A"), node("A")], now=1.0)
    with pytest.raises(ValidationError, match="depends on itself"):
        state.submit_dag([node("A", "A")], now=1.0)
    assert state.jobs == {}


def test_a_job_id_that_would_read_as_a_dag_id_is_refused() -> None:
    state = make_state()
    (first,), _ = state.submit_dag([node("A")], now=1.0)
    dag = first.dag
    assert dag is not None and dag.startswith("DAG-")
    with pytest.raises(ValidationError, match="ids starting with 'DAG-' name DAGs"):
        state.submit_dag([node(dag)], now=2.0)
    assert set(state.jobs) == {"A"}


def test_a_deploy_takes_no_timeout() -> None:
    state = make_state()
    with pytest.raises(ValidationError, match="^the job: a DEPLOY is a service.*takes no timeout"):
        state.submit(JobSpec(type="DEPLOY", data="app.py", timeout_s=2.0), now=1.0)  # no made-up id is named
    with pytest.raises(ValidationError, match="^job 'web': a DEPLOY is a service"):
        state.submit(JobSpec(type="DEPLOY", data="app.py", timeout_s=2.0, id="web"), now=1.0)
    assert state.jobs == {}


def test_check_dag_alone() -> None:
    check_dag({"A": [], "B": ["A", "OLD"]}, {"OLD"})
    with pytest.raises(CycleError) as info:
        check_dag({"A": ["B"], "B": ["A"]}, set())
    assert info.value.ids in (["A", "B"], ["B", "A"])


# --------------------------------------------------------------------------- DAG ids, cancel, retry


def test_a_dag_gets_an_id_its_jobs_share() -> None:
    state = make_state()
    jobs, _ = state.submit_dag([node("A"), node("B", "A")], now=1.0)
    dag = jobs[0].dag
    assert dag is not None and dag.startswith("DAG-") and jobs[1].dag == dag
    assert state.dag_jobs(dag) == jobs == state.dag_jobs("B")
    assert [job.id for job in state.list_jobs(dag="A")] == ["A", "B"]
    single, _ = state.submit(node("SOLO"), now=2.0)
    assert single.dag is None
    with pytest.raises(ValidationError, match="not submitted as part of a DAG"):
        state.dag_jobs("SOLO")


def test_cancelling_a_dag_cancels_only_its_unfinished_jobs() -> None:
    state = make_state()
    register(state, capacity=4)
    (a, b, c, d), _ = state.submit_dag([node("A"), node("B"), node("C", "A"), node("D", "B", "C")], now=1.0)
    other, _ = state.submit(node("OTHER"), now=1.0)
    state.task_status("w1", report(a, "COMPLETED", exit_code=0), now=2.0)
    assert (b.state, c.state) == (S.SCHEDULED, S.SCHEDULED)
    job, effects = state.cancel("C", now=3.0, dag=True)
    assert job is c
    assert (a.state, b.state, c.state, d.state) == (S.COMPLETED, S.CANCELLED, S.CANCELLED, S.CANCELLED)
    stopped = sorted(e.job_id for e in effects if isinstance(e, StopTask))
    assert stopped == ["B", "C"]
    assert other.state is S.SCHEDULED
    with pytest.raises(InvalidTransition, match=r"nothing to cancel: every job of DAG-\w+ is final"):
        state.cancel("A", now=4.0, dag=True)  # nothing left to cancel: said, as for one final job


def test_retry_of_a_dead_job_unskips_the_jobs_it_skipped() -> None:
    state = make_state()
    register(state, capacity=4)
    (a, b, c, d), _ = state.submit_dag(
        [node("A", max_attempts=1), node("B", "A"), node("C", "B"), node("D", "A")], now=1.0
    )
    state.task_status("w1", report(a, "FAILED", exit_code=1), now=2.0)
    assert (a.state, b.state, c.state, d.state) == (S.DEAD, S.SKIPPED, S.SKIPPED, S.SKIPPED)
    job, effects = state.retry("A", now=3.0)
    assert job is a and sent(effects) == [("w1", "A")]
    assert (b.state, c.state, d.state) == (S.BLOCKED, S.BLOCKED, S.BLOCKED)
    assert b.error == "" and [s.stimulus for s in b.story][-1] == "un-skipped: A was retried"
    state.task_status("w1", report(a, "COMPLETED", exit_code=0), now=4.0)
    assert sorted(j.id for j in (b, d) if j.state is S.SCHEDULED) == ["B", "D"]
    assert a.attempts == 2 and [run.state for run in a.runs] == ["FAILED", "COMPLETED"]


def test_retry_leaves_skipped_a_job_that_another_failure_still_skips() -> None:
    state = make_state()
    register(state, capacity=4)
    (a, x, b, c), _ = state.submit_dag(
        [node("A", max_attempts=1), node("X", max_attempts=1), node("B", "A", "X"), node("C", "B")], now=1.0
    )
    state.task_status("w1", report(a, "FAILED", exit_code=1), now=2.0)
    state.task_status("w1", report(x, "FAILED", exit_code=1), now=2.0)
    assert (b.state, c.state) == (S.SKIPPED, S.SKIPPED)
    assert b.error == "dependency A is DEAD"
    state.retry("A", now=3.0)
    assert (b.state, c.state) == (S.SKIPPED, S.SKIPPED)  # X is still DEAD
    assert b.error == "dependency X is DEAD"  # not A any more, which is queued again
    assert b.story[-1].stimulus == "still skipped: dependency X is DEAD (A was retried)"
    state.retry("X", now=4.0)
    assert (b.state, c.state) == (S.BLOCKED, S.BLOCKED)


# --------------------------------------------------------------------------- scale and the admission trap


def test_ten_thousand_job_dag_is_accepted_and_resolved() -> None:
    state = make_state(validate=False)
    register(state, capacity=64)
    rng = random.Random(3)
    specs: list[JobSpec] = []
    width = 100
    for i in range(10_000):
        layer = i // width
        previous = [f"J{k}" for k in range((layer - 1) * width, layer * width)] if layer else []
        specs.append(node(f"J{i}", *rng.sample(previous, min(3, len(previous)))))
    jobs, effects = state.submit_dag(specs, now=1.0)
    assert len(jobs) == 10_000 and state.stats(now=1.0).blocked == 9_900
    now, finished = 2.0, 0
    while effects:
        next_effects = []
        for effect in [e for e in effects if isinstance(e, SendTask)]:
            now += 0.001
            next_effects += state.task_status("w1", report(effect.job, "COMPLETED", exit_code=0), now=now)
            finished += 1
        effects = next_effects
    assert finished == 10_000
    assert state.counts[S.COMPLETED] == 10_000 and len(state.room) == 0
    state.validate()
    # every job started after all of its dependencies completed
    for job in jobs:
        assert all(state.jobs[dep].finished_at <= job.started_at for dep in job.deps)  # type: ignore[operator]


def test_sink_after_700_roots_finished_or_running_does_not_hang() -> None:
    state = make_state(validate=False)
    register(state, capacity=1000)
    roots, _ = state.submit_dag([node(f"R{i}") for i in range(700)], now=1.0)
    for root in roots[:500]:
        state.task_status("w1", report(root, "COMPLETED", exit_code=0), now=2.0)
    sink, _ = state.submit(node("SINK", *(f"R{i}" for i in range(700))), now=3.0)
    assert sink.state is S.BLOCKED and state.room.missing("SINK") == 200
    effects: list[Effect] = []
    for root in roots[500:]:
        effects = state.task_status("w1", report(root, "COMPLETED", exit_code=0), now=4.0)
    assert sent(effects) == [("w1", "SINK")]


def test_all_dependencies_already_completed_runs_at_once() -> None:
    state = make_state()
    register(state)
    roots, _ = state.submit_dag([node("R1"), node("R2")], now=1.0)
    for root in roots:
        state.task_status("w1", report(root, "COMPLETED", exit_code=0), now=2.0)
    jobs, effects = state.submit_dag([node("SINK", "R1", "R2")], now=3.0)
    assert sent(effects) == [("w1", "SINK")]


# --------------------------------------------------------------------------- retries


def test_each_job_backs_off_by_its_own_options_and_keeps_each_attempt() -> None:
    state = make_state()
    register(state)
    job, _ = state.submit(
        node("FLAKY", max_attempts=4, backoff_base_s=2.0, backoff_factor=3.0, backoff_cap_s=10.0), now=0.0
    )
    waits = []
    now = 1.0
    for _ in range(3):
        state.task_status("w1", report(job, "RUNNING"), now=now)
        state.task_status("w1", report(job, "FAILED", exit_code=1), now=now + 0.5)
        assert job.state is S.FAILED and job.due is not None
        waits.append(job.due - (now + 0.5))
        now = job.due
        state.timers_due(now)
    # equal jitter: between half and all of min(cap, base * factor ** (n - 1))
    for wait, step in zip(waits, (2.0, 6.0, 10.0), strict=True):
        assert step / 2 <= wait <= step
    assert [run.attempt for run in job.runs] == [1, 2, 3, 4]
    assert [run.state for run in job.runs[:3]] == ["FAILED"] * 3
    assert [run.backoff_s for run in job.runs[:3]] == pytest.approx(waits)
    assert job.to_info().runs[0].exit_code == 1


def test_bad_backoff_options_are_refused() -> None:
    state = make_state()
    with pytest.raises(ValidationError, match="backoff factor must be at least 1"):
        state.submit(node("X", backoff_factor=0.5), now=1.0)
    with pytest.raises(ValidationError, match="backoff base must be positive"):
        state.submit(node("X", backoff_base_s=0.0), now=1.0)
    assert state.jobs == {}


def test_affinity_runs_on_the_worker_of_the_first_dependency() -> None:
    state = make_state()
    register(state, "w1", port=8081, capacity=1)
    register(state, "w2", port=8082, capacity=1)
    jobs, effects = state.submit_dag([node("A"), node("B"), node("C", "B", "A", affinity=True)], now=1.0)
    a, b, c = jobs
    placed = dict((job_id, worker) for worker, job_id in sent(effects))
    assert set(placed) == {"A", "B"}
    state.task_status(placed["A"], report(a, "COMPLETED", exit_code=0), now=2.0)
    # B's worker is busy with B; least-connections would pick A's idle worker, affinity waits for B's
    effects = state.task_status(placed["B"], report(b, "COMPLETED", exit_code=0), now=3.0)
    assert sent(effects) == [(placed["B"], "C")]


def test_affinity_waits_for_a_busy_home_and_falls_back_when_it_is_gone() -> None:
    state = make_state(heartbeat_timeout_s=1.0)
    register(state, "w1", port=8081, capacity=1)
    register(state, "w2", port=8082, capacity=1)
    (a, b), effects = state.submit_dag([node("A"), node("B", "A", affinity=True)], now=1.0)
    ((home, _),) = sent(effects)
    other = "w2" if home == "w1" else "w1"
    x, effects = state.submit(shell("sleep 9"), now=1.1)
    assert sent(effects) == [(other, x.id)]
    y, _ = state.submit(shell("sleep 9", priority=9), now=1.2)
    effects = state.task_status(home, report(a, "COMPLETED", exit_code=0), now=2.0)
    assert sent(effects) == [(home, y.id)]  # the higher priority job takes B's home first
    effects = state.task_status(other, report(x, "COMPLETED", exit_code=0), now=2.1)
    assert sent(effects) == [] and b.state is S.PENDING  # waits for its home rather than run elsewhere
    state.heartbeat(other, now=2.9)
    effects = state.check_health(now=3.5)  # home silent past the timeout: lost, Y requeued first
    assert sent(effects) == [(other, y.id)]
    effects = state.task_status(other, report(y, "COMPLETED", exit_code=0), now=3.6)
    assert sent(effects) == [(other, b.id)]  # its home is gone: B runs wherever fits
