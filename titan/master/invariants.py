"""Consistency checks over the master's tables, run after every stimulus when
``settings.validate`` is on (tests). O(jobs): never on in production."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from titan.jobs import ACTIVE_STATES, Job, JobState

from .registry import HostMemory, WorkerRegistry
from .waiting_room import WaitingRoom

__all__ = ["check_invariants"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"invariant broken: {message}")


def check_invariants(
    jobs: Mapping[str, Job], registry: WorkerRegistry, room: WaitingRoom, counts: Mapping[JobState, int]
) -> None:
    """Raise AssertionError naming the first broken invariant."""
    actual = Counter(job.state for job in jobs.values())
    for state in JobState:
        _require(counts[state] == actual[state], f"count of {state.value} is {counts[state]}, jobs say {actual[state]}")
    for worker in registry:
        _require(
            worker.used_slots == sum(job.slots for job in worker.active.values()),
            f"{worker.name} uses {worker.used_slots} slots but holds {sorted(worker.active)}",
        )
        _require(
            worker.used_memory_mb == sum(job.memory_mb or 0 for job in worker.active.values()),
            f"{worker.name} reserves {worker.used_memory_mb} MiB but holds {sorted(worker.active)}",
        )
        for job_id, job in worker.active.items():
            _require(jobs.get(job_id) is job, f"{worker.name} holds unknown job {job_id}")
            _require(job.state in ACTIVE_STATES, f"{worker.name} holds {job_id} which is {job.state.value}")
            _require(job.worker == worker.id, f"{worker.name} holds {job_id} which names worker {job.worker}")
    pools: dict[int, tuple[HostMemory, int]] = {}
    for worker in registry:
        pool, reserved = pools.get(id(worker.host_memory), (worker.host_memory, 0))
        pools[id(pool)] = (pool, reserved + worker.used_memory_mb)
    for pool, reserved in pools.values():
        _require(pool.used_mb == reserved, f"a host's workers reserve {reserved} MiB but it counts {pool.used_mb}")
    for job in jobs.values():
        state = job.state
        if state in ACTIVE_STATES:
            record = registry.get(job.worker) if job.worker is not None else None
            _require(record is not None, f"{state.value} job {job.id} has no worker")
            assert record is not None
            _require(record.active.get(job.id) is job, f"{state.value} job {job.id} is not listed by {record.name}")
        elif state is JobState.BLOCKED:
            _require(job.id in room, f"BLOCKED job {job.id} is not in the waiting room")
        elif state in (JobState.DELAYED, JobState.FAILED):
            _require(job.due is not None, f"{state.value} job {job.id} has no due time")
