"""The log shipper on its own: a real UDP socket stands in for the master."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol import (
    LOG_DATAGRAM_BYTES,
    LOG_LOCAL_DATAGRAM_BYTES,
    LogRecord,
    TaskRef,
    decode_datagram,
    log_key,
    log_record_mac,
)
from tests.support import wait_until
from titan.worker import logship
from titan.worker.logship import LogShipper, _on_this_host

TOKEN = "cluster-secret"
REF = TaskRef("TSK-1", 1)


class Receiver:
    """A UDP socket on loopback that keeps every LOG_RECORD sent to it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.sizes: list[int] = []
        self.records: list[LogRecord] = []

    def drain(self) -> None:
        while True:
            try:
                datagram = self.sock.recv(65_535)
            except BlockingIOError:
                return
            self.sizes.append(len(datagram))
            self.records.append(LogRecord.from_wire(decode_datagram(datagram).body))

    def stream(self, name: str, job_id: str = REF.job_id) -> bytes:
        """The stream's bytes put back together by offset (checking there is no gap or overlap)."""
        self.drain()
        out = bytearray()
        mine = (r for r in self.records if r.stream == name and r.job_id == job_id)
        for record in sorted(mine, key=lambda r: r.seq):
            assert record.offset == len(out), "a gap or an overlap"
            out += record.data
        return bytes(out)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    yield r
    r.sock.close()


async def started(receiver: Receiver, **kw: object) -> LogShipper:
    shipper = LogShipper("127.0.0.1", receiver.port, interval_s=0.002, **kw)  # type: ignore[arg-type]
    await shipper.start()
    return shipper


def attempt_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "attempt-1"
    directory.mkdir()
    (directory / "stdout").write_bytes(b"")
    (directory / "stderr").write_bytes(b"")
    return directory


async def test_to_a_master_on_this_host_datagrams_carry_64k_and_the_stream_is_whole(
    receiver: Receiver, tmp_path: Path
) -> None:
    shipper = await started(receiver, token=TOKEN)
    try:
        assert shipper.max_datagram == LOG_LOCAL_DATAGRAM_BYTES
        directory = attempt_dir(tmp_path)
        shipper.watch(REF, str(directory))
        out = b"".join(b"line %d\n" % i for i in range(60_000))  # 590 KB: under the backlog
        (directory / "stdout").write_bytes(out)
        (directory / "stderr").write_bytes(b"oops\n")
        await wait_until(lambda: receiver.stream("stdout") == out, what="the whole stdout")
        assert receiver.stream("stderr") == b"oops\n"
        assert max(receiver.sizes) <= LOG_LOCAL_DATAGRAM_BYTES
        assert max(receiver.sizes) > 60_000  # filled, not 1 200 bytes each
        key = log_key(TOKEN)
        assert all(r.mac == log_record_mac(key, r) for r in receiver.records)
        assert shipper.finish(REF) == len(receiver.records) == shipper.sent
    finally:
        shipper.close()


async def test_with_local_datagrams_off_the_safe_size_is_used(receiver: Receiver, tmp_path: Path) -> None:
    shipper = await started(receiver, local_datagram_bytes=LOG_DATAGRAM_BYTES)
    try:
        assert shipper.max_datagram == LOG_DATAGRAM_BYTES
        directory = attempt_dir(tmp_path)
        shipper.watch(REF, str(directory))
        out = b"x" * 50_000
        (directory / "stdout").write_bytes(out)
        await wait_until(lambda: receiver.stream("stdout") == out, what="the whole stdout")
        assert max(receiver.sizes) <= LOG_DATAGRAM_BYTES
    finally:
        shipper.close()


async def test_local_only_ships_to_a_master_on_this_host_and_to_no_other(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    here = await started(receiver, local_only=True)  # a TLS worker whose master is on this host
    try:
        directory = attempt_dir(tmp_path)
        here.watch(REF, str(directory))
        (directory / "stdout").write_bytes(b"live\n")
        await wait_until(lambda: receiver.stream("stdout") == b"live\n", what="the live line")
    finally:
        here.close()
    monkeypatch.setattr(logship, "_on_this_host", lambda sock, destination: False)  # as if on another host
    caplog.set_level(logging.INFO, logger="titan.worker.logship")
    elsewhere = await started(receiver, local_only=True)
    try:
        elsewhere.watch(REF, str(directory))
        assert elsewhere.watching == 0 and elsewhere.finish(REF) == 0  # nothing is ever tailed or sent
        assert "live logs off: the master is on another host and log datagrams are not encrypted" in caplog.text
    finally:
        elsewhere.close()


async def test_local_datagrams_never_exceed_what_the_path_carries_whole(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logship, "_path_mtu", lambda sock: 9000)  # a loopback interface with a lowered MTU
    shipper = await started(receiver)
    try:
        assert shipper.max_datagram == 9000 - 48
    finally:
        shipper.close()


class FakeSocket:
    def __init__(self, local: str) -> None:
        self.local = local

    def getsockname(self) -> tuple[str, int]:
        return (self.local, 40000)


@pytest.mark.parametrize(
    ("local", "destination", "expected"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.53", True),
        ("::1", "::1", True),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1", True),
        ("10.0.0.5", "10.0.0.5", True),  # this host's own address: the kernel routes it over loopback
        ("10.0.0.5", "10.0.0.6", False),
        ("2001:db8::5", "2001:db8::6", False),
        ("10.0.0.5", "not-an-address", False),
    ],
)
def test_only_a_master_on_this_host_gets_the_large_datagrams(local: str, destination: str, expected: bool) -> None:
    assert _on_this_host(FakeSocket(local), destination) is expected  # type: ignore[arg-type]


async def test_finish_ships_what_was_written_since_the_last_look(receiver: Receiver, tmp_path: Path) -> None:
    shipper = await started(receiver)
    try:
        directory = attempt_dir(tmp_path)
        shipper.watch(REF, str(directory))
        (directory / "stdout").write_bytes(b"first\n")
        await wait_until(lambda: receiver.stream("stdout") == b"first\n", what="the first line")
        # no await from here to finish(): no look by the timer can come in between
        with open(directory / "stdout", "ab") as f:
            f.write(b"last\n")
        with open(directory / "stderr", "ab") as f:
            f.write(b"bye\n")
        used = shipper.finish(REF)
        assert receiver.stream("stdout") == b"first\nlast\n"
        assert receiver.stream("stderr") == b"bye\n"
        assert used == len(receiver.records) == 3
    finally:
        shipper.close()


async def test_an_attempt_that_ends_before_its_first_look_is_never_read(receiver: Receiver, tmp_path: Path) -> None:
    shipper = await started(receiver)
    shipper.interval_s = 3600.0
    try:
        directory = attempt_dir(tmp_path)
        shipper.watch(REF, str(directory))
        (directory / "stdout").write_bytes(b"quick\n")
        assert shipper.finish(REF) == 0  # the final report carries it
        receiver.drain()
        assert receiver.records == []
    finally:
        shipper.close()


async def test_the_timer_stops_with_the_last_attempt_and_not_before(receiver: Receiver, tmp_path: Path) -> None:
    shipper = await started(receiver)
    shipper.interval_s = 3600.0
    other = TaskRef(REF.job_id + "-2", 1)
    (tmp_path / "other").mkdir()
    first, second = attempt_dir(tmp_path), attempt_dir(tmp_path / "other")
    try:
        shipper.watch(REF, str(first))
        shipper.watch(other, str(second))
        shipper.finish(REF)
        assert shipper._timer is not None  # the other attempt still gets its looks
        shipper.finish(other)
        assert shipper._timer is None  # nothing would wake the worker for nothing later
        shipper.watch(REF, str(first))
        assert shipper._timer is not None
    finally:
        shipper.close()


async def test_a_chatty_attempt_is_looked_at_less_often_and_a_quiet_one_is_not(
    receiver: Receiver, tmp_path: Path
) -> None:
    shipper = await started(receiver, busy_interval_s=3600.0, busy_bytes=1000)
    try:
        chatty, quiet = tmp_path / "chatty", tmp_path / "quiet"
        for directory in (chatty, quiet):
            directory.mkdir()
            (directory / "stdout").write_bytes(b"")
        shipper.watch(TaskRef("CHATTY", 1), str(chatty))
        shipper.watch(TaskRef("QUIET", 1), str(quiet))
        (chatty / "stdout").write_bytes(b"x" * 5000)
        await wait_until(lambda: receiver.stream("stdout", "CHATTY") == b"x" * 5000, what="the chatty output")
        watched = shipper._watched
        assert watched[TaskRef("CHATTY", 1)].due - shipper._loop.time() > 60  # busy: its next look is far off
        assert watched[TaskRef("QUIET", 1)].due - shipper._loop.time() < 60
        (quiet / "stdout").write_bytes(b"still here\n")
        await wait_until(lambda: receiver.stream("stdout", "QUIET") == b"still here\n", what="the quiet line")
        (chatty / "stdout").write_bytes(b"x" * 6000)
        assert shipper.finish(TaskRef("CHATTY", 1)) == 2  # its last look, at the end
        assert receiver.stream("stdout", "CHATTY") == b"x" * 6000
    finally:
        shipper.close()


async def test_a_job_far_ahead_is_skipped_to_its_newest_output(receiver: Receiver, tmp_path: Path) -> None:
    shipper = await started(receiver, local_datagram_bytes=LOG_DATAGRAM_BYTES, backlog_bytes=8000)
    try:
        directory = attempt_dir(tmp_path)
        shipper.watch(REF, str(directory))
        out = bytes(range(256)) * 400  # 102 400 bytes: far over the backlog
        (directory / "stdout").write_bytes(out)
        watched = shipper._watched[REF]  # its tails are set up at its first look
        await wait_until(lambda: bool(watched.tails) and watched.tails[0].pos == len(out), what="caught up")
        receiver.drain()
        assert shipper.dropped > 0
        shipped = sorted(receiver.records, key=lambda r: r.seq)
        assert shipped[0].seq > 0 and shipped[0].offset > 0  # the skipped part used its sequence numbers
        assert b"".join(r.data for r in shipped) == out[shipped[0].offset :]
        assert shipper.finish(REF) == shipper.dropped + shipper.sent
    finally:
        shipper.close()
