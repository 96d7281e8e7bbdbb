"""The master's WAL records: what one stimulus changed, and how to replay it. Pure.

Theory of operation
-------------------
The core records every change as it happens into a :class:`Journal`; the
asyncio shell takes one record per stimulus (:meth:`Journal.take`) and appends
it to the WAL. One record per stimulus makes each stimulus atomic on disk: a
DAG is accepted whole or not at all, and a dependency's completion is never
found without the releases it caused.

A record holds *results*, not requests, so replay never runs admission,
scheduling or retry policy again (the perm files, the workers and the random
source may all have changed since)::

    {"a": [accepted job rows ...],       # the job as admitted, in its first state
     "s": [state rows ...],              # a job's state and runtime fields after a transition
     "n": [[job id, note, t] ...]}       # something noted without a change (a fenced report)

Keys are left out when empty. Rows are positional lists (fields named by
:data:`SPEC_FIELDS`, :data:`RUNTIME_FIELDS`, :data:`STATE_FIELDS`): smaller and
several times faster to pack and unpack than maps, which is what lets a
million-record log replay in seconds. Within a record every acceptance comes
before every state row; that is safe because a state row only ever updates a
job and an acceptance only ever creates one.

Replay (:func:`apply`) therefore rebuilds the job table directly, including each
job's story. The structures derived from it (ready queue, delay heap, waiting
room, counts, worker slots) are rebuilt afterwards from the table by
:meth:`titan.master.core.MasterState.restore`. A snapshot (:func:`dump`) is the
whole table as full rows (spec and runtime, no story) plus the counters that
job states cannot tell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from titan.jobs import ACTIVE_STATES, FINAL_STATES, Job, JobState, Step
from titan.jobs.attempts import AttemptRecord

__all__ = [
    "RUNTIME_FIELDS",
    "SNAPSHOT_VERSION",
    "SPEC_FIELDS",
    "STATE_FIELDS",
    "TRANSIENT_FIELDS",
    "RESTART_FIELDS",
    "RESTARTED",
    "restart_skips",
    "Journal",
    "Replay",
    "apply",
    "apply_all",
    "dump",
    "load_snapshot",
]

#: what a job was asked to be, fixed at admission (plus its first state and due time)
SPEC_FIELDS: Final = (
    "id",
    "type",
    "data",
    "seq",
    "submitted_at",
    "state",
    "run_kind",
    "run_data",
    "run_args",
    "args",
    "priority",
    "delay_ms",
    "deps",
    "max_attempts",
    "timeout_s",
    "slots",
    "memory_mb",
    "skills",
    "affinity",
    "port",
    "payload",
    "dag",
    "backoff_base_s",
    "backoff_factor",
    "backoff_cap_s",
    "due",
)
#: what happened to it; a snapshot row is SPEC_FIELDS + RUNTIME_FIELDS
RUNTIME_FIELDS: Final = (
    "attempts",
    "retry_base",
    "worker",
    "worker_name",
    "exit_code",
    "error",
    "started_at",
    "finished_at",
    "runs",
    "outputs",
)
#: a state row: the job id, its new state, every field a transition handler may set, and the story step
STATE_FIELDS: Final = ("id", "state", *RUNTIME_FIELDS[:-2], "due", "run", "outputs", "stimulus", "t")
#: fields rebuilt on restore, never written: queue tickets and the story (replayed from state rows), and
#: a service's live status (its worker reports it again after the master restarts; a child worker re-registers)
TRANSIENT_FIELDS: Final = ("ticket", "steps", "story_limit", "service_up", "restarts")
#: kept by RESTARTED records (one per master start: every unfinished job's next attempt skips a number)
#: and in snapshots (a row's last cell)
RESTART_FIELDS: Final = ("skip_attempts",)
#: the record a master appends, durably, when it starts and before it dispatches anything
RESTARTED: Final[Mapping[str, Any]] = {"r": 1}

SNAPSHOT_VERSION: Final = 1

_STATES: Final[Mapping[str, JobState]] = {state.value: state for state in JobState}
_FAILED_ATTEMPT_STATES: Final = frozenset({JobState.FAILED})


# Cells at their usual value are written as None, which none of them can hold: the
# worker's command usually repeats the type and data, and nearly every job has the
# default skills and backoff. Fewer objects to unpack and keep halves the decode
# time of a million-row replay; _job_from_spec puts the values back.
_GENERAL: Final = frozenset({"GENERAL"})
_BACKOFF: Final = (1.0, 2.0, 60.0)  # Job's own defaults (not the settings': those may change)


# The rest of an acceptance row when every one of its cells is at its usual value:
# then the row is cut after the state (six cells instead of twenty-six), which
# unpacks in two thirds of the time. Snapshots always write whole rows.
_USUAL_TAIL: Final[list[Any]] = [
    None,
    None,
    (),
    (),
    1,
    0,
    (),
    3,
    None,
    1,
    None,
    None,
    False,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
]
_HEAD_CELLS: Final = 6


def _accept_row(job: Job) -> list[Any]:
    """The acceptance row the journal writes: :func:`_spec_row`, cut short when its tail is the usual one."""
    row = _spec_row(job)
    if row[_HEAD_CELLS:] == _USUAL_TAIL:  # list against list: no tuple built per submission
        del row[_HEAD_CELLS:]
    return row


def _spec_row(job: Job) -> list[Any]:
    return [
        job.id,
        job.type,
        job.data,
        job.seq,
        job.submitted_at,
        job.state,  # a StrEnum: packs as its value, without the cost of .value
        None if job.run_kind == job.type else job.run_kind,
        None if job.run_data == job.data else job.run_data,
        job.run_args,
        job.args,
        job.priority,
        job.delay_ms,
        job.deps,
        job.max_attempts,
        job.timeout_s,
        job.slots,
        job.memory_mb,
        None if job.skills == _GENERAL else sorted(job.skills),
        job.affinity,
        job.port,
        job.payload,
        job.dag,
        None if job.backoff_base_s == _BACKOFF[0] else job.backoff_base_s,
        None if job.backoff_factor == _BACKOFF[1] else job.backoff_factor,
        None if job.backoff_cap_s == _BACKOFF[2] else job.backoff_cap_s,
        job.due,
    ]


def _run_row(run: AttemptRecord) -> list[Any]:
    return [
        run.attempt,
        run.worker,
        run.state,
        run.started_at,
        run.finished_at,
        run.exit_code,
        run.error,
        run.backoff_s,
        run.outputs,
    ]


def _run_from_row(row: list[Any]) -> AttemptRecord:
    attempt, worker, state, started_at, finished_at, exit_code, error, backoff_s, outputs = row
    return AttemptRecord(attempt, worker, state, started_at, finished_at, exit_code, error, backoff_s, outputs)


def _state_row(job: Job, stimulus: str, t: float) -> list[Any]:
    return [
        job.id,
        job.state,  # a StrEnum: packs as its value, without the cost of .value
        job.attempts,
        job.retry_base,
        job.worker,
        job.worker_name,
        job.exit_code,
        job.error,
        job.started_at,
        job.finished_at,
        job.due,
        _run_row(job.runs[-1]) if job.runs else None,
        job.outputs,
        stimulus,
        t,
    ]


class Journal:
    """Collects what the current stimulus changed; :meth:`take` hands it over as one record."""

    __slots__ = ("_accepted", "_changed", "_notes")

    def __init__(self) -> None:
        self._accepted: list[list[Any]] = []
        self._changed: list[list[Any]] = []
        self._notes: list[list[Any]] = []

    def __bool__(self) -> bool:
        return bool(self._accepted or self._changed or self._notes)

    def accepted(self, job: Job) -> None:
        """A job was admitted; call before any transition of it."""
        self._accepted.append(_accept_row(job))

    def accepted_all(self, jobs: Iterable[Job]) -> None:
        """Many jobs were admitted at once (a DAG)."""
        self._accepted.extend(map(_accept_row, jobs))

    def changed(self, job: Job, stimulus: str, t: float) -> None:
        """A transition just happened (``job.state`` is the new state)."""
        self._changed.append(_state_row(job, stimulus, t))

    def noted(self, job: Job, note: str, t: float) -> None:
        """Something worth keeping in the job's story happened without a state change."""
        self._notes.append([job.id, note, t])

    def take(self) -> dict[str, Any] | None:
        """The record of everything since the last take, or None if nothing changed."""
        if not (self._accepted or self._changed or self._notes):
            return None
        record: dict[str, Any] = {}
        if self._accepted:
            record["a"], self._accepted = self._accepted, []
        if self._changed:
            record["s"], self._changed = self._changed, []
        if self._notes:
            record["n"], self._notes = self._notes, []
        return record


# ---------------------------------------------------------------------- replay


@dataclass
class Replay:
    """The job table being rebuilt, and what replay counted on the way."""

    jobs: dict[str, Job]
    story_limit: int = 50
    # failed attempts so far (STATS "failed"): a move to FAILED, or an active attempt requeued
    failed_attempts: int = 0
    records: int = 0
    # state rows naming a job replay never saw accepted (only a damaged log can cause it)
    orphans: int = 0
    # interned skill sets and strings: a million jobs share a handful of each, and
    # every distinct object is memory the restored master keeps
    skills: dict[tuple[str, ...], frozenset[str]] = field(default_factory=dict)
    strings: dict[str, str] = field(default_factory=dict)


_MAX_INTERNED: Final = 10_000


def _shared(strings: dict[str, str], text: str) -> str:
    if len(strings) < _MAX_INTERNED:
        return strings.setdefault(text, text)
    return strings.get(text, text)


def _job_from_spec(row: list[Any], story_limit: int, replay: Replay) -> Job:
    """The job an acceptance row describes (the row is consumed: its cells become the job's).

    The hot loop of replay (a million rows take seconds), hence positional: the
    row's first cells are the dataclass' first fields, in order (see SPEC_FIELDS).
    Strings and skill sets are shared with earlier jobs: a million jobs have a
    handful of distinct ones, and every object is memory the master keeps.
    """
    strings = replay.strings
    if len(row) == _HEAD_CELLS:  # every other field at its usual value (see _accept_row): Job's defaults
        kind, data = _shared(strings, row[1]), _shared(strings, row[2])
        job = Job(row[0], kind, data, row[3], row[4], _STATES[row[5]], kind, data)
        job.story_limit = story_limit
        return job
    due = row.pop()
    row[5] = _STATES[row[5]]
    row[1] = _shared(strings, row[1])  # type
    row[2] = _shared(strings, row[2])  # data
    # run_kind, run_data: None means the same as type, data
    row[6] = row[1] if row[6] is None else _shared(strings, row[6])
    row[7] = row[2] if row[7] is None else _shared(strings, row[7])
    skills = row[17]
    if skills is None:
        row[17] = _GENERAL
    else:
        key = tuple(skills)
        frozen = replay.skills.get(key)
        if frozen is None:
            frozen = replay.skills[key] = frozenset(skills)
        row[17] = frozen
    # run_args, args, deps: msgpack gives lists; the job keeps tuples, the empty one shared
    row[8] = tuple(row[8]) if row[8] else ()
    row[9] = tuple(row[9]) if row[9] else ()
    row[12] = tuple(row[12]) if row[12] else ()
    if row[22] is None:
        row[22] = _BACKOFF[0]
    if row[23] is None:
        row[23] = _BACKOFF[1]
    if row[24] is None:
        row[24] = _BACKOFF[2]
    job = Job(*row)
    job.due = due
    job.story_limit = story_limit
    return job


def apply_all(replay: Replay, records: Iterable[Mapping[str, Any]]) -> None:
    """:func:`apply` each record in turn, with the usual record (one acceptance) handled inline."""
    jobs = replay.jobs
    limit = replay.story_limit
    for record in records:
        accepted = record.get("a")
        if accepted is not None and len(record) == 1:
            replay.records += 1
            for row in accepted:
                job = _job_from_spec(row, limit, replay)
                jobs[job.id] = job
        else:
            apply(replay, record)


def apply(replay: Replay, record: Mapping[str, Any]) -> None:
    """Apply one record to ``replay.jobs``."""
    jobs = replay.jobs
    replay.records += 1
    if record.get("r"):
        restart_skips(jobs.values())
    accepted = record.get("a")
    if accepted:
        limit = replay.story_limit
        for row in accepted:
            job = _job_from_spec(row, limit, replay)
            jobs[job.id] = job
    changed = record.get("s")
    if changed:
        _apply_state_rows(replay, changed)
    notes = record.get("n")
    if notes:
        for job_id, note, t in notes:
            noted = jobs.get(job_id)
            if noted is not None:
                noted.note(note, t)


def _apply_state_rows(replay: Replay, rows: Iterable[list[Any]]) -> None:
    jobs = replay.jobs
    for row in rows:
        (job_id, state_name, attempts, retry_base, worker, worker_name,
         exit_code, error, started, finished, due, run, outputs, stimulus, t) = row  # fmt: skip
        found = jobs.get(job_id)
        if found is None:
            replay.orphans += 1
            continue
        job = found
        start, finish = job.state, _STATES[state_name]
        if finish in _FAILED_ATTEMPT_STATES or (start in ACTIVE_STATES and finish is JobState.PENDING):
            replay.failed_attempts += 1
        if attempts > job.attempts:
            job.skip_attempts = 0  # a dispatch: it took its skipped numbers up
        job.state = finish
        job.attempts, job.retry_base = attempts, retry_base
        job.worker, job.worker_name = worker, worker_name
        job.exit_code, job.error = exit_code, error
        job.started_at, job.finished_at, job.due = started, finished, due
        job.outputs = tuple(outputs) if outputs else ()
        if run is not None:
            runs = job.runs
            if runs and runs[-1].attempt == run[0]:
                job.runs = (*runs[:-1], _run_from_row(run))
            else:
                job.runs = (*runs, _run_from_row(run))
        job.add_step(start, finish, stimulus, t)


# ---------------------------------------------------------------------- snapshots


def restart_skips(jobs: Iterable[Job]) -> None:
    """A master started: every unfinished job's next attempt skips one more number."""
    for job in jobs:
        if job.state not in FINAL_STATES:
            job.skip_attempts += 1


def dump(jobs: Iterable[Job], *, failed_attempts: int) -> dict[str, Any]:
    """The whole job table as a snapshot state (build it in the same step as the WAL cut)."""
    return {
        "v": SNAPSHOT_VERSION,
        "failed_attempts": failed_attempts,
        "jobs": [
            [
                *_spec_row(job),
                job.attempts,
                job.retry_base,
                job.worker,
                job.worker_name,
                job.exit_code,
                job.error,
                job.started_at,
                job.finished_at,
                [_run_row(run) for run in job.runs],
                job.outputs,
                job.skip_attempts,
            ]
            for job in jobs
        ],
    }


def load_snapshot(state: Mapping[str, Any], *, story_limit: int, now: float) -> Replay:
    """A :class:`Replay` started from a snapshot state made by :func:`dump`.

    Raises:
        ValueError: the snapshot was written by an incompatible version.
    """
    if state.get("v") != SNAPSHOT_VERSION:
        raise ValueError(f"snapshot format {state.get('v')!r} is not {SNAPSHOT_VERSION}")
    replay = Replay({}, story_limit, failed_attempts=int(state.get("failed_attempts", 0)))
    jobs = replay.jobs
    width = len(SPEC_FIELDS)
    for row in state["jobs"]:
        job = _job_from_spec(row[:width], story_limit, replay)
        (
            job.attempts,
            job.retry_base,
            job.worker,
            job.worker_name,
            job.exit_code,
            job.error,
            job.started_at,
            job.finished_at,
            runs,
            outputs,
            *restart,
        ) = row[width:]
        job.skip_attempts = restart[0] if restart else 0  # a snapshot from before skips were kept: none
        job.runs = tuple(_run_from_row(run) for run in runs)
        job.outputs = tuple(outputs) if outputs else ()
        job.steps = [Step(None, job.state, "restored from a snapshot", now)]
        jobs[job.id] = job
    return replay
