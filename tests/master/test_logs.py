"""The master's log hub, driven datagram by datagram without a socket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from protocol import LogData, LogRecord, TaskStatus, encode_log_record, log_key, log_record_mac
from titan.master.gc import collectable
from titan.master.logs import LogHub
from titan.master.logstore import LogStore


class FakeTransport:
    def __init__(self) -> None:
        self.buffered = 0

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakePeer:
    label = "fake"

    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.sent: list[LogData] = []

    def send(self, message: Any, **_: Any) -> bool:
        self.sent.append(message)
        return True

    def text(self, stream: str) -> bytes:
        return b"".join(m.data for m in self.sent if m.stream == stream)


def job(job_id: str = "J", attempts: int = 1, final: bool = False) -> Any:
    return SimpleNamespace(id=job_id, attempts=attempts, is_final=final, runs=[], worker_name="[1]")


def record(seq: int, data: bytes, offset: int, stream: str = "stdout", key: bytes | None = None, **kw: Any) -> bytes:
    rec = LogRecord(job_id=kw.get("job_id", "J"), attempt=1, stream=stream, seq=seq, data=data, offset=offset)  # type: ignore[arg-type]
    if key is not None:
        rec = LogRecord(rec.job_id, rec.attempt, rec.stream, rec.seq, rec.data, rec.offset, log_record_mac(key, rec))
    return encode_log_record(rec)


@pytest.fixture
async def hub(tmp_path: Path) -> LogHub:
    return LogHub(LogStore(tmp_path), lambda job_id, attempt: job_id == "J" and attempt == 1)


async def test_records_reach_followers_in_order_and_replays_are_dropped(hub: LogHub) -> None:
    peer = FakePeer()
    assert hub.subscribe(peer, job(), follow=True) == 1  # type: ignore[arg-type]
    hub.datagram(record(0, b"hello ", 0))
    hub.datagram(record(1, b"world\n", 6))
    hub.datagram(record(1, b"world\n", 6))  # replayed
    hub.datagram(record(0, b"oops\n", 0, stream="stderr"))
    hub._flush()
    assert peer.text("stdout") == b"hello world\n"
    assert peer.text("stderr") == b"oops\n"
    assert hub.counts["received"] == 3
    assert hub.counts["replayed"] == 1


async def test_large_records_reach_a_follower_whole_in_few_frames(hub: LogHub, tmp_path: Path) -> None:
    peer = FakePeer()
    hub.subscribe(peer, job(), follow=True)  # type: ignore[arg-type]
    pieces = [bytes([65 + i]) * 60_000 for i in range(10)]  # datagrams as large as a local path carries
    for seq, piece in enumerate(pieces):
        hub.datagram(record(seq, piece, seq * 60_000))
    hub._flush()
    assert peer.text("stdout") == b"".join(pieces)
    assert len(peer.sent) < len(pieces)  # joined into LOG_DATA frames, not one frame per datagram
    assert (tmp_path / "jobs" / "J" / "attempt-1" / "stdout").read_bytes() == b"".join(pieces)


async def test_unknown_attempts_and_garbage_are_counted_not_taken(hub: LogHub) -> None:
    hub.datagram(record(0, b"x", 0, job_id="OTHER"))
    hub.datagram(b"\x01\x60\x00\x00\x00\x00\x00\x01\xc1")
    hub.datagram(b"not a frame at all")
    assert hub.counts == {**hub.counts, "unknown": 1, "malformed": 2, "received": 0}


async def test_with_a_token_forged_records_are_dropped(tmp_path: Path) -> None:
    hub = LogHub(LogStore(tmp_path), lambda *_: True, token="s3cret")
    key = log_key("s3cret")
    hub.datagram(record(0, b"good\n", 0, key=key))
    hub.datagram(record(1, b"forged\n", 5))  # no mac
    hub.datagram(record(1, b"forged\n", 5, key=log_key("guess")))  # wrong key
    tampered = bytearray(record(1, b"tamper\n", 5, key=key))
    tampered[tampered.rindex(b"tamper")] ^= 1  # a byte of the data, under the mac
    hub.datagram(bytes(tampered))
    assert hub.counts["received"] == 1
    assert hub.counts["forged"] + hub.counts["malformed"] == 3
    assert hub.counts["forged"] >= 2


async def test_a_lost_datagram_leaves_a_gap_live_and_the_exact_log_replaces_it(hub: LogHub, tmp_path: Path) -> None:
    peer = FakePeer()
    hub.subscribe(peer, job(), follow=True)  # type: ignore[arg-type]
    hub.datagram(record(0, b"one\n", 0))
    hub.datagram(record(2, b"three\n", 8))  # seq 1 ("two\n") never arrives
    hub._flush()
    assert peer.text("stdout") == b"one\nthree\n"
    live_copy = tmp_path / "jobs" / "J" / "attempt-1" / "stdout"
    assert live_copy.read_bytes() == b"one\nthree\n"
    exact = b"one\ntwo\nthree\nfour\n"
    status = TaskStatus("J", 1, "COMPLETED", exit_code=0, stdout=exact, stderr=b"", log_datagrams=3)
    stats = hub.attempt_ended(status, job(final=True))  # type: ignore[arg-type]
    hub.store.flush()
    assert stats.log_lost == 1
    assert live_copy.read_bytes() == exact
    assert peer.text("stdout") == b"one\nthree\nfour\n"  # the gap stays, the tail comes from the exact log
    hub.job_final("J")
    assert peer.sent[-1].eof
    result = json.loads((tmp_path / "jobs" / "J" / "attempt-1" / "result.json").read_text())
    assert result["state"] == "COMPLETED" and result["log_lost"] == 1 and result["stdout_bytes"] == len(exact)


async def test_a_slow_follower_is_cut_off_with_a_reason(hub: LogHub) -> None:
    slow, fast = FakePeer(), FakePeer()
    hub.subscribe(slow, job(), follow=True)  # type: ignore[arg-type]
    hub.subscribe(fast, job(), follow=True)  # type: ignore[arg-type]
    slow.transport.buffered = hub.follower_buffer_bytes + 1
    hub.datagram(record(0, b"data\n", 0))
    hub._flush()
    assert slow.sent[-1].eof and "cut off" in slow.sent[-1].error
    assert fast.text("stdout") == b"data\n"
    hub.datagram(record(1, b"more\n", 5))
    hub._flush()
    assert len(slow.sent) == 1 and fast.text("stdout") == b"data\nmore\n"
    assert hub.counts["followers_cut"] == 1


async def test_logs_of_a_finished_job_are_the_stored_ones_then_eof(hub: LogHub) -> None:
    status = TaskStatus("J", 1, "FAILED", exit_code=1, stdout=b"out\n", stderr=b"err\n")
    hub.attempt_ended(status, job())  # type: ignore[arg-type]
    peer = FakePeer()
    hub.subscribe(peer, job(final=True), follow=True)  # type: ignore[arg-type]
    assert peer.text("stdout") == b"out\n" and peer.text("stderr") == b"err\n"
    assert peer.sent[-1].eof


def test_gc_keeps_unfinished_jobs_whatever_their_age() -> None:
    jobs: dict[str, Any] = {
        "old-done": SimpleNamespace(is_final=True, finished_at=100.0),
        "new-done": SimpleNamespace(is_final=True, finished_at=1000.0),
        "old-running": SimpleNamespace(is_final=False, finished_at=None),
        "old-backing-off": SimpleNamespace(is_final=False, finished_at=None),
    }
    names = [*jobs, "orphan-old", "orphan-new"]
    mtimes = {"orphan-old": 50.0, "orphan-new": 2000.0}
    chosen = collectable(names, jobs, cutoff=500.0, mtime=lambda n: mtimes.get(n, 0.0))
    assert chosen == ["old-done", "orphan-old"]


async def test_every_frame_says_where_its_bytes_start(hub: LogHub) -> None:
    peer = FakePeer()
    hub.subscribe(peer, job(), follow=True)  # type: ignore[arg-type]
    hub.datagram(record(0, b"one\n", 0))
    hub._flush()
    hub.datagram(record(2, b"three\n", 8))  # "two\n" lost: the next frame starts after the hole
    hub.datagram(record(3, b"four\n", 14))
    hub.datagram(record(1, b"two\n", 4))  # late: behind what was shown, not shown again
    hub._flush()
    assert [(m.offset, m.data) for m in peer.sent] == [(0, b"one\n"), (8, b"three\nfour\n")]
    exact = b"one\ntwo\nthree\nfour\nfive\n"
    hub.attempt_ended(TaskStatus("J", 1, "COMPLETED", exit_code=0, stdout=exact, stderr=b""), job(final=True))  # type: ignore[arg-type]
    assert (peer.sent[-1].offset, peer.sent[-1].data) == (19, b"five\n")  # the exact log's tail, where it goes


async def test_a_restarted_master_sends_its_old_live_copy_without_a_position(tmp_path: Path) -> None:
    before = LogHub(LogStore(tmp_path), lambda job_id, attempt: True)
    before.datagram(record(0, b"early\n", 0))
    before.close()
    after = LogHub(LogStore(tmp_path), lambda job_id, attempt: True)  # the same workspace, nothing live yet
    peer = FakePeer()
    after.subscribe(peer, job(), follow=True)  # type: ignore[arg-type]
    assert [(m.offset, m.data) for m in peer.sent] == [(None, b"early\n")]
    after.datagram(record(5, b"later\n", 20))
    after._flush()
    assert (peer.sent[-1].offset, peer.sent[-1].data) == (20, b"later\n")


async def test_the_stored_log_of_an_ended_attempt_starts_at_zero(hub: LogHub) -> None:
    hub.attempt_ended(TaskStatus("J", 1, "COMPLETED", exit_code=0, stdout=b"out\n", stderr=b""), job())  # type: ignore[arg-type]
    ended = LogHub(hub.store, lambda job_id, attempt: False)
    peer = FakePeer()
    ended.subscribe(peer, job(final=True), follow=False)  # type: ignore[arg-type]
    assert [(m.offset, m.data, m.eof) for m in peer.sent] == [(0, b"out\n", False), (None, b"", True)]


class EndingPeer(FakePeer):
    """A peer whose ``ended`` is set by the eof frame."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = asyncio.Event()

    def send(self, message: Any, **kw: Any) -> bool:
        if message.eof:
            self.ended.set()
        return super().send(message, **kw)


async def test_following_a_job_whose_worker_was_lost_ends_at_the_linger(tmp_path: Path) -> None:
    running = {"J": True}
    hub = LogHub(LogStore(tmp_path), lambda job_id, attempt: running[job_id], linger_s=0.05)
    hub.datagram(record(0, b"last words\n", 0))
    running["J"] = False  # its worker was lost and the job went DEAD: no report will come
    hub.job_final("J")
    early = EndingPeer()
    hub.subscribe(early, job(final=True), follow=True)  # type: ignore[arg-type]
    await asyncio.wait_for(early.ended.wait(), 5)
    assert early.text("stdout") == b"last words\n"
    late = EndingPeer()
    hub.subscribe(late, job(final=True), follow=True)  # type: ignore[arg-type]
    assert late.ended.is_set() and late.text("stdout") == b"last words\n"  # the live copy, then eof at once
    assert hub.extra()["log_followers"] == 0


async def test_a_new_reader_after_a_restart_gets_the_old_copy_then_the_live_log(tmp_path: Path) -> None:
    before = LogHub(LogStore(tmp_path), lambda job_id, attempt: True)
    before.datagram(record(0, b"early\n", 0))
    before.close()
    after = LogHub(LogStore(tmp_path), lambda job_id, attempt: True)
    after.inherit([("J", 1)])
    after.datagram(record(5, b"later\n", 20))  # seqs 1-4 went by while no master listened
    after.datagram(record(7, b"last\n", 30))  # seq 6 is lost on the way
    after._flush()
    peer = FakePeer()
    after.subscribe(peer, job(), follow=False)  # type: ignore[arg-type]
    assert [(m.offset, m.data) for m in peer.sent if m.data] == [(None, b"early\n"), (20, b"later\n"), (30, b"last\n")]
    status = TaskStatus("J", 1, "COMPLETED", exit_code=0, stdout=b"x" * 35, stderr=b"", log_datagrams=8)
    assert after.attempt_ended(status, job(final=True)).log_lost == 1  # type: ignore[arg-type]


async def test_an_attempt_inherited_and_silent_since_counts_nothing_lost(tmp_path: Path) -> None:
    hub = LogHub(LogStore(tmp_path), lambda job_id, attempt: True)
    hub.inherit([("J", 1)])
    status = TaskStatus("J", 1, "COMPLETED", exit_code=0, stdout=b"old\n", stderr=b"", log_datagrams=3)
    assert hub.attempt_ended(status, job(final=True)).log_lost == 0  # type: ignore[arg-type]


async def test_a_new_reader_of_a_long_running_attempt_gets_its_log_from_the_start(tmp_path: Path) -> None:
    hub = LogHub(LogStore(tmp_path), lambda job_id, attempt: True, live_log_bytes=8, follower_buffer_bytes=1000)
    lines = [b"line %d\n" % i for i in range(20)]
    offset = 0
    for seq, line in enumerate(lines):
        hub.datagram(record(seq, line, offset))
        offset += len(line)
    hub.datagram(record(0, b"warning\n", 0, stream="stderr"))
    peer = FakePeer()
    hub.subscribe(peer, job(), follow=False)  # type: ignore[arg-type]
    assert peer.text("stdout") == b"".join(lines)  # memory kept only the last line; the disk copy the rest
    assert peer.text("stderr") == b"warning\n"
    assert [m.offset for m in peer.sent if m.data and m.stream == "stdout"][0] == 0


async def test_a_reader_gets_no_disk_copy_where_a_datagram_was_missed(tmp_path: Path) -> None:
    hub = LogHub(LogStore(tmp_path), lambda job_id, attempt: True, live_log_bytes=8)
    hub.datagram(record(0, b"one\n", 0))
    hub.datagram(record(2, b"three\n", 8))  # "two\n" lost: the copy on disk has no place for it
    hub.datagram(record(3, b"four\n", 14))
    peer = FakePeer()
    hub.subscribe(peer, job(), follow=False)  # type: ignore[arg-type]
    assert [(m.offset, m.data) for m in peer.sent if m.data] == [(14, b"four\n")]  # the client says what is missing


async def test_a_head_larger_than_half_a_followers_buffer_is_sent_from_its_latest_part(tmp_path: Path) -> None:
    hub = LogHub(LogStore(tmp_path), lambda job_id, attempt: True, live_log_bytes=8, follower_buffer_bytes=40)
    hub.datagram(record(0, b"x" * 100, 0))
    hub.datagram(record(1, b"tail\n", 100))
    peer = FakePeer()
    hub.subscribe(peer, job(), follow=False)  # type: ignore[arg-type]
    assert [(m.offset, len(m.data)) for m in peer.sent if m.data] == [(80, 25)]  # 20 from disk, then the chunk
