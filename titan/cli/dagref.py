"""A job id or a DAG id, where STATUS, WATCH and ``titan wait`` take either.

``SUBMIT_DAG`` answers with the DAG's id (``DAG-5c1e09a2``), so that is the id a
user has at hand; CANCEL_DAG and ``titan list --dag`` already take it, and the
commands that show or follow jobs take it too rather than answering "no job".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from protocol import JobInfo
from titan.client import TitanClient
from titan.errors import RemoteError

__all__ = ["Subject", "expand_dag_ids", "resolve"]

_UNKNOWN_JOB: Final = "UNKNOWN_JOB"
# the master names every DAG so; only such an unknown id is worth a second question
_DAG_PREFIX: Final = "DAG-"


@dataclass(frozen=True, slots=True)
class Subject:
    """What an id names: one job (``job``) and its DAG's jobs, or a DAG alone (``job`` is None)."""

    job: JobInfo | None
    members: list[JobInfo]
    dag: str | None


async def _dag_members(client: TitanClient, ref: str, unknown: RemoteError) -> list[JobInfo]:
    """The jobs of DAG ``ref``; ``unknown`` (the "no job" answer) is raised when it names no DAG either."""
    if not ref.startswith(_DAG_PREFIX):
        raise unknown
    try:
        members = await client.dag_jobs(ref)
    except RemoteError:
        raise unknown from None
    if not members or members[0].dag != ref:
        raise unknown
    return members


async def resolve(client: TitanClient, ref: str) -> Subject:
    """The job ``ref`` names with its DAG's jobs, or, if ``ref`` is a DAG id, that DAG's jobs."""
    try:
        job = await client.status(ref)
    except RemoteError as exc:
        if exc.code != _UNKNOWN_JOB:
            raise
        members = await _dag_members(client, ref, exc)
        return Subject(None, members, ref)
    if job.dag is None:
        return Subject(job, [job], None)
    return Subject(job, await client.dag_jobs(job.dag), job.dag)


async def expand_dag_ids(client: TitanClient, refs: Sequence[str]) -> list[str]:
    """``refs`` with each DAG id replaced by the ids of its jobs; job ids pass through unasked."""
    ids: list[str] = []
    for ref in refs:
        if not ref.startswith(_DAG_PREFIX):
            ids.append(ref)
            continue
        subject = await resolve(client, ref)
        ids.extend([ref] if subject.job is not None else [member.id for member in subject.members])
    return ids
