"""One TITAN_PROTO connection over an asyncio transport.

A :class:`Peer` is an ``asyncio.Protocol``: bytes in go through the sans-IO
:class:`~protocol.FrameDecoder`; each whole frame is either the answer to one
of our requests (matched by ``rid``, resolving the awaiting future) or an
incoming frame handed to ``on_frame``. ``on_frame`` may be a plain function
(the fast path: no task per frame) or return an awaitable, which is then run
as a task owned by the peer. Errors are answered on the wire: a protocol error
with its code, a :class:`TitanError` with its code, anything else as
``INTERNAL`` (and logged). A fatal protocol error closes the connection; the
others leave it open, except on a *strict* peer (a listener's, until its
handshake is done), where every error closes it.

What the other end gets wrong is logged a few times per connection, then no
more (see :meth:`Peer.complain`): a peer must not be able to fill our log.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from protocol import (
    DEFAULT_MAX_BODY,
    HEADER_SIZE,
    NEED_DATA,
    ErrorReply,
    Frame,
    FrameDecoder,
    Message,
    Opcode,
    ProtocolError,
    SchemaError,
    encode_error,
    encode_message,
    parse_reply,
)
from titan.errors import PeerClosed, RemoteError, RequestTimeout, TitanError, UnsendableRequest

from .loglimit import LogLimit

__all__ = ["FrameHandler", "Peer"]

log = logging.getLogger(__name__)

FrameHandler = Callable[["Peer", Frame], "Awaitable[None] | None"]

# faults of the other end logged in full per connection; one more line says the rest are not
_COMPLAINTS_LOGGED = 3


def _text(value: object) -> str:
    """A field of an unvalidated ERROR body, for the log: a string as it is, anything else by its type.

    Never formatted with ``%s`` as it came: a list nested a thousand deep (msgpack decodes 1 023 levels)
    raises RecursionError in the log handler, which logging lets through and which would end the connection.
    """
    return value if isinstance(value, str) else f"<{type(value).__name__}>"


class Peer(asyncio.Protocol):
    """A framed, request/reply capable connection (either end)."""

    def __init__(
        self,
        on_frame: FrameHandler | None = None,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        on_close: Callable[[Peer], None] | None = None,
        on_open: Callable[[Peer], None] | None = None,
        handshaking: bool = False,
    ) -> None:
        self.on_frame = on_frame
        self.on_close = on_close
        self.on_open = on_open
        self.decoder = FrameDecoder(max_body)
        self.transport: asyncio.Transport | None = None
        self.label = "?"
        self.context: Any = None  # whatever the owner attaches (a worker record, a client session)
        # set by a listener's HandshakeGate until the handshake is done: any error closes the
        # connection, and what this peer makes us log also counts against the gate's shared limit
        self.strict = False
        self.log_limit: LogLimit | None = None
        self._complaints = 0
        self._loop = asyncio.get_running_loop()
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._next_rid = 1
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._writable = asyncio.Event()
        self._writable.set()
        # while handshaking, unsolicited frames queue here for the dialling side to read in order
        self._handshake: asyncio.Queue[Frame | None] | None = asyncio.Queue() if handshaking else None

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self.label = f"{peername[0]}:{peername[1]}"
        if self.on_open is not None:
            self.on_open(self)

    def data_received(self, data: bytes) -> None:
        decoder = self.decoder
        decoder.feed(data)
        while self.transport is not None and not self.transport.is_closing():
            try:
                frame = decoder.next_frame()
            except ProtocolError as exc:
                self.complain("%s protocol error: %s", self.label, exc.message)
                self.send_error(exc.error_code, exc.message)
                if exc.fatal or self.strict:
                    self.close()
                    return
                continue
            if frame is NEED_DATA:
                return
            assert isinstance(frame, Frame)
            self._dispatch(frame)

    def eof_received(self) -> bool | None:
        if self.decoder.buffered:
            self.data_received(b"")  # the end of the stream: what is left is TRUNCATED_FRAME, answered
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._complaints > _COMPLAINTS_LOGGED + 1:
            log.warning("%s closed after %d protocol errors", self.label, self._complaints)
        reason = PeerClosed(f"connection to {self.label} closed" + (f": {exc}" if exc else ""))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        self._pending.clear()
        if self._handshake is not None:
            self._handshake.put_nowait(None)
        self._writable.set()
        if not self._closed.done():
            self._closed.set_result(None)
        if self.on_close is not None:
            self.on_close(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ------------------------------------------------------------------ incoming
    def _dispatch(self, frame: Frame) -> None:
        if frame.is_reply:
            rid = frame.rid
            future = self._pending.pop(rid, None) if rid is not None else None
            if future is not None:
                if not future.done():
                    self._resolve(future, frame)
                return
            if self._handshake is None and not frame.is_error and not self.strict:
                # answers nothing in flight (e.g. its request timed out); a reply is never a request
                log.debug("%s dropped a reply to no pending request (rid %s)", self.label, rid)
                return
        if self._handshake is not None:
            self._handshake.put_nowait(frame)
            return
        if frame.is_error:
            body = frame.body
            self.complain("%s sent error %s: %s", self.label, _text(body.get("code")), _text(body.get("message")))
            if self.strict:
                self.close()  # a dialler that errs mid-handshake has given up; an ERROR is never answered
            return
        if self.on_frame is None:
            self.send_error("UNEXPECTED", f"no handler for opcode {frame.opcode:#04x}", rid=frame.rid)
            return
        try:
            result = self.on_frame(self, frame)
        except Exception as exc:  # answered on the wire, never propagated into the loop
            self._answer_failure(frame, exc)
            return
        if result is not None and inspect.isawaitable(result):
            task = self._loop.create_task(self._run_handler(frame, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_handler(self, frame: Frame, work: Awaitable[None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._answer_failure(frame, exc)

    def _answer_failure(self, frame: Frame, exc: Exception) -> None:
        if isinstance(exc, ProtocolError):
            if self.strict:  # a refused handshake: worth a line (the next frame would be on a new connection)
                self.complain("%s refused: %s", self.label, exc.message)
            self.send_error(exc.error_code, exc.message, rid=frame.rid)
        elif isinstance(exc, TitanError):
            self.send_error(exc.code, str(exc), rid=frame.rid)
        else:
            log.exception("%s handler for opcode %#04x failed", self.label, frame.opcode)
            self.send_error("INTERNAL", f"internal error: {type(exc).__name__}: {exc}", rid=frame.rid)
        if self.strict or (isinstance(exc, ProtocolError) and exc.fatal):
            self.close()

    def complain(self, msg: str, *args: object) -> None:
        """Log a fault of the other end at WARNING, up to a few times per connection.

        One more line says the rest are not logged; their count follows when the connection closes.
        """
        self._complaints += 1
        if self._complaints > _COMPLAINTS_LOGGED + 1:
            return
        if self._complaints > _COMPLAINTS_LOGGED:
            msg, args = "%s: further protocol errors on this connection are not logged", (self.label,)
        if self.log_limit is not None:
            self.log_limit.warning(msg, *args)
        else:
            log.warning(msg, *args)

    @staticmethod
    def _resolve(future: asyncio.Future[Message], frame: Frame) -> None:
        try:
            message = parse_reply(frame)
        except ProtocolError as exc:
            future.set_exception(exc)
            return
        if isinstance(message, ErrorReply):
            future.set_exception(RemoteError(message.code, message.message))
        else:
            future.set_result(message)

    async def next_handshake_frame(self, timeout_s: float) -> Frame:
        """The next unsolicited frame while handshaking (dialling side)."""
        assert self._handshake is not None, "not handshaking"
        try:
            async with asyncio.timeout(timeout_s):
                frame = await self._handshake.get()
        except TimeoutError:
            raise RequestTimeout(f"no handshake answer from {self.label} within {timeout_s:g}s") from None
        if frame is None:
            raise PeerClosed(f"{self.label} closed the connection during the handshake")
        return frame

    def end_handshake(self) -> None:
        """From now on unsolicited frames go to ``on_frame``."""
        queue, self._handshake = self._handshake, None
        while queue is not None and not queue.empty():
            frame = queue.get_nowait()
            if frame is not None:
                self._dispatch(frame)

    # ------------------------------------------------------------------ outgoing
    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> bool:
        """Send raw frame bytes; False if the connection is gone."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        return True

    def send(self, message: Message, *, rid: int | None = None, reply_to: Opcode | None = None) -> bool:
        return self.write(encode_message(message, rid=rid, reply_to=reply_to))

    def reply(self, request: Frame, message: Message) -> bool:
        """Answer ``request`` (same opcode, reply flag, its rid)."""
        return self.send(message, rid=request.rid, reply_to=Opcode(request.opcode))

    def send_error(self, code: str, message: str, *, rid: int | None = None) -> bool:
        return self.write(encode_error(code, message, rid=rid))

    async def request(self, message: Message, *, timeout_s: float | None = None) -> Message:
        """Send ``message`` with a fresh rid and await its answer.

        Raises:
            RemoteError: the other end answered with an ERROR.
            PeerClosed: the connection dropped first.
            RequestTimeout: no answer within ``timeout_s``.
            UnsendableRequest: (a SchemaError and a TitanError) ``message`` holds a value the wire
                cannot carry; nothing was sent.
        """
        rid = self._next_rid
        self._next_rid += 1
        try:
            data = encode_message(message, rid=rid)  # a body that cannot be encoded raises here, nothing pending
        except SchemaError as exc:
            raise UnsendableRequest(exc.message) from None
        if len(data) - HEADER_SIZE > self.decoder.max_body:
            # the other end would answer FRAME_TOO_LARGE and close the connection: say so instead
            raise UnsendableRequest(
                f"{type(message).__name__}: the request takes {len(data) - HEADER_SIZE} bytes, over the"
                f" {self.decoder.max_body}-byte limit of a frame"
            )
        future: asyncio.Future[Message] = self._loop.create_future()
        self._pending[rid] = future
        if not self.write(data):
            self._pending.pop(rid, None)
            raise PeerClosed(f"connection to {self.label} is closed")
        # a plain timer on the future: asyncio.timeout() costs several times more, on every request
        timer = None if timeout_s is None else self._loop.call_later(timeout_s, self._expire, future, timeout_s)
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(rid, None)

    def _expire(self, future: asyncio.Future[Message], timeout_s: float) -> None:
        if not future.done():
            future.set_exception(RequestTimeout(f"no answer from {self.label} within {timeout_s:g}s"))

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        await self._writable.wait()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def aclose(self) -> None:
        """Close, then wait for the handlers this peer started to finish."""
        self.close()
        if self._tasks:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.transport is not None:
            await self.wait_closed()
