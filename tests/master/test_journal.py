"""Replay and rebuild without a network: records from a live core rebuild an equal state."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import msgpack
import pytest

from protocol import JobSpec, TaskRef
from titan.jobs import Job, JobState
from titan.master import MasterState
from titan.master.durable import DurableLog
from titan.master.journal import (
    RESTART_FIELDS,
    RESTARTED,
    RUNTIME_FIELDS,
    SPEC_FIELDS,
    TRANSIENT_FIELDS,
    Journal,
    Replay,
    apply,
    dump,
    load_snapshot,
)
from titan.master.registry import Health
from titan.wal import encode_record, load

from .helpers import TIMEOUT_S, make_state, register, report, sent, shell

S = JobState


def journaled(**overrides: Any) -> MasterState:
    state = make_state(**overrides)
    state.journal = Journal()
    return state


def take(state: MasterState, records: list[dict[str, Any]]) -> None:
    assert state.journal is not None
    record = state.journal.take()
    if record is not None:
        # through the real codec: what the WAL stores is what replay reads
        records.append(msgpack.unpackb(msgpack.packb(record, use_bin_type=True), raw=False))


def rebuilt(records: list[dict[str, Any]], now: float, **overrides: Any) -> MasterState:
    """The state a master restarted on ``records`` has, its own start logged (``RESTARTED``) as it does."""
    records.append(dict(RESTARTED))
    replay = Replay({}, story_limit=50)
    for record in copy.deepcopy(records):  # replay takes rows over, as it may a freshly decoded record's
        apply(replay, record)
    state = make_state(**overrides)
    state.restore(replay.jobs, failed_attempts=replay.failed_attempts, now=now)
    return state


PERSISTED = (*SPEC_FIELDS, *RUNTIME_FIELDS)


def same_jobs(a: MasterState, b: MasterState) -> None:
    assert list(a.jobs) == list(b.jobs)
    for job_id, job in a.jobs.items():
        other = b.jobs[job_id]
        for name in PERSISTED:
            assert getattr(other, name) == getattr(job, name), (job_id, name)


def test_every_job_field_is_either_persisted_or_deliberately_transient() -> None:
    fields = {f.name for f in dataclasses.fields(Job)}
    assert fields == set(PERSISTED) | set(TRANSIENT_FIELDS) | set(RESTART_FIELDS), "add a new Job field to journal.py"


def test_acceptance_rows_follow_the_field_order_replay_builds_jobs_with() -> None:
    # replay calls Job(*row) with the row minus its last cell ("due"): the orders must agree
    names = [f.name for f in dataclasses.fields(Job)]
    assert SPEC_FIELDS[-1] == "due"
    assert names[: len(SPEC_FIELDS) - 1] == list(SPEC_FIELDS[:-1])


def test_a_job_at_its_usual_values_is_accepted_in_a_short_row_and_replays_whole() -> None:
    live = journaled(retry_backoff_cap_s=60.0)  # the usual backoff, as Job's defaults have it
    records: list[dict[str, Any]] = []
    plain, _ = live.submit(shell("plain"), 1.0)
    unusual, _ = live.submit(shell("unusual", priority=5, args=["x"], max_attempts=1), 1.0)
    take(live, records)
    rows = [row for record in records for row in record["a"]]
    assert [len(row) for row in rows] == [6, len(SPEC_FIELDS)]
    same_jobs(live, rebuilt(records, now=2.0, retry_backoff_cap_s=60.0))


def test_a_busy_history_replays_to_the_same_table_and_queues() -> None:
    live = journaled()
    records: list[dict[str, Any]] = []
    register(live, "w1", capacity=1)
    take(live, records)
    a, _ = live.submit(shell("a"), 1.0)  # dispatched to w1 in the same stimulus
    take(live, records)
    b, _ = live.submit(shell("b", priority=5), 2.0)  # queued: w1 is full
    c, _ = live.submit(shell("c", delay_ms=60_000), 3.0)  # delayed until 63.0
    dag, _ = live.submit_dag(
        [JobSpec(type="SHELL", data="x", id="P"), JobSpec(type="SHELL", data="y", id="Q", deps=["P", a.id])], 4.0
    )
    take(live, records)
    live.task_status("w1", report(a, "RUNNING"), 5.0)
    live.task_status("w1", report(a, "FAILED", exit_code=3), 6.0)  # retry after backoff
    take(live, records)
    live.task_status("w1", report(a, "COMPLETED", attempt=1), 6.5)  # a late, fenced report
    take(live, records)

    again = rebuilt(records, now=7.0)
    same_jobs(live, again)
    assert again.jobs[a.id].state is S.FAILED and again.jobs[a.id].due == live.jobs[a.id].due
    assert [j.id for j in again.ready.jobs()] == [j.id for j in live.ready.jobs()]
    assert again.next_due() == live.next_due()
    assert again.room.missing("Q") == live.room.missing("Q") == 2
    assert again.counts == live.counts
    assert again.failed_attempts == live.failed_attempts == 1
    assert again.dags == {} or set(again.dags) == set(live.dags)
    assert [s.stimulus for s in again.jobs[a.id].story] == [s.stimulus for s in live.jobs[a.id].story]
    assert any("ignored COMPLETED of attempt 1" in s.stimulus for s in again.jobs[a.id].story)
    again.validate()
    new, _ = again.submit(shell("d"), 8.0)
    assert new.seq == max(j.seq for j in live.jobs.values()) + 1
    del b, c, dag


def test_a_dag_is_one_record_whole() -> None:
    live = journaled()
    records: list[dict[str, Any]] = []
    live.submit_dag([JobSpec(type="SHELL", data="x", id="A"), JobSpec(type="SHELL", data="y", id="B", deps=["A"])], 1)
    take(live, records)
    assert len(records) == 1 and [row[0] for row in records[0]["a"]] == ["A", "B"]


def test_active_jobs_wait_for_their_worker_then_are_lost_after_the_timeout() -> None:
    live = journaled()
    records: list[dict[str, Any]] = []
    register(live, "w1", capacity=2)
    x, _ = live.submit(shell("x"), 1.0)
    y, _ = live.submit(shell("y"), 1.0)
    live.task_status("w1", report(x, "RUNNING"), 2.0)
    take(live, records)

    again = rebuilt(records, now=100.0)
    worker = again.registry.get("w1")
    assert worker is not None and worker.health is Health.DISCONNECTED
    assert set(worker.active) == {x.id, y.id}
    assert again.check_health(100.0 + TIMEOUT_S / 2) == []  # still within the grace period
    again.check_health(100.0 + TIMEOUT_S)
    for job_id in (x.id, y.id):
        job = again.jobs[job_id]
        assert job.state is S.PENDING and job.error == "worker lost" and job.attempts == 1


def test_a_returning_worker_reports_and_its_results_apply_once() -> None:
    live = journaled()
    records: list[dict[str, Any]] = []
    register(live, "w1", capacity=3)
    x, _ = live.submit(shell("x"), 1.0)
    y, _ = live.submit(shell("y"), 1.0)
    z, _ = live.submit(shell("z"), 1.0)
    take(live, records)

    again = rebuilt(records, now=50.0)
    done = report(x, "COMPLETED", exit_code=0)
    stale, effects = register(again, "w1", capacity=3, now=51.0, running=[TaskRef(y.id, 1)], finished=[done])
    assert stale == [] and sent(effects) == [("w1", z.id)]  # z was never claimed: rescheduled at once
    assert again.jobs[x.id].state is S.COMPLETED and again.jobs[x.id].attempts == 1
    assert again.jobs[y.id].state is S.RUNNING
    assert again.jobs[z.id].attempts == 3  # 2 is skipped: it may have started just before the restart
    again.task_status("w1", done, 52.0)  # the same result again: fenced, not applied twice
    assert again.counts[S.COMPLETED] == 1
    assert "ignored COMPLETED" in again.jobs[x.id].story[-1].stimulus


def test_an_attempt_whose_dispatch_never_reached_the_disk_is_fenced_and_its_number_never_reused() -> None:
    # A TASK_START leaves before its dispatch is durable; the master dies before the fsync.
    live = journaled()
    records: list[dict[str, Any]] = []
    register(live, "w1", capacity=1)
    blocker, _ = live.submit(shell("blocker"), 1.0)
    x, _ = live.submit(shell("x", max_attempts=2), 1.0)
    take(live, records)  # durable: both accepted, the blocker dispatched, x PENDING
    live.task_status("w1", report(blocker, "COMPLETED", exit_code=0), 2.0)
    assert x.state is S.SCHEDULED and x.attempts == 1  # its TASK_START went out ...
    assert live.journal is not None and live.journal.take() is not None  # ... and this record was lost

    again = rebuilt(records, now=10.0)
    assert again.jobs[x.id].state is S.PENDING and again.jobs[x.id].attempts == 0
    orphan = report(x, "COMPLETED", exit_code=0, attempt=1)
    stale, effects = register(again, "w1", capacity=2, now=11.0, running=[TaskRef(x.id, 1)])
    assert stale == [TaskRef(x.id, 1)]  # the worker kills the attempt nobody remembers
    job = again.jobs[x.id]
    # the blocker's completion was lost too, so it reruns as well (at-least-once)
    assert ("w1", x.id) in sent(effects) and job.attempts == 2  # reruns as 2: 1 stays the orphan's
    assert job.attempts_left == 1  # as for any first attempt of two: the skipped number cost no retry
    assert job.to_info().tries == 1  # and is not shown as one (it read 2/2)
    again.task_status("w1", orphan, 12.0)  # the orphan's result, reported late: ignored
    assert job.state is S.SCHEDULED and "ignored COMPLETED of attempt 1" in job.story[-1].stimulus
    again.task_status("w1", report(job, "COMPLETED", exit_code=0), 13.0)
    assert job.state is S.COMPLETED and [run.attempt for run in job.runs] == [2]


def test_a_late_report_of_a_lost_attempt_is_fenced_after_a_restart() -> None:
    live = journaled()
    records: list[dict[str, Any]] = []
    register(live, "w1")
    register(live, "w2")
    x, _ = live.submit(shell("x"), 1.0)
    take(live, records)
    first = x.worker
    again = rebuilt(records, now=10.0)
    other = "w2" if first == "w1" else "w1"
    register(again, other, now=10.0)
    again.heartbeat(other, 10.0 + TIMEOUT_S - 1)
    again.check_health(10.0 + TIMEOUT_S)  # the first worker never came back: rerun elsewhere
    job = again.jobs[x.id]
    assert job.attempts == 3 and job.worker != first and job.state is S.SCHEDULED  # 2 skipped
    assert first is not None
    stale, _ = register(again, first, now=10.0 + TIMEOUT_S + 1, running=[TaskRef(x.id, 1)])
    assert stale == [TaskRef(x.id, 1)]
    again.task_status(first, report(x, "COMPLETED", attempt=1), 10.0 + TIMEOUT_S + 2)
    assert job.state is S.SCHEDULED and job.attempts == 3
    assert "ignored COMPLETED of attempt 1" in job.story[-1].stimulus


def test_snapshot_roundtrip_keeps_runtime_fields_and_attempt_records() -> None:
    live = journaled()
    register(live, "w1")
    x, _ = live.submit(shell("x"), 1.0)
    live.task_status("w1", report(x, "FAILED", exit_code=2), 2.0)
    live.submit(shell("y", delay_ms=5000), 3.0)
    snapshot = msgpack.unpackb(msgpack.packb(dump(live.jobs.values(), failed_attempts=1)), raw=False)
    replay = load_snapshot(snapshot, story_limit=50, now=9.0)
    again = make_state()
    again.restore(replay.jobs, failed_attempts=replay.failed_attempts, now=9.0)
    same_jobs(live, again)
    assert [r.to_info() for r in again.jobs[x.id].runs] == [r.to_info() for r in live.jobs[x.id].runs]
    assert again.next_due() == live.next_due()


def test_a_snapshot_of_another_format_is_refused() -> None:
    with pytest.raises(ValueError, match="snapshot format"):
        load_snapshot({"v": 99, "jobs": []}, story_limit=50, now=0.0)


# ------------------------------------------------------------------ DurableLog.recover on real files


def write_log(directory: Path, records: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True)
    path = directory / "wal-000000000001.log"
    path.write_bytes(b"".join(encode_record(r) for r in records))
    return path


@pytest.mark.parametrize("cut", ["truncated", "corrupted"])
def test_a_damaged_last_record_is_dropped_and_reported(tmp_path: Path, cut: str) -> None:
    live = journaled()
    records: list[dict[str, Any]] = []
    for i in range(3):
        live.submit(shell(f"job {i}"), float(i))
        take(live, records)
    path = write_log(tmp_path / "wal", records)
    data = bytearray(path.read_bytes())
    if cut == "truncated":
        del data[-5:]
    else:
        data[-3] ^= 0xFF
    path.write_bytes(bytes(data))

    state = make_state()
    wal = DurableLog(tmp_path / "wal", state)
    wal.recover(now=10.0)
    assert wal.report is not None
    assert wal.report.records == 2 and len(state.jobs) == 2
    assert "torn tail" in wal.report.problem
    assert wal.extra()["recovery_dropped"] == wal.report.problem
    assert "DROPPED torn tail" in wal.report.summary()
    assert load(tmp_path / "wal").problem is None  # repaired: the next writer appends to a clean log


def test_a_job_still_skipped_after_a_retry_keeps_its_new_reason_across_a_restart() -> None:
    live = journaled()
    register(live, "w1", capacity=4, now=1.0)
    records: list[dict[str, Any]] = []
    (a, x, b), _ = live.submit_dag(
        [
            JobSpec(type="SHELL", data="a", id="A", max_attempts=1),
            JobSpec(type="SHELL", data="x", id="X", max_attempts=1),
            JobSpec(type="SHELL", data="b", id="B", deps=["A", "X"]),
        ],
        now=1.0,
    )
    live.task_status("w1", report(a, "FAILED", exit_code=1), 2.0)
    live.task_status("w1", report(x, "FAILED", exit_code=1), 2.0)
    live.retry("A", 3.0)
    take(live, records)
    again = rebuilt(records, now=10.0)
    assert again.jobs["B"].state is S.SKIPPED and again.jobs["B"].error == "dependency X is DEAD"


def test_two_crashes_in_a_row_never_hand_out_an_attempt_number_twice() -> None:
    # The second master dispatches attempt 2 (1 skipped after the first crash) and dies before
    # logging it; the third must not give that number out again.
    live = journaled()
    records: list[dict[str, Any]] = []
    x, _ = live.submit(shell("x"), 1.0)
    take(live, records)  # x PENDING, attempt 0, durable
    second = rebuilt(records, now=10.0)
    register(second, "w1", now=11.0)
    assert second.jobs[x.id].attempts == 2  # dispatched as 2; its record is lost with the crash
    third = rebuilt(records, now=20.0)  # the records hold two starts now, no dispatch
    assert third.jobs[x.id].skip_attempts == 2
    register(third, "w1", now=21.0)
    assert third.jobs[x.id].attempts == 3 and third.jobs[x.id].attempts_left == 2  # skips cost no retry


def test_a_snapshot_keeps_the_numbers_a_job_skips() -> None:
    live = journaled()
    records: list[dict[str, Any]] = []
    x, _ = live.submit(shell("x"), 1.0)
    take(live, records)
    state = rebuilt(records, now=10.0)
    snapshot = load_snapshot(dump(state.jobs.values(), failed_attempts=0), story_limit=50, now=11.0)
    assert snapshot.jobs[x.id].skip_attempts == 1


def test_a_result_lost_with_the_masters_crash_reruns_the_job_without_using_a_try() -> None:
    # The worker reported x's end; the master died before logging it. After the restart the worker
    # neither runs x nor kept its result (it had sent it): x runs again, and its one try is not spent.
    live = journaled()
    records: list[dict[str, Any]] = []
    register(live, "w1", capacity=2)
    x, _ = live.submit(shell("x", max_attempts=1), 1.0)
    live.task_status("w1", report(x, "RUNNING"), 2.0)
    take(live, records)  # durable: x RUNNING on w1, attempt 1
    again = rebuilt(records, now=10.0)
    _, effects = register(again, "w1", capacity=2, now=11.0)  # nothing running, nothing finished
    job = again.jobs[x.id]
    assert job.state is S.SCHEDULED and ("w1", x.id) in sent(effects)  # not DEAD "worker lost"
    assert job.attempts_left == 0 and job.to_info().tries == 1  # the lost attempt did not count
    assert any("result was lost in the master's restart" in step.stimulus for step in job.story)


def test_a_worker_that_lost_an_attempt_without_a_master_restart_spends_the_try() -> None:
    live = journaled()
    register(live, "w1", capacity=2)
    x, _ = live.submit(shell("x", max_attempts=1), 1.0)
    live.task_status("w1", report(x, "RUNNING"), 2.0)
    live.worker_disconnected("w1", now=3.0)
    register(live, "w1", capacity=2, now=4.0)  # back, without x: the same master saw it go
    assert x.state is S.DEAD and x.error == "worker lost"
