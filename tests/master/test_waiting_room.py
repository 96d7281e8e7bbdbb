"""The waiting room, the DAG check and the delay heap on their own: no network, no clock."""

from __future__ import annotations

import random

import pytest

from protocol import JobSpec
from titan.errors import CycleError, ValidationError
from titan.jobs import Job, JobState
from titan.master import DelayHeap, WaitingRoom, check_dag

S = JobState


def job(job_id: str, *deps: str, state: JobState = S.BLOCKED) -> Job:
    spec = JobSpec(type="SHELL", data="true", id=job_id, deps=list(deps))
    return Job.from_spec(
        spec, job_id=job_id, seq=0, now=0.0, state=state, run_kind="SHELL", run_data="true", run_args=[]
    )


def seat(room: WaitingRoom, jobs: dict[str, Job], *members: Job) -> None:
    jobs.update((member.id, member) for member in members)
    for member in members:
        room.link(member)
        assert room.admit(member, [jobs[d] for d in member.deps]) is None


def finish(room: WaitingRoom, done: Job, state: JobState = S.COMPLETED) -> list[tuple[str, bool, str]]:
    """Mark ``done`` final and apply what the room decides, as the core would."""
    done.state = state
    decided = []
    pending = [(done.id, state is S.COMPLETED, f"dependency {done.id} is {state.value}")]
    while pending:
        job_id, satisfied, reason = pending.pop(0)
        for dependant, ready, why in room.release(job_id, satisfied, reason):
            decided.append((dependant.id, ready, why))
            if not ready:
                dependant.state = S.SKIPPED
                pending.append((dependant.id, False, f"dependency {dependant.id} is SKIPPED"))
            else:
                dependant.state = S.PENDING
    return decided


# --------------------------------------------------------------------------- the room


def test_diamond_releases_each_job_once_and_in_dependency_order() -> None:
    room = WaitingRoom()
    a = job("A", state=S.RUNNING)
    jobs = {"A": a}
    b, c, d = job("B", "A"), job("C", "A"), job("D", "B", "C")
    seat(room, jobs, b, c, d)
    assert len(room) == 3 and room.missing("D") == 2
    assert finish(room, a) == [("B", True, ""), ("C", True, "")]
    assert finish(room, b) == []  # D still waits for C
    assert room.missing("D") == 1
    assert finish(room, c) == [("D", True, "")]
    assert len(room) == 0


def test_release_touches_only_the_dependants_of_the_finished_job() -> None:
    room = WaitingRoom()
    roots = {f"R{i}": job(f"R{i}", state=S.RUNNING) for i in range(100)}
    jobs = dict(roots)
    seat(room, jobs, *(job(f"X{i}", f"R{i}") for i in range(100)))
    assert finish(room, roots["R42"]) == [("X42", True, "")]
    assert len(room) == 99


def test_a_failed_dependency_skips_its_dependants_transitively_with_the_reason() -> None:
    room = WaitingRoom()
    a, other = job("A", state=S.RUNNING), job("O", state=S.RUNNING)
    jobs = {"A": a, "O": other}
    seat(room, jobs, job("B", "A", "O"), job("C", "B"), job("D", "C"))
    decided = finish(room, a, S.DEAD)
    assert decided == [
        ("B", False, "dependency A is DEAD"),
        ("C", False, "dependency B is SKIPPED"),
        ("D", False, "dependency C is SKIPPED"),
    ]
    # B still sits in O's list; O completing later must not bring it back
    assert finish(room, other) == []


def test_admit_decides_at_once_on_final_dependencies() -> None:
    room = WaitingRoom()
    done, dead = job("DONE", state=S.COMPLETED), job("GONE", state=S.CANCELLED)
    verdict = room.admit(job("Y", "DONE"), [done])
    assert verdict is not None and verdict[1:] == (True, "")
    verdict = room.admit(job("Z", "DONE", "GONE"), [done, dead])
    assert verdict is not None and verdict[1:] == (False, "dependency GONE is CANCELLED")
    assert len(room) == 0


def test_a_reseated_job_counts_each_dependency_once() -> None:
    room = WaitingRoom()
    a, x = job("A", state=S.RUNNING), job("X", state=S.RUNNING)
    jobs = {"A": a, "X": x}
    b = job("B", "A", "X")
    seat(room, jobs, b)
    finish(room, a, S.DEAD)
    assert b.state is S.SKIPPED
    # RETRY of A: B is seated again while its stale entry still sits in X's list
    a.state, b.state = S.PENDING, S.BLOCKED
    assert room.admit(b, [a, x]) is None
    assert finish(room, x) == []  # one of two done, whatever the stale entry says
    assert finish(room, a) == [("B", True, "")]


def test_a_job_released_twice_counts_once() -> None:
    room = WaitingRoom()
    service, other = job("SVC", state=S.RUNNING), job("O", state=S.RUNNING)
    jobs = {"SVC": service, "O": other}
    seat(room, jobs, job("B", "SVC", "O"))
    assert room.release("SVC", True, "") == []  # the service is up: one of two
    assert room.release("SVC", True, "") == []  # ... and later ends: still one of two
    assert room.missing("B") == 1
    assert finish(room, other) == [("B", True, "")]


def test_skipped_downstream_comes_in_dependency_order() -> None:
    room = WaitingRoom()
    jobs: dict[str, Job] = {"A": job("A", state=S.RUNNING), "C": job("C", state=S.RUNNING)}
    # E depends on B (child of A) and on D, which depends on B too: D must come before E
    seat(room, jobs, job("B", "A"), job("E", "B", "D"), job("D", "B"), job("F", "C"))
    finish(room, jobs["A"], S.DEAD)
    order = [j.id for j in room.skipped_downstream("A")]
    assert order == ["B", "D", "E"]
    assert room.children("B") == [jobs["E"], jobs["D"]]


# --------------------------------------------------------------------------- check_dag


def test_cycle_is_named_in_dependency_order() -> None:
    with pytest.raises(CycleError) as info:
        check_dag({"A": ["C"], "B": ["A"], "C": ["B"], "FREE": []}, set())
    assert info.value.ids == ["A", "C", "B"]
    assert str(info.value) == "the DAG has a cycle: A -> C -> B -> A"


def test_cycle_behind_an_acyclic_prefix_is_found() -> None:
    with pytest.raises(CycleError) as info:
        check_dag({"ROOT": [], "X": ["ROOT", "Z"], "Y": ["X"], "Z": ["Y"], "TAIL": ["Z"]}, set())
    assert set(info.value.ids) == {"X", "Y", "Z"}


def test_unknown_dependencies_are_named_and_known_ones_accepted() -> None:
    check_dag({"A": ["OLD"], "B": ["A", "OLD"]}, {"OLD"})
    with pytest.raises(ValidationError, match="unknown dependencies: NOPE, ZED"):
        check_dag({"A": ["ZED"], "B": ["NOPE", "A"]}, {"OLD"})


def test_children_listed_before_their_parents_are_accepted() -> None:
    check_dag({"JOIN": ["A", "B"], "A": ["ROOT"], "B": ["ROOT"], "ROOT": []}, set())
    with pytest.raises(CycleError):
        check_dag({"SELF": ["SELF"]}, set())
    with pytest.raises(ValidationError, match="unknown dependencies: GONE"):
        check_dag({"B": ["A"], "A": ["GONE"]}, set())


def layered_dag(n: int, width: int, rng: random.Random) -> dict[str, list[str]]:
    ids = [f"J{i}" for i in range(n)]
    dag: dict[str, list[str]] = {}
    for i, job_id in enumerate(ids):
        layer_start = (i // width) * width
        previous = ids[max(0, layer_start - width) : layer_start]
        dag[job_id] = rng.sample(previous, min(len(previous), 3)) if previous else []
    return dag


def test_ten_thousand_job_dag_is_checked_in_linear_time() -> None:
    dag = layered_dag(10_000, 100, random.Random(1))
    check_dag(dag, set())
    dag["J0"] = ["J9999"]  # close a cycle through every layer
    with pytest.raises(CycleError) as info:
        check_dag(dag, set())
    assert "J0" in info.value.ids


# --------------------------------------------------------------------------- the delay heap


def test_delay_heap_yields_due_jobs_in_time_order_and_drops_stale_entries() -> None:
    heap = DelayHeap()
    late, early, cancelled = job("LATE", state=S.DELAYED), job("EARLY", state=S.DELAYED), job("X", state=S.DELAYED)
    heap.push(late, 30.0)
    heap.push(early, 10.0)
    heap.push(cancelled, 5.0)
    cancelled.state = S.CANCELLED
    assert heap.next_due() == 10.0  # the stale head is dropped, not waited for
    assert heap.pop_due(9.9) == []
    assert heap.pop_due(30.0) == [early, late]
    assert heap.next_due() is None


def test_delay_heap_repush_supersedes_the_old_entry() -> None:
    heap = DelayHeap()
    waiting = job("W", state=S.DELAYED)
    heap.push(waiting, 10.0)
    heap.push(waiting, 20.0)  # e.g. a new backoff: only the newest entry counts
    assert heap.pop_due(15.0) == []
    assert heap.pop_due(20.0) == [waiting]
