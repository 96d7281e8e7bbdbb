"""A scripted master on real sockets: the handshake gate, then a recorder of what workers send."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from protocol import (
    DEFAULT_MAX_BODY,
    Frame,
    Heartbeat,
    Hello,
    Message,
    Opcode,
    Register,
    RegisterReply,
    TaskRef,
    TaskStatus,
    encode_message,
    parse_request,
)
from titan.net import HandshakeGate, Peer


@dataclass
class FakeMaster:
    """Listens on 127.0.0.1 (port 0 = any), answers REGISTER, records everything else."""

    port: int = 0
    heartbeat_interval_s: float = 10.0
    token: str | None = None
    #: what the next REGISTER answers lists as stale (then it is cleared)
    stale: list[TaskRef] = field(default_factory=list)
    registers: list[Register] = field(default_factory=list)
    heartbeats: list[tuple[float, Heartbeat]] = field(default_factory=list)
    statuses: list[TaskStatus] = field(default_factory=list)
    peers: list[Peer] = field(default_factory=list)
    #: sent behind the next REGISTER answer in the same write (then cleared), as a master dispatches
    #: to a worker the moment it registers
    after_register: list[Message] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self) -> FakeMaster:
        gate = HandshakeGate(
            server_name="fake-master",
            heartbeat_interval_s=self.heartbeat_interval_s,
            max_body=DEFAULT_MAX_BODY,
            token=self.token,
            on_accept=self._accept,
        )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Peer(gate), "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _accept(self, peer: Peer, hello: Hello) -> None:
        assert hello.role == "worker"
        peer.on_frame = self._on_frame
        self.peers.append(peer)

    def _on_frame(self, peer: Peer, frame: Frame) -> None:
        message = parse_request(frame)
        if isinstance(message, Register):
            self.registers.append(message)
            stale, self.stale = self.stale, []
            reply = RegisterReply(message.worker_id, self.heartbeat_interval_s, stale)
            after, self.after_register = self.after_register, []
            peer.write(
                encode_message(reply, rid=frame.rid, reply_to=Opcode.REGISTER)
                + b"".join(encode_message(extra) for extra in after)
            )
        elif isinstance(message, Heartbeat):
            self.heartbeats.append((time.monotonic(), message))
        elif isinstance(message, TaskStatus):
            self.statuses.append(message)
        else:
            raise AssertionError(f"unexpected {message!r}")

    @property
    def connection(self) -> Peer:
        """The newest open worker connection."""
        open_peers = [peer for peer in self.peers if peer.is_open]
        assert open_peers, "no worker is connected"
        return open_peers[-1]

    def send(self, message: Message) -> None:
        assert self.connection.send(message)

    def statuses_of(self, job_id: str) -> list[tuple[str, int | None, str]]:
        return [(s.state, s.exit_code, s.error) for s in self.statuses if s.job_id == job_id]

    async def drop(self) -> None:
        """Abort every worker connection (the master "crashed"), but keep listening."""
        for peer in self.peers:
            peer.abort()
        await asyncio.gather(*(peer.wait_closed() for peer in self.peers))

    async def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def aclose(self) -> None:
        await self.drop()
        await self.stop_listening()
