"""Live logs on the master: LOG_RECORD datagrams in, LOG_DATA to followers out.

Theory of operation
-------------------
The master binds a UDP socket on the number of its TCP port. Its reader drains
the socket (up to a batch per wakeup) and checks each datagram on its own:
it must decode as exactly one LOG_RECORD frame, carry a valid MAC where the
cluster has a token, name an attempt the master has running (or is still
receiving), and have a sequence number not seen before for its stream.
Anything else is dropped and counted (``malformed``, ``forged``, ``unknown``,
``replayed``); UDP has nobody to answer.

An accepted record is appended to the attempt's *live* state: a bounded
in-memory list of ``(stream, bytes)`` in arrival order (what ``LOGS`` of a
running job prints, and what a new follower gets first) and the live copy on
disk (:mod:`titan.master.logstore`). ``offset`` tells where the bytes belong:
a record behind what was already shown (reordered) is not shown again, and one
ahead of it leaves a gap in the live view. Followers of the job get the bytes
batched, one LOG_DATA per contiguous run of a stream per wakeup of the reader
(the records' bytes are kept by reference and joined once, when that LOG_DATA
is made). Each LOG_DATA says where its bytes start in the stream (``offset``),
so a follower that subscribes again after losing the master shows nothing
twice; the live copy on disk has no such positions (it closes the holes lost
datagrams leave), so a restarted master sends it without one.
Datagrams may be up to 64 KiB (a worker on the master's host sends them that
large), so the socket is read with room for the largest.

When the attempt's final TASK_STATUS arrives (:meth:`LogHub.attempt_ended`),
the socket is drained first, so records sent before the report are counted.
The exact logs replace the live copy, followers get the part of the exact log
they have not been shown, and ``log_datagrams - received`` is the number of
datagrams that were lost. When the job itself is final its followers get
``eof`` (at once, or once an attempt still being reported has ended, at most
``linger_s`` later). An attempt whose report never comes (its worker was lost)
stops being live at the end of that linger; its live copy stays as its log.

A follower whose connection's write buffer is over ``follower_buffer_bytes``
is cut off: its last LOG_DATA carries ``eof`` and an ``error`` saying why, and
the master never waits for it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from protocol import (
    LogData,
    LogRecord,
    Opcode,
    ProtocolError,
    TaskStatus,
    decode_datagram,
    log_key,
    log_record_mac,
)
from titan.jobs import Job
from titan.net import Peer

from .logstore import STREAMS, AttemptLogStats, LogStore, Stream

__all__ = ["LogHub"]

log = logging.getLogger(__name__)

_RECEIVE_BUFFER_BYTES: Final = 4 * 1024 * 1024
_BATCH: Final = 512  # datagrams read per wakeup before other callbacks get a turn
_MAX_DATAGRAM: Final = 65535
_CHUNK: Final = 256 * 1024  # the most bytes in one LOG_DATA
_WINDOW: Final = 65536  # out-of-order sequence numbers remembered per stream

#: is (job id, attempt) an attempt the master has SCHEDULED or RUNNING?
IsCurrent = Callable[[str, int], bool]


class _Seen:
    """The sequence numbers seen on one stream: all below ``low``, and those in ``ahead``."""

    __slots__ = ("ahead", "first", "low", "top")

    def __init__(self) -> None:
        self.low = 0
        self.ahead: set[int] = set()
        self.first = -1  # the first seq seen (-1: none yet)
        self.top = 0  # one past the highest seq seen

    def add(self, seq: int) -> bool:
        """Record ``seq``; False if it was seen already (a replay)."""
        if seq < self.low or seq in self.ahead:
            return False
        if self.first < 0:
            self.first = seq
        if seq >= self.top:
            self.top = seq + 1
        if seq != self.low:
            self.ahead.add(seq)
            if len(self.ahead) > _WINDOW:  # give up on the oldest hole: it counts as lost
                self.low = min(self.ahead)
                self._advance()
            return True
        self.low += 1
        self._advance()
        return True

    def _advance(self) -> None:
        ahead = self.ahead
        while self.low in ahead:
            ahead.remove(self.low)
            self.low += 1


@dataclass(eq=False)
class _Live:
    """One attempt receiving datagrams."""

    job_id: str
    attempt: int
    seen: dict[str, _Seen] = field(default_factory=lambda: {"stdout": _Seen(), "stderr": _Seen()})
    end: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})  # shown up to here
    fds: dict[str, int] = field(default_factory=dict)
    chunks: deque[tuple[Stream, int, bytes]] = field(default_factory=deque)  # (stream, offset, bytes)
    chunk_bytes: int = 0
    received: int = 0
    prior: dict[Stream, int] = field(default_factory=dict)  # bytes of its live copy a master before this one kept
    # streams whose live copy on disk is every byte from 0 to ``end`` (no datagram missed so far)
    whole: set[Stream] = field(default_factory=lambda: {"stdout", "stderr"})

    def span(self) -> int:
        """Sequence numbers from each stream's first seen to its highest (those a restarted master could see)."""
        return sum(seen.top - seen.first for seen in self.seen.values() if seen.first >= 0)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class _Run:
    """Contiguous bytes of one attempt's stream waiting for a follower: one LOG_DATA once joined.

    ``offset`` is where they start in the stream (None: not known, see ``LogData.offset``).
    """

    __slots__ = ("attempt", "offset", "parts", "size", "stream")

    def __init__(self, attempt: int, stream: Stream, data: bytes, offset: int | None) -> None:
        self.attempt = attempt
        self.stream: Stream = stream
        self.offset = offset
        self.parts = [data]
        self.size = len(data)

    def follows(self, attempt: int, stream: Stream, offset: int | None) -> bool:
        """Would bytes at ``offset`` continue this run (and the run still has room)?"""
        if self.attempt != attempt or self.stream != stream or self.size >= _CHUNK:
            return False
        if self.offset is None or offset is None:
            return self.offset is None and offset is None
        return self.offset + self.size == offset

    def data(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


@dataclass(eq=False)
class _Follower:
    peer: Peer
    job_id: str
    follow: bool
    attempt: int = 0
    pending: list[_Run] = field(default_factory=list)


class LogHub:
    """The master's UDP log receiver and its followers (see the module docstring).

    Args:
        store: the attempt folders.
        is_current: whether an attempt is one the master has running.
        token: the cluster token (records must then carry a valid MAC).
        live_log_bytes: memory kept per live attempt for LOGS and new followers.
        follower_buffer_bytes: a follower whose write buffer passes this is cut off.
        linger_s: the longest a final job's followers wait for an attempt still being reported.
    """

    def __init__(
        self,
        store: LogStore,
        is_current: IsCurrent,
        *,
        token: str | None = None,
        live_log_bytes: int = 1024 * 1024,
        follower_buffer_bytes: int = 4 * 1024 * 1024,
        linger_s: float = 5.0,
    ) -> None:
        self.store = store
        self._is_current = is_current
        self._key = log_key(token) if token else None
        self.live_log_bytes = live_log_bytes
        self.follower_buffer_bytes = follower_buffer_bytes
        self.linger_s = linger_s
        self.port = 0
        self.counts: dict[str, int] = dict.fromkeys(
            ("received", "malformed", "forged", "replayed", "unknown", "followers_cut"), 0
        )
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._live: dict[tuple[str, int], _Live] = {}
        self._followers: dict[str, list[_Follower]] = {}
        self._dirty: set[_Follower] = set()
        self._lingering: dict[str, asyncio.TimerHandle] = {}
        self._inherited: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ lifetime
    def bind(self, host: str, port: int) -> None:
        """Listen for LOG_RECORDs on UDP ``host:port``.

        Raises:
            OSError: the address is taken or cannot be used.
        """
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES)
            except OSError:
                pass  # the kernel's default then; bursts may drop, which the counts show
            sock.bind(address)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def close(self) -> None:
        """Stop receiving; followers are left to their connections' closing."""
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for timer in self._lingering.values():
            timer.cancel()
        self._lingering.clear()
        for live in self._live.values():
            live.close()
        self._live.clear()

    def extra(self) -> dict[str, int]:
        """Figures for STATS ``extra``."""
        figures = {f"log_datagrams_{name}": value for name, value in self.counts.items()}
        figures["log_followers"] = sum(len(f) for f in self._followers.values())
        return figures

    # ------------------------------------------------------------------ datagrams
    def _on_readable(self) -> None:
        self._drain(_BATCH)

    def _drain(self, limit: int) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(limit):
            try:
                data = sock.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("UDP receive failed: %s", exc)
                break
            self.datagram(data)
        self._flush()

    def datagram(self, data: bytes) -> None:
        """Check one datagram and take it in, or drop and count it."""
        counts = self.counts
        try:
            frame = decode_datagram(data)
            if frame.opcode != Opcode.LOG_RECORD or frame.flags:
                raise ValueError("not a LOG_RECORD")
            record = LogRecord.from_wire(frame.body)
        except (ProtocolError, ValueError):
            counts["malformed"] += 1
            return
        if self._key is not None and (
            record.mac is None or not hmac.compare_digest(record.mac, log_record_mac(self._key, record))
        ):
            counts["forged"] += 1
            return
        key = (record.job_id, record.attempt)
        live = self._live.get(key)
        if live is None:
            if not self._is_current(record.job_id, record.attempt):
                counts["unknown"] += 1
                return
            live = self._start_live(record.job_id, record.attempt)
        if not live.seen[record.stream].add(record.seq):
            counts["replayed"] += 1
            return
        counts["received"] += 1
        live.received += 1
        self._take(live, record)

    def _start_live(self, job_id: str, attempt: int) -> _Live:
        for older in [k for k in self._live if k[0] == job_id and k[1] < attempt]:
            self._live.pop(older).close()  # its worker was lost: its live copy is all there is
            self._inherited.discard(older)
        live = self._live[(job_id, attempt)] = _Live(job_id, attempt)
        if (job_id, attempt) in self._inherited:
            live.prior = {stream: self.store.size(job_id, attempt, stream) for stream in STREAMS}
        return live

    def _take(self, live: _Live, record: LogRecord) -> None:
        stream: Stream = record.stream
        data = record.data
        shown = live.end[stream]
        if record.offset + len(data) <= shown:
            return  # arrived after later bytes were shown: already past in the live view
        start = record.offset
        if start < shown:
            data = data[shown - start :]
            start = shown
        elif start > shown:
            live.whole.discard(stream)  # a hole: the copy on disk no longer matches positions
        live.end[stream] = record.offset + len(record.data)
        self._append_live_copy(live, stream, data)
        live.chunks.append((stream, start, data))
        live.chunk_bytes += len(data)
        while live.chunk_bytes > self.live_log_bytes and len(live.chunks) > 1:
            live.chunk_bytes -= len(live.chunks.popleft()[2])
        for follower in self._followers.get(live.job_id, ()):
            self._queue(follower, live.attempt, stream, data, start)

    def _append_live_copy(self, live: _Live, stream: Stream, data: bytes) -> None:
        fd = live.fds.get(stream)
        try:
            if fd is None:
                fd = live.fds[stream] = self.store.open_live(live.job_id, live.attempt, stream)
            os.write(fd, data)
        except OSError as exc:
            log.debug("%s attempt %d: live copy of %s: %s", live.job_id, live.attempt, stream, exc)

    # ------------------------------------------------------------------ attempts and jobs
    def inherit(self, attempts: Iterable[tuple[str, int]]) -> None:
        """(job id, attempt) pairs a master before this one had running: they began logging to it.

        Their log so far is that master's live copy; a datagram sent before this master listened is
        neither received nor lost, so only holes between the datagrams received count as lost.
        """
        self._inherited.update(attempts)

    def attempt_ended(self, status: TaskStatus, job: Job | None) -> AttemptLogStats:
        """Store an ended attempt's exact logs and result; catch its followers up."""
        key = (status.job_id, status.attempt)
        if status.log_datagrams or key in self._live:
            self._drain(1 << 30)  # records sent before the report are in the socket already
        live = self._live.pop(key, None)
        lost = status.log_datagrams
        if key in self._inherited:
            self._inherited.discard(key)
            lost = live.span() if live is not None else 0
        if live is not None:
            live.close()
            lost -= live.received
        stats = AttemptLogStats(max(0, lost), status.truncated)
        self.store.store_ended(status, job, stats)
        if live is not None and not status.truncated:
            exact: tuple[tuple[Stream, bytes | None], ...] = (("stdout", status.stdout), ("stderr", status.stderr))
            for stream, data in exact:
                shown = live.end[stream]
                rest = (data or b"")[shown:]
                for follower in self._followers.get(status.job_id, ()):
                    self._queue(follower, status.attempt, stream, rest, shown)
        elif live is None:
            for follower in self._followers.get(status.job_id, ()):
                self._queue_stored(follower, status.job_id, status.attempt, exact=True)
        self._flush()
        if status.job_id in self._lingering and not self._has_live(status.job_id):
            self._lingering.pop(status.job_id).cancel()
            self._end_followers(status.job_id)
        return stats

    def job_final(self, job_id: str) -> None:
        """The job reached a final state: end its followers (once its attempts are reported)."""
        if self._has_live(job_id):
            # an attempt still live is being reported, or its worker was lost and never will be:
            # either way its live state ends at the linger's end, followers or not
            if job_id not in self._lingering:
                self._lingering[job_id] = self._loop.call_later(self.linger_s, self._linger_over, job_id)
            return
        self._end_followers(job_id)

    def _linger_over(self, job_id: str) -> None:
        self._lingering.pop(job_id, None)
        for key in [key for key in self._live if key[0] == job_id]:
            self._live.pop(key).close()  # no report came: the live copy is the attempt's stored log
        self._inherited -= {key for key in self._inherited if key[0] == job_id}
        self._end_followers(job_id)

    def _has_live(self, job_id: str) -> bool:
        return any(key[0] == job_id for key in self._live)

    # ------------------------------------------------------------------ followers
    def subscribe(self, peer: Peer, job: Job, follow: bool, attempt: int | None = None) -> int:
        """Send the log so far; with ``follow`` keep sending until the job is final. Returns the attempt.

        ``attempt``: an earlier attempt's log instead (its stored one, then ``eof``); the latest
        attempt is the default.
        """
        if attempt is not None and attempt != job.attempts:
            follower = _Follower(peer, job.id, False, attempt)
            self._queue_stored(follower, job.id, attempt, exact=not self._is_current(job.id, attempt))
            self._send_pending(follower)
            self._send(follower, LogData(job_id=job.id, attempt=attempt, stream="stdout", data=b"", eof=True))
            return attempt
        attempt = job.attempts
        follower = _Follower(peer, job.id, follow, attempt)
        live = self._live.get((job.id, attempt))
        if live is not None:
            for stream, kept in live.prior.items():
                if kept:  # what came before this master's first datagram: positions unknown
                    self._queue(
                        follower, attempt, stream, self.store.read_range(job.id, attempt, stream, 0, kept), None
                    )
            self._queue_head(follower, live)
            for stream, offset, data in live.chunks:
                self._queue(follower, attempt, stream, data, offset)
        elif attempt:
            # a running attempt with no live state here has, at most, the copy kept before a restart
            self._queue_stored(follower, job.id, attempt, exact=not self._is_current(job.id, attempt))
        self._send_pending(follower)
        if follow and (not job.is_final or job.id in self._lingering):
            self._followers.setdefault(job.id, []).append(follower)
        else:
            self._send(follower, LogData(job_id=job.id, attempt=attempt, stream="stdout", data=b"", eof=True))
        return attempt

    def _queue_head(self, follower: _Follower, live: _Live) -> None:
        """What the in-memory chunks no longer hold of a stream, from the copy on disk where it is
        whole: a new reader of a long-running attempt sees its log from the start (at most half a
        follower's buffer of it, the latest, so the catch-up itself cannot cut the reader off)."""
        first: dict[Stream, int] = {}
        for stream, offset, _ in live.chunks:
            first.setdefault(stream, offset)
        for stream in STREAMS:
            if stream not in live.whole or live.prior.get(stream):
                continue
            end = first.get(stream, live.end[stream])
            start = max(0, end - self.follower_buffer_bytes // 2)
            if end > start:
                head = self.store.read_range(live.job_id, live.attempt, stream, start, end)
                if len(head) == end - start:
                    self._queue(follower, live.attempt, stream, head, start)

    def forget_peer(self, peer: Peer) -> None:
        """A connection closed: drop its subscriptions."""
        for job_id in list(self._followers):
            kept = [f for f in self._followers[job_id] if f.peer is not peer]
            if kept:
                self._followers[job_id] = kept
            else:
                del self._followers[job_id]

    def forget_job(self, job_id: str) -> None:
        """The job's folder was removed (gc)."""
        self.store.forget(job_id)

    def _queue_stored(self, follower: _Follower, job_id: str, attempt: int, *, exact: bool) -> None:
        """The stored log: the exact one of an ended attempt, else a live copy (positions unknown)."""
        for stream in STREAMS:
            data = self.store.read(job_id, attempt, stream)
            if data:
                self._queue(follower, attempt, stream, data, 0 if exact else None)

    def _queue(self, follower: _Follower, attempt: int, stream: Stream, data: bytes, offset: int | None) -> None:
        if not data:
            return
        follower.attempt = attempt
        pending = follower.pending
        last = pending[-1] if pending else None
        if last is not None and last.follows(attempt, stream, offset):
            last.parts.append(data)  # the bytes are shared, not copied, until the one join at the flush
            last.size += len(data)
        else:
            pending.append(_Run(attempt, stream, data, offset))
        self._dirty.add(follower)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for follower in dirty:
            self._send_pending(follower)

    def _send_pending(self, follower: _Follower) -> bool:
        pending, follower.pending = follower.pending, []
        for run in pending:
            message = LogData(
                job_id=follower.job_id, attempt=run.attempt, stream=run.stream, data=run.data(), offset=run.offset
            )
            if not self._send(follower, message):
                return False
        return True

    def _send(self, follower: _Follower, message: LogData) -> bool:
        """Send to one follower, or cut it off if it does not keep up; False once it is gone."""
        transport = follower.peer.transport
        if transport is not None and transport.get_write_buffer_size() > self.follower_buffer_bytes:
            self.counts["followers_cut"] += 1
            why = f"cut off: this connection fell more than {self.follower_buffer_bytes} bytes behind the log"
            log.info("%s follower of %s %s", follower.peer.label, follower.job_id, why)
            follower.peer.send(
                LogData(job_id=follower.job_id, attempt=message.attempt, stream="stderr", data=b"", eof=True, error=why)
            )
            self._drop(follower)
            return False
        if not follower.peer.send(message):
            self._drop(follower)
            return False
        return True

    def _drop(self, follower: _Follower) -> None:
        follower.pending.clear()
        self._dirty.discard(follower)
        followers = self._followers.get(follower.job_id)
        if followers is not None and follower in followers:
            followers.remove(follower)
            if not followers:
                del self._followers[follower.job_id]

    def _end_followers(self, job_id: str) -> None:
        for follower in list(self._followers.get(job_id, ())):
            if self._send_pending(follower):
                follower.peer.send(
                    LogData(job_id=job_id, attempt=follower.attempt, stream="stdout", data=b"", eof=True)
                )
        self._followers.pop(job_id, None)
