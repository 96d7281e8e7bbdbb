"""Scheduling, pure: the ready queue, the delay heap and least-connections choice.

Ready queue
-----------
Jobs that differ in what they need (skills, slots, memory) sit in separate heaps, one per
*class* ``(skills, slots, memory_mb)``, each ordered by priority (higher first) then
submission order. Dispatch looks at the best head over all classes; when no
worker can take that class right now (busy, or nobody has the skills at all) the
class is set aside for this round and the next best head is tried. So a job no
worker can ever take waits without blocking the jobs behind it, and a round costs
O(classes x workers), never a scan of the queue. There are few classes in practice.

Entries are never removed from the middle of a heap: a cancelled job's entry
goes stale (its ``ticket`` or state no longer matches) and is dropped when it
reaches the top.

Every heap entry carries a number no other entry has (the queue's push order,
as the delay heap's do) before the job itself, so two entries always compare
without reaching the :class:`Job`, which has no order. The submission number
alone is not enough: a WAL that two masters wrote at once on one workspace
holds jobs with the same ``seq``, and it must still recover.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence

from titan.jobs import Job, JobState

from .registry import WorkerRecord

__all__ = ["DelayHeap", "JobClass", "LeastConnections", "ReadyQueue"]

JobClass = tuple[frozenset[str], int, int | None]
_Entry = tuple[int, int, int, int, Job]  # (-priority, seq, push order, ticket, job)


def _live(entry: _Entry, state: JobState) -> bool:
    job = entry[4]
    return job.ticket == entry[3] and job.state is state


class ReadyQueue:
    """PENDING jobs by class; see the module docstring."""

    def __init__(self) -> None:
        self._heaps: dict[JobClass, list[_Entry]] = {}
        self._entries = 0  # live and stale; only a hint that there may be work
        self._order = itertools.count()  # unique per entry: see the module docstring

    def __len__(self) -> int:
        return self._entries

    def push(self, job: Job) -> None:
        job.ticket += 1
        key = (job.skills, job.slots, job.memory_mb)
        heap = self._heaps.get(key)
        if heap is None:
            heap = self._heaps[key] = []
        heapq.heappush(heap, (-job.priority, job.seq, next(self._order), job.ticket, job))
        self._entries += 1

    def extend(self, jobs: Iterable[Job]) -> None:
        """Push many jobs at once (a restart refilling the queue): one heapify per class, not a push each."""
        heaps = self._heaps
        key: JobClass | None = None
        heap: list[_Entry] = []
        added = 0
        order = self._order
        for job in jobs:  # a million after a restart: the class rarely changes from one job to the next
            ticket = job.ticket = job.ticket + 1
            if key is None or job.slots != key[1] or job.skills is not key[0] or job.memory_mb != key[2]:
                key = (job.skills, job.slots, job.memory_mb)
                heap = heaps.setdefault(key, [])
            heap.append((-job.priority, job.seq, next(order), ticket, job))
            added += 1
        self._entries += added
        for heap in heaps.values():
            heapq.heapify(heap)

    def best(self, skip: set[JobClass] | None = None) -> tuple[JobClass, Job] | None:
        """The highest-priority, oldest live head among classes not in ``skip``."""
        found: _Entry | None = None
        found_key: JobClass | None = None
        for key, heap in self._heaps.items():
            if skip and key in skip:
                continue
            while heap and not _live(heap[0], JobState.PENDING):
                heapq.heappop(heap)
                self._entries -= 1
            if heap and (found is None or heap[0][:3] < found[:3]):
                found, found_key = heap[0], key
        if found is None or found_key is None:
            return None
        return found_key, found[4]

    def pop(self, key: JobClass) -> Job:
        """Remove the head of class ``key`` (the one :meth:`best` just returned)."""
        entry = heapq.heappop(self._heaps[key])
        self._entries -= 1
        return entry[4]

    def jobs(self) -> list[Job]:
        """Live queued jobs in dispatch order (for inspection and tests; O(n log n))."""
        live = [e for heap in self._heaps.values() for e in heap if _live(e, JobState.PENDING)]
        return [e[4] for e in sorted(live, key=lambda e: e[:3])]


class DelayHeap:
    """DELAYED jobs and FAILED jobs waiting out their backoff, earliest due first.

    The shell keeps one timer set to :meth:`next_due`; nothing polls.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, Job, JobState]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, job: Job, due: float) -> None:
        job.ticket += 1
        heapq.heappush(self._heap, (due, next(self._order), job.ticket, job, job.state))

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[Job]:
        """Jobs whose time has come, earliest first; stale entries are dropped."""
        due: list[Job] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._is_live(entry):
                due.append(entry[3])
        return due

    @staticmethod
    def _is_live(entry: tuple[float, int, int, Job, JobState]) -> bool:
        _, _, ticket, job, state = entry
        return job.ticket == ticket and job.state is state


class LeastConnections:
    """Pick the worker with the fewest active tasks relative to its capacity.

    Only workers whose skills cover the job's and whose free slots and
    unreserved memory suffice are candidates (:meth:`WorkerRecord.fits`). Ties are broken round-robin: the scan starts just after the last
    worker picked, and the first of the least loaded wins, so equal workers take
    turns instead of the first one always winning.
    """

    def __init__(self) -> None:
        self._cursor = 0

    def choose(self, workers: Sequence[WorkerRecord], job: Job) -> WorkerRecord | None:
        n = len(workers)
        if not n:
            return None
        start = self._cursor % n
        best: WorkerRecord | None = None
        best_index = 0
        slots, skills, memory = job.slots, job.skills, job.memory_mb
        for k in range(n):
            index = (start + k) % n
            worker = workers[index]
            # WorkerRecord.fits, inlined: this runs for every candidate of every dispatch
            if worker.capacity - worker.used_slots < slots or not skills <= worker.skills:
                continue
            if memory is not None and (
                (worker.memory_mb is not None and worker.memory_mb - worker.used_memory_mb < memory)
                or (
                    worker.host_memory.total_mb is not None
                    and worker.host_memory.total_mb - worker.host_memory.used_mb < memory
                )
            ):
                continue
            # active/capacity < best.active/best.capacity, without floats
            if best is None or len(worker.active) * best.capacity < len(best.active) * worker.capacity:
                best, best_index = worker, index
        if best is not None:
            self._cursor = best_index + 1
        return best

    @staticmethod
    def could_ever_run(workers: Sequence[WorkerRecord], job: Job) -> bool:
        """Whether some worker has the skills and the capacity, busy or not."""
        return any(worker.could_fit(job) for worker in workers)
