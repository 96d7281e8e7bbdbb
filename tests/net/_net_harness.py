"""A small TITAN_PROTO server and a raw socket client on 127.0.0.1 for the adapter tests.

The server admits peers through the real :class:`HandshakeGate`, then answers
JOB_STATUS / CANCEL requests. The job id picks the behaviour, so each test
scripts the server through the requests it sends:

* ``hold-*``: wait until the test calls :meth:`TitanTestServer.release`;
* ``unknown``: raise ``UnknownJob`` (a ``TitanError``);
* ``boom``: raise ``RuntimeError`` (answered as ``INTERNAL``);
* ``schema``: raise ``SchemaError`` (a non-fatal protocol error);
* anything else: answer at once with a ``JobReply``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from protocol import (
    DEFAULT_MAX_BODY,
    NEED_DATA,
    Cancel,
    Frame,
    FrameDecoder,
    Hello,
    JobInfo,
    JobReply,
    JobStatus,
    Message,
    Opcode,
    SchemaError,
    encode_message,
    parse_request,
)
from titan.errors import UnknownJob
from titan.net import HandshakeGate, Peer

ALLOWED: dict[Opcode, type[Message]] = {Opcode.JOB_STATUS: JobStatus, Opcode.CANCEL: Cancel}
__all__ = ["IO_TIMEOUT_S", "RawClient", "TitanTestServer", "job_info"]

IO_TIMEOUT_S = 5.0


def job_info(job_id: str) -> JobInfo:
    return JobInfo(
        id=job_id,
        type="RUN",
        data="calc.py",
        state="PENDING",
        priority=1,
        attempts=0,
        max_attempts=3,
        submitted_at=0.0,
    )


class TitanTestServer:
    """Listens on 127.0.0.1:0; see the module docstring for what it answers."""

    def __init__(
        self,
        *,
        token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        handshake_timeout_s: float = 10.0,
        max_handshaking: int = 1024,
    ) -> None:
        self.token = token
        self.max_body = max_body
        self.port = 0
        self.peers: list[Peer] = []
        self.accepted: asyncio.Queue[Peer] = asyncio.Queue()
        self.closed: asyncio.Queue[Peer] = asyncio.Queue()
        self.arrivals: asyncio.Queue[str] = asyncio.Queue()
        self.answered: list[str] = []
        self._holds: dict[str, asyncio.Future[None]] = {}
        self._server: asyncio.Server | None = None
        self.gate = HandshakeGate(
            server_name="test-master",
            heartbeat_interval_s=0.05,
            max_body=max_body,
            token=token,
            on_accept=self._on_accept,
            timeout_s=handshake_timeout_s,
            max_handshaking=max_handshaking,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._make_peer, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _make_peer(self) -> Peer:
        peer = Peer(self.gate, max_body=self.max_body, on_close=self._on_close, on_open=self.gate.opened)
        self.peers.append(peer)
        return peer

    def _on_accept(self, peer: Peer, hello: Hello) -> None:
        peer.context = hello
        peer.on_frame = self.handle
        self.accepted.put_nowait(peer)

    def _on_close(self, peer: Peer) -> None:
        self.gate.forget(peer)
        self.closed.put_nowait(peer)

    def handle(self, peer: Peer, frame: Frame) -> Awaitable[None]:
        message = parse_request(frame, ALLOWED)  # raises UnknownOpcode / SchemaError: answered by the peer
        assert isinstance(message, JobStatus | Cancel)
        return self._answer(peer, frame, message.job_id)

    async def _answer(self, peer: Peer, frame: Frame, job_id: str) -> None:
        self.arrivals.put_nowait(job_id)
        if job_id.startswith("hold"):
            await self._hold(job_id)
        if job_id == "unknown":
            raise UnknownJob(job_id)
        if job_id == "boom":
            raise RuntimeError("the handler broke")
        if job_id == "schema":
            raise SchemaError("JobStatus.job_id: not acceptable here")
        self.answered.append(job_id)
        peer.reply(frame, JobReply(job=job_info(job_id)))

    def _hold(self, job_id: str) -> asyncio.Future[None]:
        future = self._holds.get(job_id)
        if future is None:
            future = self._holds[job_id] = asyncio.get_running_loop().create_future()
        return future

    def release(self, job_id: str) -> None:
        self._hold(job_id).set_result(None)

    async def next_arrivals(self, count: int) -> list[str]:
        async with asyncio.timeout(IO_TIMEOUT_S):
            return [await self.arrivals.get() for _ in range(count)]

    async def next_accepted(self) -> Peer:
        async with asyncio.timeout(IO_TIMEOUT_S):
            return await self.accepted.get()

    async def next_closed(self) -> Peer:
        async with asyncio.timeout(IO_TIMEOUT_S):
            return await self.closed.get()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        self.gate.close()
        for peer in self.peers:
            await peer.aclose()
        if self._server is not None:
            await self._server.wait_closed()


class RawClient:
    """A plain socket that speaks bytes, for what a well-behaved ``Peer`` would never send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self) -> Frame:
        """The next frame from the server; fails if the server closes first."""
        async with asyncio.timeout(IO_TIMEOUT_S):
            while True:
                frame = self.decoder.next_frame()
                if frame is not NEED_DATA:
                    assert isinstance(frame, Frame)
                    return frame
                data = await self.reader.read(65536)
                assert data, "the server closed the connection instead of answering"
                self.decoder.feed(data)

    async def expect_eof(self) -> None:
        """The server closes, with no further frame."""
        async with asyncio.timeout(IO_TIMEOUT_S):
            data = await self.reader.read(65536)
        assert data == b"", f"expected the server to close, got {data!r}"
        assert self.decoder.buffered == 0

    async def hello(self, role: str = "client") -> Frame:
        self.send(encode_message(Hello(role=role, version=1, name="raw")))  # type: ignore[arg-type]
        return await self.frame()

    async def aclose(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass  # the server reset it first: closed either way
