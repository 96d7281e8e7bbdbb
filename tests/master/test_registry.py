"""Worker records and health, with time passed in."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import JobSpec, Register
from titan.jobs import Job, JobState
from titan.master import DuplicateWorker, Health, WorkerRegistry


def reg(worker_id: str = "w1", **fields: Any) -> Register:
    values = {"name": "[8081]", "host": "h", "port": 8081, "capacity": 2, "skills": ["general", " gpu "], **fields}
    return Register(worker_id=worker_id, **values)


def test_register_normalizes_skills_and_is_schedulable() -> None:
    registry = WorkerRegistry()
    record = registry.register(reg(), now=1.0)
    assert record.skills == frozenset({"GENERAL", "GPU"})
    assert registry.schedulable == [record]
    info = record.info(now=3.0)
    assert (info.name, info.health, info.load, info.last_seen_s) == ("[8081]", "HEALTHY", 0, 2.0)


def test_health_life_cycle() -> None:
    registry = WorkerRegistry()
    record = registry.register(reg(), now=0.0)
    registry.disconnected("w1", now=5.0)
    assert record.health.value == "DISCONNECTED" and registry.schedulable == []
    assert registry.expired(now=14.9, timeout_s=10) == []
    assert registry.expired(now=15.0, timeout_s=10) == [record]
    registry.mark_lost(record, now=15.0)
    assert record.health is Health.LOST
    registry.register(reg(capacity=4), now=16.0)
    assert (record.health, record.capacity) == (Health.HEALTHY, 4)
    assert registry.schedulable == [record]


def test_duplicate_registration_is_refused_while_connected() -> None:
    registry = WorkerRegistry()
    registry.register(reg(), now=0.0)
    with pytest.raises(DuplicateWorker) as info:
        registry.register(reg(), now=1.0)
    assert info.value.code == "DUPLICATE_WORKER"


def test_slots_follow_assignments() -> None:
    registry = WorkerRegistry()
    record = registry.register(reg(capacity=4), now=0.0)
    spec = JobSpec(type="SHELL", data="true", slots=3)
    job = Job.from_spec(
        spec, job_id="J", seq=1, now=0, state=JobState.SCHEDULED, run_kind="SHELL", run_data="true", run_args=[]
    )
    registry.assign("w1", job)
    assert (record.used_slots, record.free_slots, list(record.active)) == (3, 1, ["J"])
    registry.release("w1", job)
    registry.release("w1", job)  # twice is harmless
    assert record.used_slots == 0


def test_draining_is_not_schedulable() -> None:
    registry = WorkerRegistry()
    record = registry.register(reg(), now=0.0)
    registry.drain("w1", now=1.0)
    assert record.health is Health.DRAINING and registry.schedulable == []
