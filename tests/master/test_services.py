"""DEPLOY jobs in the master's core: up releases dependants, STOP, restarts, child workers. Pure."""

from __future__ import annotations

import pytest

from protocol import JobSpec, Register, TaskStatus
from tests.master.helpers import make_state, register
from titan.errors import ValidationError
from titan.jobs import DrainWorker, JobState, StopTask
from titan.master import MasterState


def running(status: str = "RUNNING", **fields: object) -> TaskStatus:
    return TaskStatus("SVC", 1, status, **fields)  # type: ignore[arg-type]


@pytest.fixture
def state() -> MasterState:
    state = make_state()
    state.admission.files.names.add("dash.py")  # type: ignore[attr-defined]
    register(state, "w1", capacity=4)
    state.submit_dag(
        [
            JobSpec(type="DEPLOY", data="dash.py", id="SVC"),
            JobSpec(type="SHELL", data="echo after", id="AFTER", deps=["SVC"]),
        ],
        now=1.0,
    )
    return state


def test_a_service_is_running_but_its_dependants_wait_until_it_is_up(state: MasterState) -> None:
    state.task_status("w1", running(), now=2.0)
    assert state.job("SVC").state is JobState.RUNNING
    assert state.job("AFTER").state is JobState.BLOCKED
    state.task_status("w1", running(up=True), now=3.0)
    assert state.job("SVC").service_up
    assert state.job("AFTER").state in (JobState.PENDING, JobState.SCHEDULED)
    assert state.job("SVC").state is JobState.RUNNING
    info = state.registry.get("w1").info(3.0)  # type: ignore[union-attr]
    assert info.services == ["SVC"] and info.tasks == ["AFTER"]


def test_a_job_submitted_later_on_an_up_service_is_not_blocked(state: MasterState) -> None:
    state.task_status("w1", running(up=True), now=2.0)
    late, _ = state.submit(JobSpec(type="SHELL", data="echo late", deps=["SVC"]), now=3.0)
    assert late.state is not JobState.BLOCKED


def test_a_restart_is_noted_and_the_service_is_down_until_up_again(state: MasterState) -> None:
    state.task_status("w1", running(up=True), now=2.0)
    state.task_status("w1", running(restarts=1, error="killed by SIGKILL; restart 1 in 0.5s"), now=3.0)
    job = state.job("SVC")
    assert (job.restarts, job.service_up, job.state) == (1, False, JobState.RUNNING)
    assert "service restart 1 on [8081]: killed by SIGKILL" in job.story[-1].stimulus
    state.task_status("w1", running(up=True, restarts=1), now=4.0)
    assert job.to_info().up and job.to_info().restarts == 1


def test_stop_ends_the_service_and_frees_its_slot(state: MasterState) -> None:
    state.task_status("w1", running(up=True), now=2.0)
    job, effects = state.stop("SVC", now=3.0)
    assert job.state is JobState.STOPPED
    assert StopTask("w1", "SVC", 1, "stopped on request") in effects
    record = state.registry.get("w1")
    assert record is not None and "SVC" not in record.active
    # a late report of the stopped attempt is fenced
    state.task_status("w1", running("FAILED", error="stopped: stopped on request"), now=4.0)
    assert state.job("SVC").state is JobState.STOPPED


def test_stop_refuses_what_is_not_a_running_service(state: MasterState) -> None:
    with pytest.raises(ValidationError, match="STOP ends RUNNING services only"):
        state.stop("SVC", now=2.0)  # still SCHEDULED
    with pytest.raises(ValidationError, match="not a service"):
        state.stop("AFTER", now=2.0)


def test_a_service_that_stops_before_it_is_up_skips_its_dependants(state: MasterState) -> None:
    state.task_status("w1", running(), now=2.0)
    state.stop("SVC", now=3.0)
    assert state.job("AFTER").state is JobState.SKIPPED


def child(spawn_id: str, parent: str = "w1", worker_id: str = "w1/9001") -> Register:
    return Register(worker_id, "[9001]", "127.0.0.1", 9001, 2, ["GENERAL"], parent=parent, spawn_id=spawn_id)


def test_a_worker_deploy_is_up_when_its_child_registers_and_stop_drains_the_child() -> None:
    state = make_state()
    register(state, "w1", capacity=4)
    state.submit_dag(
        [
            JobSpec(type="DEPLOY", data="Worker.jar", id="KID", port=9001),
            JobSpec(type="SHELL", data="echo after", id="AFTER", deps=["KID"]),
        ],
        now=1.0,
    )
    state.worker_registered(child("KID"), now=2.0)  # before the parent's RUNNING report: fine
    assert state.job("KID").state is JobState.RUNNING and state.job("KID").service_up
    assert state.job("AFTER").state is not JobState.BLOCKED
    _, effects = state.stop("KID", now=3.0)
    assert DrainWorker("w1/9001", "its DEPLOY job KID was stopped") in effects
    record = state.registry.get("w1/9001")
    assert record is not None and record.health.value == "DRAINING"


def test_a_child_of_another_job_or_parent_does_not_count() -> None:
    state = make_state()
    register(state, "w1", capacity=4)
    state.submit(JobSpec(type="DEPLOY", data="Worker.jar", id="KID", port=9001), now=1.0)
    state.worker_registered(child("KID", parent="elsewhere"), now=2.0)
    assert not state.job("KID").service_up


def test_when_the_parent_is_lost_its_deploy_ends_and_the_child_carries_on() -> None:
    state = make_state(heartbeat_timeout_s=5.0)
    register(state, "w1", capacity=4)
    state.submit(JobSpec(type="DEPLOY", data="Worker.jar", id="KID", port=9001), now=1.0)
    state.task_status("w1", TaskStatus("KID", 1, "RUNNING"), now=1.5)
    state.worker_registered(child("KID"), now=2.0)
    state.worker_disconnected("w1", now=3.0)
    state.heartbeat("w1/9001", now=8.5)
    state.check_health(now=9.0)
    job = state.job("KID")
    assert job.state is JobState.STOPPED and "child worker [9001] carries on" in job.story[-1].stimulus
    assert job.attempts == 1  # not started a second time


def test_cancel_of_a_worker_deploy_drains_its_child_too() -> None:
    state = make_state()
    register(state, "w1", capacity=4)
    state.submit(JobSpec(type="DEPLOY", data="Worker.jar", id="KID", port=9001), now=1.0)
    state.worker_registered(child("KID"), now=2.0)
    job, effects = state.cancel("KID", now=3.0)
    assert job.state is JobState.CANCELLED and not job.service_up
    assert DrainWorker("w1/9001", "its DEPLOY job KID was cancelled") in effects


def test_stop_of_a_worker_deploy_drains_the_workers_below_its_child_too() -> None:
    state = make_state()
    register(state, "w1", capacity=4)
    state.submit(JobSpec(type="DEPLOY", data="Worker.jar", id="KID", port=9001), now=1.0)
    state.worker_registered(child("KID"), now=2.0)
    grandchild = Register("w1/9002", "[9002]", "127.0.0.1", 9002, 2, ["GENERAL"], parent="w1/9001", spawn_id="GRAND")
    state.worker_registered(grandchild, now=2.5)
    _, effects = state.stop("KID", now=3.0)
    assert DrainWorker("w1/9001", "its DEPLOY job KID was stopped") in effects
    assert DrainWorker("w1/9002", "its DEPLOY job KID was stopped (below it)") in effects
    below = state.registry.get("w1/9002")
    assert below is not None and below.health.value == "DRAINING"  # no new work while its parent waits
