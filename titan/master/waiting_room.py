"""The waiting room: BLOCKED jobs and the dependants index. Pure.

Theory of operation
-------------------
Each blocked job carries the set of its dependencies that are not COMPLETED
yet, and one permanent index keeps every edge ever submitted (parent ->
children). A completion therefore touches exactly its own children, never the
whole room: it takes its id out of the set of each child still waiting, and a
child whose set empties is released. A dependency that ends any other final
way (DEAD, CANCELLED, SKIPPED) skips its waiting children, and their own in
turn, since each skip is again a final state reported back here.

Children that are not waiting on the job (decided already, or never blocked
on it) are passed over; a set member can be removed only once, so a job that
is released twice (a service up, then ended) never counts twice. One index
instead of a second one of "seated" jobs halves the bookkeeping per edge when
a large DAG is accepted.

RETRY of a DEAD job walks the same index to find the jobs that were SKIPPED
because of it and seats them again, in dependency order
(:meth:`WaitingRoom.skipped_downstream`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Mapping, Sequence

from titan.errors import CycleError, ValidationError
from titan.jobs import FINAL_STATES, Job, JobState

__all__ = ["Verdict", "WaitingRoom", "check_dag"]

Verdict = tuple[Job, bool, str]  # (dependant, all deps done?, reason when skipped)


def check_dag(new: Mapping[str, Sequence[str]], known: Container[str]) -> None:
    """Refuse a DAG with unknown dependencies or a cycle, naming the offenders.

    A list already in dependency order is accepted in one pass (:func:`_in_order`);
    otherwise Kahn's algorithm over the new jobs only (jobs stored earlier cannot
    depend on new ones): O(jobs + edges). Only when some jobs are left over is a cycle
    traced among them, to name it.

    Args:
        new: each new job id and its dependency ids.
        known: ids of jobs already stored.

    Raises:
        ValidationError: unknown dependency ids.
        CycleError: the ids along one cycle, in dependency order.
    """
    if _in_order(new, known):
        return
    unknown: set[str] = set()
    waiting: dict[str, int] = {}
    children: dict[str, list[str]] = {}
    for job_id, deps in new.items():
        inner = 0
        for dep in deps:
            if dep in new:
                inner += 1
                children.setdefault(dep, []).append(job_id)
            elif dep not in known:
                unknown.add(dep)
        waiting[job_id] = inner
    if unknown:
        raise ValidationError(f"unknown dependencies: {', '.join(sorted(unknown))}")
    ready = [job_id for job_id, count in waiting.items() if count == 0]
    done = 0
    while ready:
        job_id = ready.pop()
        done += 1
        for child in children.get(job_id, ()):
            left = waiting[child] - 1
            waiting[child] = left
            if left == 0:
                ready.append(child)
    if done < len(new):
        raise CycleError(_trace_cycle(new, {job_id for job_id, count in waiting.items() if count > 0}))


def _in_order(new: Mapping[str, Sequence[str]], known: Container[str]) -> bool:
    """True when every job depends only on jobs listed before it or stored already.

    Such a list is its own topological order, so it has no cycle and no unknown
    dependency, and proving it is one set lookup per edge. DAGs are nearly always
    written (and generated) parents first; anything else takes Kahn's algorithm.
    """
    earlier: set[str] = set()
    add = earlier.add
    for job_id, deps in new.items():
        for dep in deps:
            if dep not in earlier and dep not in known:
                return False
        add(job_id)
    return True


def _trace_cycle(new: Mapping[str, Sequence[str]], left: set[str]) -> list[str]:
    """One cycle among ``left``, where every job still waits on another job of ``left``."""
    node = min(left)
    path: list[str] = []
    position: dict[str, int] = {}
    while node not in position:
        position[node] = len(path)
        path.append(node)
        node = next(dep for dep in new[node] if dep in left)
    return path[position[node] :]


class WaitingRoom:
    """Blocked jobs, who waits on whom, and every dependency edge (for RETRY)."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[str]] = {}  # blocked job id -> ids of deps not yet COMPLETED
        self._children: dict[str, list[Job]] = {}  # job id -> every job that depends on it

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._waiting

    def link(self, job: Job) -> None:
        """Remember the job's edges for good (once per job, at submission)."""
        children = self._children
        for dep in job.deps:
            found = children.get(dep)
            if found is None:
                children[dep] = [job]
            else:
                found.append(job)

    def rebuild(self, jobs: Mapping[str, Job]) -> list[Verdict]:
        """Refill the room from a restored job table (the master restarted).

        Links every job's edges and seats every BLOCKED job on its dependencies,
        in submission order; returns the verdicts of those the table already decides.
        """
        verdicts: list[Verdict] = []
        for job in jobs.values():
            if not job.deps:
                continue
            self.link(job)
            if job.state is JobState.BLOCKED:
                verdict = self.admit(job, [jobs[dep] for dep in job.deps])
                if verdict is not None:
                    verdicts.append(verdict)
        return verdicts

    def admit(self, job: Job, deps: Sequence[Job]) -> Verdict | None:
        """Seat a BLOCKED job whose edges are linked. Returns a verdict at once if its deps already decide it."""
        missing: set[str] = set()
        completed = JobState.COMPLETED
        for dep in deps:
            state = dep.state
            if state is completed or dep.service_up:  # a service counts as done once it is up
                continue
            if state in FINAL_STATES:
                return job, False, f"dependency {dep.id} is {state.value}"
            missing.add(dep.id)
        if not missing:
            return job, True, ""
        self._waiting[job.id] = missing  # its edges are in the index already (link)
        return None

    def release(self, job_id: str, satisfied: bool, reason: str) -> list[Verdict]:
        """``job_id`` is final (or a service is up): the waiting children it decides, in submission order."""
        verdicts: list[Verdict] = []
        waiting = self._waiting
        for dependant in self._children.get(job_id, ()):
            missing = waiting.get(dependant.id)
            if missing is None or job_id not in missing or dependant.state is not JobState.BLOCKED:
                continue  # not waiting on it: decided already (skipped by another dep, cancelled), or never
            if not satisfied:
                del waiting[dependant.id]
                verdicts.append((dependant, False, reason))
                continue
            missing.discard(job_id)
            if not missing:
                del waiting[dependant.id]
                verdicts.append((dependant, True, ""))
        return verdicts

    def forget(self, job_id: str) -> None:
        """A blocked job left the room another way (cancelled)."""
        self._waiting.pop(job_id, None)

    def missing(self, job_id: str) -> int:
        """How many of the job's dependencies are not COMPLETED yet (0 if it is not waiting)."""
        return len(self._waiting.get(job_id, ()))

    def children(self, job_id: str) -> list[Job]:
        """Every job that depends on ``job_id``, in submission order."""
        return list(self._children.get(job_id, ()))

    def skipped_downstream(self, job_id: str) -> list[Job]:
        """The SKIPPED jobs reachable from ``job_id`` through SKIPPED jobs, parents before children."""
        children = self._children
        found: dict[str, Job] = {}
        queue: deque[str] = deque([job_id])
        while queue:
            for child in children.get(queue.popleft(), ()):
                if child.state is JobState.SKIPPED and child.id not in found:
                    found[child.id] = child
                    queue.append(child.id)
        # Kahn within the found set, so a job comes after every found job it depends on
        parents = {job.id: sum(1 for dep in set(job.deps) if dep in found) for job in found.values()}
        ready: deque[Job] = deque(job for job in found.values() if parents[job.id] == 0)
        order: list[Job] = []
        while ready:
            job = ready.popleft()
            order.append(job)
            for child in children.get(job.id, ()):
                if child.id in parents:
                    parents[child.id] -= 1
                    if parents[child.id] == 0:
                        ready.append(child)
        return order
