"""The waiting room: BLOCKED jobs and the dependants index. Pure.

Each blocked job carries a count of dependencies not yet COMPLETED; each job id
maps to the blocked jobs that wait on it. A completion therefore touches exactly
its own dependants, never the whole room. A dependency that ends any other final
way (DEAD, CANCELLED, SKIPPED) skips its dependants, and their own dependants in
turn, since each skip is again a final state reported back here.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

from titan.errors import CycleError, ValidationError
from titan.jobs import Job, JobState

__all__ = ["Verdict", "WaitingRoom", "check_dag"]

Verdict = tuple[Job, bool, str]  # (dependant, all deps done?, reason when skipped)


def check_dag(new: Mapping[str, list[str]], known: Container[str]) -> None:
    """Refuse a DAG with unknown dependencies or a cycle, naming the offenders.

    Args:
        new: each new job id and its dependency ids.
        known: ids of jobs already stored (they cannot depend on new ones).

    Raises:
        ValidationError: unknown dependency ids.
        CycleError: the ids along one cycle.
    """
    unknown = sorted({d for deps in new.values() for d in deps if d not in new and d not in known})
    if unknown:
        raise ValidationError(f"unknown dependencies: {', '.join(unknown)}")
    # iterative three-colour DFS over the new jobs only
    colour: dict[str, int] = {}
    for root in new:
        if colour.get(root):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                colour[node] = 1
                path.append(node)
            deps = [d for d in new.get(node, ()) if d in new]
            if i < len(deps):
                stack.append((node, i + 1))
                child = deps[i]
                if colour.get(child) == 1:
                    raise CycleError(path[path.index(child) :])
                if not colour.get(child):
                    stack.append((child, 0))
            else:
                colour[node] = 2
                path.pop()


class WaitingRoom:
    """Blocked jobs and who waits on whom."""

    def __init__(self) -> None:
        self._missing: dict[str, int] = {}  # blocked job id -> deps not yet completed
        self._dependants: dict[str, list[Job]] = {}

    def __len__(self) -> int:
        return len(self._missing)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._missing

    def admit(self, job: Job, deps: list[Job]) -> Verdict | None:
        """Seat a BLOCKED job. Returns a verdict at once if its deps already decide it."""
        missing = 0
        for dep in deps:
            if dep.state is JobState.COMPLETED:
                continue
            if dep.is_final:
                return job, False, f"dependency {dep.id} is {dep.state.value}"
            missing += 1
            self._dependants.setdefault(dep.id, []).append(job)
        if missing == 0:
            return job, True, ""
        self._missing[job.id] = missing
        return None

    def release(self, job_id: str, satisfied: bool, reason: str) -> list[Verdict]:
        """``job_id`` is final: the dependants it decides, in the order they were seated."""
        verdicts: list[Verdict] = []
        for dependant in self._dependants.pop(job_id, ()):
            count = self._missing.get(dependant.id)
            if count is None or dependant.state is not JobState.BLOCKED:
                continue  # already decided (skipped by another dep, or cancelled)
            if not satisfied:
                del self._missing[dependant.id]
                verdicts.append((dependant, False, reason))
            elif count == 1:
                del self._missing[dependant.id]
                verdicts.append((dependant, True, ""))
            else:
                self._missing[dependant.id] = count - 1
        return verdicts

    def forget(self, job_id: str) -> None:
        """A blocked job left the room another way (cancelled)."""
        self._missing.pop(job_id, None)

    def missing(self, job_id: str) -> int:
        return self._missing.get(job_id, 0)
