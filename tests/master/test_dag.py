"""DAG admission: whole or nothing, cycles named, dependants released exactly."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import JobSpec
from titan.errors import CycleError, ValidationError
from titan.jobs import JobFinished, JobState
from titan.master import check_dag

from .helpers import make_state, register, report, sent

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


def test_check_dag_alone() -> None:
    check_dag({"A": [], "B": ["A", "OLD"]}, {"OLD"})
    with pytest.raises(CycleError) as info:
        check_dag({"A": ["B"], "B": ["A"]}, set())
    assert info.value.ids in (["A", "B"], ["B", "A"])
