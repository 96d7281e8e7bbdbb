"""Live logs: running attempts' stdout/stderr, shipped to the master over UDP.

Theory of operation
-------------------
A job writes its stdout and stderr straight into files in its attempt
directory (the spawn hands them to the job as its fds 1 and 2), so nothing the worker
does can slow the job down or lose a byte of it: the files are the exact log.
The :class:`LogShipper` *tails* those files. One timer looks at each running
attempt every ``interval_s``, reads whatever it has added since the last look
(``preadv`` from the last offset into one buffer kept for it: one syscall and
no allocation when nothing is new) and sends it as LOG_RECORD datagrams, each
filled up to the size that never fragments on the path: 1 200 bytes to a
master on another host, 65 000 to one on this host (the loopback interface's
MTU is 64 KiB; less if the kernel reports a lower MTU for the path). A chatty
job therefore costs one datagram per ~1 KiB of output over a network and per
~64 KiB locally, not one per line, and the first bytes of a quiet job are on
their way within one interval. A datagram's header is built apart and handed
to ``sendmsg`` with a view of the output: the output is never copied in user
space.

Every look costs a wakeup here, at the master and at each follower, so an
attempt whose last look found at least ``busy_bytes`` (a job writing over
~12 MB/s) is looked at every ``busy_interval_s`` instead, until a look finds
less: its datagrams are full either way, and nobody reads a log scrolling that
fast any later for it. A look reads at most a quarter of ``backlog_bytes`` per
``interval_s`` since the attempt's previous look.

Nothing blocks. The UDP socket is non-blocking: a datagram the kernel will not
take is dropped and counted. If a job writes faster than the shipper keeps up
and the unread part grows past ``backlog_bytes``, the shipper skips ahead to the
newest output; the skipped part is missing from the live view only. Every
dropped or skipped datagram still uses its sequence number, so the master sees
the gap, and the final TASK_STATUS says how many sequence numbers the attempt
used (``log_datagrams``) so the master can count what never arrived.

An attempt is first looked at once it has run for a whole interval, so the
many jobs that end sooner never have their files opened here; at the end
:func:`read_logs` costs a job that printed nothing two ``stat`` calls. That
keeps the spawn fast path what it was (the price: output in a job's first
interval is shipped up to one interval later).

When an attempt ends, :meth:`LogShipper.finish` gives it one last look (if it
was being tailed: the live view then ends where the job did) and stops tailing
it, and :func:`read_logs` reads the complete files (their tails, over the size
limit) for the final TASK_STATUS, which is what the master stores.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from protocol import (
    LOG_DATAGRAM_BYTES,
    LOG_LOCAL_DATAGRAM_BYTES,
    LogRecord,
    TaskRef,
    log_data_budget,
    log_mac,
    log_record_head,
)
from protocol import log_key as derive_log_key

__all__ = ["LogCapture", "LogShipper", "read_logs"]

log = logging.getLogger(__name__)

Stream = Literal["stdout", "stderr"]
_STREAMS: Final[tuple[Stream, Stream]] = ("stdout", "stderr")
_SEND_BUFFER_BYTES: Final = 1024 * 1024
_IP_MTU: Final = 14  # Linux's getsockopt options for a connected socket's path MTU (not in ``socket``)
_IPV6_MTU: Final = 24
_NO_MTU: Final = 65_536
_IP_UDP_HEADERS: Final = 48  # IPv6 (40) + UDP (8): what a datagram adds to its payload, at most


@dataclass(frozen=True, slots=True)
class LogCapture:
    """An ended attempt's logs for its final TASK_STATUS."""

    stdout: bytes | None
    stderr: bytes | None
    truncated: bool = False
    datagrams: int = 0


class _Tail:
    """One stream of one running attempt: where the file is and how far it was shipped."""

    __slots__ = ("fd", "path", "pos", "stream")

    def __init__(self, path: str, stream: Stream) -> None:
        self.path = path
        self.stream: Stream = stream
        self.fd = -1
        self.pos = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Watched:
    """A running attempt; its tails are set up at its first look, which most short jobs never reach."""

    __slots__ = ("budget", "directory", "due", "looked", "ref", "seq", "tailed", "tails")

    def __init__(self, ref: TaskRef, directory: str, now: float, first_look: float) -> None:
        self.ref = ref
        self.directory = directory
        self.tails: list[_Tail] = []
        self.seq = {"stdout": 0, "stderr": 0}
        self.budget = 0  # output bytes per datagram
        self.due = first_look  # when it is looked at next
        self.looked = now  # when it was last looked at (or started)
        self.tailed = False  # looked at by the timer at least once

    def begin(self, budget: int) -> None:
        self.budget = budget
        self.tails = [_Tail(f"{self.directory}/{stream}", stream) for stream in _STREAMS]
        self.tailed = True


class LogShipper:
    """Tails running attempts' output files and sends it to the master's UDP port.

    Args:
        host, port: the master (its UDP port has the number of its TCP port).
        token: the cluster token; each datagram then carries a MAC.
        interval_s: how often running attempts are looked at.
        busy_interval_s, busy_bytes: how often an attempt is looked at while each look finds
            at least ``busy_bytes`` of new output.
        datagram_bytes: the largest datagram sent to a master on another host (1 200 never fragments).
        local_datagram_bytes: the largest sent to a master on this host, over the loopback
            interface (its MTU is 64 KiB, so 65 000 does not fragment either; a lowered MTU
            lowers it).
        backlog_bytes: how far behind a job the shipper may fall before it skips ahead.
        local_only: ship only to a master on this host (datagrams are not encrypted: a worker
            that dials its master over TLS keeps job output off the network unless told otherwise).

    Attributes:
        max_datagram: the largest datagram sent on the path found by :meth:`start`.
        drop: a test hook: a record for which it returns True is not sent (its seq is used).
        sent, dropped: datagrams sent, and dropped on this side (full socket, hook, skipped).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str | None = None,
        interval_s: float = 0.005,
        busy_interval_s: float = 0.02,
        busy_bytes: int = 64 * 1024,
        datagram_bytes: int = LOG_DATAGRAM_BYTES,
        local_datagram_bytes: int = LOG_LOCAL_DATAGRAM_BYTES,
        backlog_bytes: int = 1024 * 1024,
        local_only: bool = False,
    ) -> None:
        self.host = host
        self.local_only = local_only
        self.port = port
        self.interval_s = interval_s
        self.busy_interval_s = max(busy_interval_s, interval_s)
        self.busy_bytes = busy_bytes
        self.datagram_bytes = datagram_bytes
        self.local_datagram_bytes = local_datagram_bytes
        self.max_datagram = datagram_bytes
        self.backlog_bytes = backlog_bytes
        self.drop: Callable[[LogRecord], bool] | None = None
        self.sent = 0
        self.dropped = 0
        self._key = derive_log_key(token) if token else None
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._watched: dict[TaskRef, _Watched] = {}
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0

    async def start(self) -> None:
        """Resolve the master's address and open the socket; without one, logs are only sent at the end."""
        try:
            infos = await self._loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            log.warning("live logs disabled: cannot reach %s:%d over UDP: %s", self.host, self.port, exc)
            return
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER_BYTES)
            sock.connect(address)
            local = _on_this_host(sock, str(address[0]))
        except OSError as exc:
            sock.close()
            log.warning("live logs disabled: cannot reach %s:%d over UDP: %s", self.host, self.port, exc)
            return
        if self.local_only and not local:
            sock.close()
            log.info(
                "live logs off: the master is on another host and log datagrams are not encrypted (TLS covers "
                "TCP only); logs arrive whole when each attempt ends (--live-logs-in-clear ships them anyway)"
            )
            return
        if local:
            # the loopback interface's MTU is 64 KiB unless someone lowered it: never more than it carries whole
            local_bytes = min(self.local_datagram_bytes, _path_mtu(sock) - _IP_UDP_HEADERS)
            self.max_datagram = max(self.datagram_bytes, local_bytes)
        else:
            self.max_datagram = self.datagram_bytes
        self.backlog_bytes = max(self.backlog_bytes, 4 * self.max_datagram)
        self._buffer = bytearray(self.backlog_bytes // 4)  # one read: the most a look takes per interval
        self._sock = sock

    def close(self) -> None:
        """Stop tailing everything and close the socket."""
        for watched in self._watched.values():
            for tail in watched.tails:
                tail.close()
        self._watched.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def watching(self) -> int:
        return len(self._watched)

    def watch(self, ref: TaskRef, directory: str) -> None:
        """Start shipping a running attempt's output (its files need not exist yet)."""
        if self._sock is None or not directory:
            return
        now = self._loop.time()
        # first looked at after one interval: most short jobs are over by then, their files never opened
        watched = self._watched[ref] = _Watched(ref, directory, now, now + self.interval_s)
        self._arm(watched.due)

    def finish(self, ref: TaskRef) -> int:
        """Stop shipping an attempt; returns the sequence numbers it used (both streams).

        An attempt already being tailed gets one last look first, so the live view
        ends where the job did (what it wrote in its last interval would otherwise
        reach followers only through the exact log, and not at all over the size limit).
        """
        watched = self._watched.pop(ref, None)
        if watched is None:
            return 0
        if not self._watched and self._timer is not None:
            # nothing left to look at: a timer left to fire would wake the worker for nothing, most
            # likely while its next short job runs (the next watch arms one again)
            self._timer.cancel()
            self._timer = None
        if watched.tailed and self._sock is not None:
            self._look(watched, self._loop.time())
        for tail in watched.tails:
            tail.close()
        return watched.seq["stdout"] + watched.seq["stderr"]

    # ------------------------------------------------------------------ the timer
    def _arm(self, due: float) -> None:
        """Have the timer fire at ``due`` at the latest."""
        if self._timer is not None:
            if self._timer_due <= due:
                return
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._loop.call_at(due, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._sock is None:
            return
        now = self._loop.time()
        # a look due within half an interval is taken now: timers are not that precise, and an
        # extra wakeup for it would cost more than looking a little early
        horizon = now + self.interval_s / 2
        due = float("inf")
        for watched in list(self._watched.values()):
            if watched.due <= horizon:
                if not watched.tailed:
                    budget = log_data_budget(
                        watched.ref.job_id, with_mac=self._key is not None, datagram_bytes=self.max_datagram
                    )
                    if budget <= 0:  # a datagram this small cannot carry a byte for this job
                        del self._watched[watched.ref]
                        continue
                    watched.begin(budget)
                found = self._look(watched, now)
                watched.due = now + (self.busy_interval_s if found >= self.busy_bytes else self.interval_s)
            due = min(due, watched.due)
        if self._watched:
            self._arm(due)

    def _look(self, watched: _Watched, now: float) -> int:
        """Ship what each stream of ``watched`` has added; returns how many bytes that was."""
        intervals = max(1, min(self.busy_interval_s, now - watched.looked) / self.interval_s)
        allowance = int(len(self._buffer) * intervals)
        watched.looked = now
        found = 0
        for tail in watched.tails:
            try:
                found += self._ship(watched, tail, allowance)
            except OSError as exc:  # the file vanished or cannot be read: stop tailing it
                log.debug("%s#%d %s: %s", watched.ref.job_id, watched.ref.attempt, tail.stream, exc)
                tail.close()
                tail.pos = -1
        return found

    def _ship(self, watched: _Watched, tail: _Tail, allowance: int) -> int:
        """Ship up to ``allowance`` bytes of one stream; returns how many it shipped (or skipped)."""
        if tail.pos < 0:
            return 0
        if tail.fd < 0:
            try:
                tail.fd = os.open(tail.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return 0
        buffer = self._buffer
        chunk = len(buffer)
        start = tail.pos
        while allowance > 0:
            size = os.preadv(tail.fd, [buffer], tail.pos)
            if size == chunk:
                behind = os.fstat(tail.fd).st_size - tail.pos
                if behind > self.backlog_bytes:
                    # skip to the newest output: the live view loses the middle, the file keeps it
                    skipped = behind - chunk
                    lost = -(-skipped // watched.budget)
                    watched.seq[tail.stream] += lost
                    self.dropped += lost
                    tail.pos += skipped
                    size = os.preadv(tail.fd, [buffer], tail.pos)
                    allowance = size  # caught up: this is the last read
            if size:
                with memoryview(buffer) as view, view[:size] as data:
                    self._send(watched, tail, data)
            if size < chunk:
                break
            allowance -= size
        return tail.pos - start

    def _send(self, watched: _Watched, tail: _Tail, data: memoryview) -> None:
        """Send ``data`` (the output at ``tail.pos``) in datagrams of ``watched.budget`` bytes each."""
        sock = self._sock
        assert sock is not None
        key, drop = self._key, self.drop
        job_id, attempt = watched.ref.job_id, watched.ref.attempt
        stream, budget, seqs, pos = tail.stream, watched.budget, watched.seq, tail.pos
        for start in range(0, len(data), budget):
            piece = data[start : start + budget]
            seq = seqs[stream]
            seqs[stream] = seq + 1
            offset = pos + start
            mac = log_mac(key, job_id, attempt, stream, seq, offset, piece) if key is not None else None
            if drop is not None and drop(LogRecord(job_id, attempt, stream, seq, bytes(piece), offset, mac)):
                self.dropped += 1
                continue
            try:
                # the header and the output go out as they are: the kernel gathers them into one datagram
                sock.sendmsg((log_record_head(job_id, attempt, stream, seq, offset, len(piece), mac), piece))
            except OSError:
                self.dropped += 1  # the kernel's buffer is full, nobody listens (yet), no route ...
            else:
                self.sent += 1
        tail.pos = pos + len(data)


def _path_mtu(sock: socket.socket) -> int:
    """The MTU the kernel knows for a connected socket's path (Linux), else the largest there is."""
    if sys.platform != "linux":
        return _NO_MTU
    try:
        if sock.family == socket.AF_INET6:
            return sock.getsockopt(socket.IPPROTO_IPV6, _IPV6_MTU)
        return sock.getsockopt(socket.IPPROTO_IP, _IP_MTU)
    except OSError:
        return _NO_MTU


def _on_this_host(sock: socket.socket, destination: str) -> bool:
    """Whether a connected socket's datagrams stay on this host (the loopback interface carries them)."""
    try:
        ip = ipaddress.ip_address(destination.split("%", 1)[0])
    except ValueError:
        return False
    if ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback):
        return True
    return bool(sock.getsockname()[0] == destination)  # one of this host's own addresses


def read_logs(directory: str, max_bytes: int, datagrams: int = 0) -> LogCapture:
    """An ended attempt's complete stdout and stderr (each only its last ``max_bytes`` if longer)."""
    if not directory:
        return LogCapture(None, None, datagrams=datagrams)
    out, cut_out = _read_tail(f"{directory}/stdout", max_bytes)
    err, cut_err = _read_tail(f"{directory}/stderr", max_bytes)
    return LogCapture(out, err, cut_out or cut_err, datagrams)


def _read_tail(path: str, max_bytes: int) -> tuple[bytes | None, bool]:
    try:
        size = os.stat(path).st_size
        if size == 0:
            return b"", False
        with open(path, "rb") as f:
            if size > max_bytes:
                f.seek(size - max_bytes)
                return f.read(max_bytes), True
            return f.read(max_bytes), False
    except OSError:
        return None, False
