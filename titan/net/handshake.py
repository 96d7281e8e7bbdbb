"""The opening of every connection: HELLO, an optional token proof, WELCOME.

Dialling side: :func:`dial` connects, says HELLO with its role, answers a
CHALLENGE with ``HMAC-SHA256(token, nonce + role)`` (the token itself never
crosses the wire) and returns the peer once WELCOME arrives.

Listening side: :class:`HandshakeGate` is the first ``on_frame`` of an accepted
peer. It accepts HELLO (and AUTH when the cluster has a token), then hands the
peer to ``on_accept``, which installs the role's own frame handler.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from protocol import (
    DEFAULT_MAX_BODY,
    VERSION,
    Auth,
    Challenge,
    ErrorReply,
    Frame,
    HandshakeFailed,
    Hello,
    Opcode,
    Welcome,
)
from titan.errors import ConnectError, RemoteError

from .peer import FrameHandler, Peer

__all__ = ["HandshakeGate", "dial", "prove"]


def prove(token: str, nonce: bytes, role: str) -> bytes:
    """The proof a peer sends: the token never leaves the machine."""
    return hmac.new(token.encode(), nonce + role.encode(), hashlib.sha256).digest()


async def dial(
    host: str,
    port: int,
    *,
    role: str,
    name: str = "",
    token: str | None = None,
    on_frame: FrameHandler | None = None,
    on_close: Callable[[Peer], None] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    timeout_s: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[Peer, Welcome]:
    """Connect to a master and complete the handshake.

    Raises:
        ConnectError: nothing listens there, or the handshake was refused.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            _, peer = await loop.create_connection(
                lambda: Peer(on_frame, max_body=max_body, on_close=on_close, handshaking=True),
                host,
                port,
                ssl=ssl_context,
            )
    except (OSError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
        raise ConnectError(f"cannot reach the master at {host}:{port}: {reason}") from exc
    try:
        peer.send(Hello(role=role, version=VERSION, name=name))  # type: ignore[arg-type]
        frame = await peer.next_handshake_frame(timeout_s)
        if frame.opcode == Opcode.CHALLENGE:
            if not token:
                raise ConnectError("the master requires a token (set --token or TITAN_TOKEN)")
            challenge = Challenge.from_wire(frame.body)
            peer.send(Auth(mac=prove(token, challenge.nonce, role)))
            frame = await peer.next_handshake_frame(timeout_s)
        if frame.opcode == Opcode.ERROR:
            error = ErrorReply.from_wire(frame.body)
            raise ConnectError(f"the master refused the connection: {error.message}")
        if frame.opcode != Opcode.WELCOME:
            raise ConnectError(f"unexpected opcode {frame.opcode:#04x} during the handshake")
        welcome = Welcome.from_wire(frame.body)
    except (RemoteError, HandshakeFailed, ConnectError, Exception) as exc:
        peer.close()
        if isinstance(exc, ConnectError):
            raise
        raise ConnectError(f"handshake with {host}:{port} failed: {exc}") from exc
    peer.end_handshake()
    return peer, welcome


@dataclass
class _Pending:
    hello: Hello
    nonce: bytes


class HandshakeGate:
    """First handler of an accepted connection; see the module docstring."""

    def __init__(
        self,
        *,
        server_name: str,
        heartbeat_interval_s: float,
        max_body: int,
        token: str | None,
        on_accept: Callable[[Peer, Hello], None],
    ) -> None:
        self.server_name = server_name
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_body = max_body
        self.token = token
        self.on_accept = on_accept
        self._pending: dict[int, _Pending] = {}

    def __call__(self, peer: Peer, frame: Frame) -> None:
        pending = self._pending.get(id(peer))
        if pending is None:
            self._on_hello(peer, frame)
        else:
            self._on_auth(peer, frame, pending)

    def _on_hello(self, peer: Peer, frame: Frame) -> None:
        if frame.opcode != Opcode.HELLO:
            raise HandshakeFailed(f"expected HELLO first, got opcode {frame.opcode:#04x}")
        try:
            hello = Hello.from_wire(frame.body)
        except Exception as exc:
            raise HandshakeFailed(f"bad HELLO: {exc}") from exc
        if hello.version != VERSION:
            raise HandshakeFailed(f"protocol version {hello.version} is not supported (this master speaks {VERSION})")
        if self.token:
            nonce = os.urandom(32)
            self._pending[id(peer)] = _Pending(hello, nonce)
            peer.send(Challenge(nonce=nonce))
            return
        self._welcome(peer, hello)

    def _on_auth(self, peer: Peer, frame: Frame, pending: _Pending) -> None:
        del self._pending[id(peer)]
        assert self.token
        if frame.opcode != Opcode.AUTH:
            raise HandshakeFailed("expected AUTH after CHALLENGE")
        try:
            auth = Auth.from_wire(frame.body)
        except Exception as exc:
            raise HandshakeFailed(f"bad AUTH: {exc}") from exc
        expected = prove(self.token, pending.nonce, pending.hello.role)
        if not hmac.compare_digest(auth.mac, expected):
            raise HandshakeFailed("authentication failed: wrong token")
        self._welcome(peer, pending.hello)

    def _welcome(self, peer: Peer, hello: Hello) -> None:
        peer.send(
            Welcome(
                server=self.server_name,
                version=VERSION,
                heartbeat_interval_s=self.heartbeat_interval_s,
                max_body=self.max_body,
            )
        )
        if hello.name:
            peer.label = f"{hello.name}@{peer.label}"
        self.on_accept(peer, hello)

    def forget(self, peer: Peer) -> None:
        """Drop handshake state of a peer that closed midway."""
        self._pending.pop(id(peer), None)
