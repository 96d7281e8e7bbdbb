"""Live logs: running attempts' stdout/stderr, shipped to the master over UDP.

Theory of operation
-------------------
A job writes its stdout and stderr straight into files in its attempt
directory (the engine opens them in ``posix_spawn``), so nothing the worker
does can slow the job down or lose a byte of it: the files are the exact log.
The :class:`LogShipper` *tails* those files. Every ``interval_s`` while any
attempt runs, one timer reads whatever each running attempt has added since
the last look (``pread`` from the last offset: one syscall when nothing is new)
and sends it as LOG_RECORD datagrams, each filled up to the size that never
fragments. A chatty job therefore costs one datagram per ~1 KiB of output, not
one per line, and the first bytes of a quiet job are on their way within one
interval.

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

When an attempt ends, :meth:`LogShipper.finish` stops tailing it and
:func:`read_logs` reads the complete files (their tails, over the size limit)
for the final TASK_STATUS, which is what the master stores.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from protocol import LOG_DATAGRAM_BYTES, LogRecord, TaskRef, encode_log_record, log_data_budget, log_record_mac
from protocol import log_key as derive_log_key

__all__ = ["LogCapture", "LogShipper", "read_logs"]

log = logging.getLogger(__name__)

Stream = Literal["stdout", "stderr"]
_STREAMS: Final[tuple[Stream, Stream]] = ("stdout", "stderr")
_SEND_BUFFER_BYTES: Final = 1024 * 1024


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
    __slots__ = ("budget", "ref", "seq", "since", "tails")

    def __init__(self, ref: TaskRef, directory: str, budget: int, since: float) -> None:
        self.ref = ref
        self.since = since
        self.tails = [_Tail(f"{directory}/{stream}", stream) for stream in _STREAMS]
        self.seq = {"stdout": 0, "stderr": 0}
        self.budget = budget


class LogShipper:
    """Tails running attempts' output files and sends it to the master's UDP port.

    Args:
        host, port: the master (its UDP port has the number of its TCP port).
        token: the cluster token; each datagram then carries a MAC.
        interval_s: how often running attempts are looked at.
        datagram_bytes: the largest datagram sent (1 200 never fragments).
        backlog_bytes: how far behind a job the shipper may fall before it skips ahead.

    Attributes:
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
        datagram_bytes: int = LOG_DATAGRAM_BYTES,
        backlog_bytes: int = 1024 * 1024,
    ) -> None:
        self.host = host
        self.port = port
        self.interval_s = interval_s
        self.datagram_bytes = datagram_bytes
        self.backlog_bytes = max(backlog_bytes, 4 * datagram_bytes)
        self.drop: Callable[[LogRecord], bool] | None = None
        self.sent = 0
        self.dropped = 0
        self._key = derive_log_key(token) if token else None
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._watched: dict[TaskRef, _Watched] = {}
        self._timer: asyncio.TimerHandle | None = None

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
        except OSError as exc:
            sock.close()
            log.warning("live logs disabled: cannot reach %s:%d over UDP: %s", self.host, self.port, exc)
            return
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
        budget = log_data_budget(ref.job_id, with_mac=self._key is not None, datagram_bytes=self.datagram_bytes)
        if budget <= 0:
            return  # a datagram this small cannot carry a byte for this job
        self._watched[ref] = _Watched(ref, directory, budget, self._loop.time())
        if self._timer is None:
            self._timer = self._loop.call_later(self.interval_s, self._tick)

    def finish(self, ref: TaskRef) -> int:
        """Stop shipping an attempt; returns the sequence numbers it used (both streams)."""
        watched = self._watched.pop(ref, None)
        if watched is None:
            return 0
        for tail in watched.tails:
            tail.close()
        return watched.seq["stdout"] + watched.seq["stderr"]

    # ------------------------------------------------------------------ the timer
    def _tick(self) -> None:
        self._timer = None
        young = self._loop.time() - self.interval_s
        for watched in list(self._watched.values()):
            if watched.since > young:
                continue  # most short jobs are over before their next look: their files are never opened
            for tail in watched.tails:
                try:
                    self._ship(watched, tail)
                except OSError as exc:  # the file vanished or cannot be read: stop tailing it
                    log.debug("%s#%d %s: %s", watched.ref.job_id, watched.ref.attempt, tail.stream, exc)
                    tail.close()
                    tail.pos = -1
        if self._watched and self._sock is not None:
            self._timer = self._loop.call_later(self.interval_s, self._tick)

    def _ship(self, watched: _Watched, tail: _Tail) -> None:
        if tail.pos < 0:
            return
        if tail.fd < 0:
            try:
                tail.fd = os.open(tail.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return
        chunk = self.backlog_bytes // 4
        data = os.pread(tail.fd, chunk, tail.pos)
        if not data:
            return
        if len(data) == chunk:
            behind = os.fstat(tail.fd).st_size - tail.pos
            if behind > self.backlog_bytes:
                # skip to the newest output: the live view loses the middle, the file keeps it
                skipped = behind - chunk
                lost = -(-skipped // watched.budget)
                watched.seq[tail.stream] += lost
                self.dropped += lost
                tail.pos += skipped
                data = os.pread(tail.fd, chunk, tail.pos)
        self._send(watched, tail, data)

    def _send(self, watched: _Watched, tail: _Tail, data: bytes) -> None:
        sock = self._sock
        assert sock is not None
        ref, stream, budget = watched.ref, tail.stream, watched.budget
        seqs = watched.seq
        view = memoryview(data)
        for start in range(0, len(data), budget):
            piece = bytes(view[start : start + budget])
            record = LogRecord(ref.job_id, ref.attempt, stream, seqs[stream], piece, tail.pos + start)
            seqs[stream] += 1
            if self._key is not None:
                record = _with_mac(record, log_record_mac(self._key, record))
            if self.drop is not None and self.drop(record):
                self.dropped += 1
                continue
            try:
                sock.send(encode_log_record(record))
            except OSError:
                self.dropped += 1  # the kernel's buffer is full, nobody listens (yet), no route ...
            else:
                self.sent += 1
        tail.pos += len(data)


def _with_mac(record: LogRecord, mac: bytes) -> LogRecord:
    return LogRecord(record.job_id, record.attempt, record.stream, record.seq, record.data, record.offset, mac)


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
