"""``DurableLog``: frames wait for the records before them; a failed log sends nothing more."""

from __future__ import annotations

from pathlib import Path

from tests.support import wait_until
from titan.master.durable import DurableLog

from .helpers import make_state, register, sent, shell, write_wal_of_two_masters


class Recorder:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.writes = 0

    def write(self, data: bytes) -> bool:
        self.writes += 1
        self.frames.append(data)
        return True


async def test_frames_wait_for_durability_and_leave_in_order_in_one_write(tmp_path: Path) -> None:
    state = make_state()
    wal = DurableLog(tmp_path / "wal", state)
    wal.recover(now=0.0)
    await wal.start()
    peer = Recorder()
    wal.send(peer, b"before")  # nothing committed yet: straight out
    assert peer.frames == [b"before"]
    for i in range(5):
        state.submit(shell(f"job {i}"), float(i))
        wal.commit()
        wal.send(peer, f"ack {i}".encode())
    assert peer.frames == [b"before"] and wal.held == 5  # not before the fsync
    await wait_until(lambda: wal.held == 0, what="the group commit")
    assert b"".join(peer.frames[1:]) == b"ack 0ack 1ack 2ack 3ack 4"
    assert peer.writes <= 3  # released together: one write per batch, not one per frame
    await wal.aclose()
    again = make_state()
    DurableLog(tmp_path / "wal", again).recover(now=9.0)
    assert len(again.jobs) == 5


async def test_an_answer_never_waits_out_the_commit_delay_and_an_early_start_keeps_its_order(tmp_path: Path) -> None:
    state = make_state()
    wal = DurableLog(tmp_path / "wal", state, commit_delay_s=30.0)
    wal.recover(now=0.0)
    await wal.start()
    client, worker = Recorder(), Recorder()
    state.submit(shell("quiet"), 1.0)
    wal.commit()  # nobody waits on this record: it may linger
    wal.send_early(worker, b"start 1")  # a TASK_START leaves at once
    assert worker.frames == [b"start 1"]
    state.submit(shell("answered"), 2.0)
    wal.commit()
    wal.send(client, b"ack")  # an answer waits on the batch: it is written now, not in 30 s
    wal.send(worker, b"stop 1")
    wal.send_early(worker, b"start 2")  # behind a frame still held for its connection: keeps its place
    assert worker.frames == [b"start 1"] and wal.held == 3
    await wait_until(lambda: wal.held == 0, what="the hurried commit")
    assert client.frames == [b"ack"] and worker.frames == [b"start 1", b"stop 1start 2"]
    await wal.aclose()
    again = make_state()
    DurableLog(tmp_path / "wal", again).recover(now=9.0)
    assert len(again.jobs) == 2


async def test_a_failed_log_withholds_frames_and_says_so(tmp_path: Path) -> None:
    state = make_state()
    failures: list[BaseException] = []
    wal = DurableLog(tmp_path / "wal", state, on_failure=failures.append)
    wal.recover(now=0.0)
    await wal.start()
    writer = wal._writer
    assert writer is not None

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    writer._sync = broken
    peer = Recorder()
    state.submit(shell("x"), 1.0)
    wal.commit()
    wal.send(peer, b"ack")
    await wait_until(lambda: bool(failures), what="the failure to be reported")
    assert peer.frames == [] and wal.held == 0
    wal.send(peer, b"later")
    assert peer.frames == []
    await wal.aclose()


async def test_snapshots_are_taken_by_record_count_and_cover_the_log(tmp_path: Path) -> None:
    state = make_state()
    wal = DurableLog(tmp_path / "wal", state, snapshot_every_records=10)
    wal.recover(now=0.0)
    await wal.start()
    for round_ in (1, 2):
        for i in range(12):
            state.submit(shell(f"job {round_}-{i}"), float(i))
            wal.commit()
        taken = round_
        await wait_until(lambda: wal.snapshots >= taken, what=f"snapshot {taken}")  # noqa: B023
    state.submit(shell("after"), 30.0)
    wal.commit()
    await wal.aclose()
    assert wal.extra()["wal_last_snapshot_at"] is not None
    again = make_state()
    restarted = DurableLog(tmp_path / "wal", again)
    restarted.recover(now=99.0)
    assert len(again.jobs) == 25
    assert restarted.report is not None and restarted.report.snapshot_segment is not None
    assert restarted.report.records < 25


async def test_a_wal_with_two_jobs_per_seq_recovers_and_dispatches_them_all(tmp_path: Path) -> None:
    """Two masters that ran at once on one workspace left such WALs; recovery died on a tie in the ready queue."""
    await write_wal_of_two_masters(tmp_path / "wal", jobs_each=3)
    state = make_state()
    DurableLog(tmp_path / "wal", state).recover(now=9.0)
    assert sorted(job.seq for job in state.jobs.values()) == [1, 1, 2, 2, 3, 3]
    assert len(state.ready.jobs()) == 6
    state.validate()
    new, _ = state.submit(shell("after the restart"), 10.0)
    assert new.seq == 4  # numbering goes on after the highest seq, duplicates or not
    _, effects = register(state, capacity=7, now=10.0)
    assert len(sent(effects)) == 7
