"""The opening of every connection: HELLO, an optional token proof, WELCOME.

Dialling side: :func:`dial` connects, says HELLO with its role, answers a
CHALLENGE with ``HMAC-SHA256(token, nonce + role)`` (the token itself never
crosses the wire) and returns the peer once WELCOME arrives.

Listening side: :class:`HandshakeGate` is the first ``on_frame`` of an accepted
peer (and its ``on_open``). It accepts HELLO (and AUTH when the cluster has a
token), then hands the peer to ``on_accept``, which installs the role's own
frame handler. Until then the peer has not shown it belongs to the cluster, so
it gets little: a deadline for the whole handshake, a cap on how many such
connections are open at once, small frames only, close on its first error, and
what it makes us log is limited (``LogLimit``) across all of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
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
from titan.errors import AuthRefused, ConnectError, PeerClosed, RemoteError, TlsRefused

from .loglimit import LogLimit
from .peer import FrameHandler, Peer
from .tls import PLAIN_TO_TLS_HINT, describe_tls_failure

__all__ = ["HANDSHAKE_MAX_BODY", "HandshakeGate", "dial", "prove"]

log = logging.getLogger(__name__)

# the largest body a listener takes before WELCOME: a HELLO or an AUTH is a few dozen bytes, and
# a stranger must not make us buffer max_body (16 MiB) per connection
HANDSHAKE_MAX_BODY = 64 * 1024


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
    except ssl.SSLError as exc:
        raise describe_tls_failure(exc, host, port) from exc
    except (OSError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
        raise ConnectError(f"cannot reach the master at {host}:{port}: {reason}") from exc
    try:
        peer.send(Hello(role=role, version=VERSION, name=name))  # type: ignore[arg-type]
        frame = await peer.next_handshake_frame(timeout_s)
        if frame.opcode == Opcode.CHALLENGE:
            if not token:
                raise AuthRefused("the master requires a token (set --token or TITAN_TOKEN)")
            challenge = Challenge.from_wire(frame.body)
            peer.send(Auth(mac=prove(token, challenge.nonce, role)))
            frame = await peer.next_handshake_frame(timeout_s)
            if frame.opcode == Opcode.ERROR:  # the answer to our proof: the token is wrong
                error = ErrorReply.from_wire(frame.body)
                raise AuthRefused(f"the master refused the connection: {error.message}")
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
        if ssl_context is None and isinstance(exc, PeerClosed):
            # a TLS master closes a plain peer's connection without a word; a plain master always
            # answers in a frame (WELCOME, CHALLENGE or ERROR). So this is a setting to change, which
            # a worker reports and stops on at start-up, as it does for a wrong token
            raise TlsRefused(f"handshake with {host}:{port} failed: {exc}; {PLAIN_TO_TLS_HINT}") from exc
        raise ConnectError(f"handshake with {host}:{port} failed: {exc}") from exc
    peer.end_handshake()
    return peer, welcome


@dataclass
class _Handshake:
    """A connection between accept and WELCOME."""

    timer: asyncio.TimerHandle
    hello: Hello | None = None  # set once the CHALLENGE has gone out, until the AUTH comes in
    nonce: bytes = b""


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
        timeout_s: float = 10.0,
        max_handshaking: int = 1024,
    ) -> None:
        self.server_name = server_name
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_body = max_body
        self.token = token
        self.on_accept = on_accept
        self.timeout_s = timeout_s
        self.max_handshaking = max_handshaking
        self.refused = 0  # connections closed at once because max_handshaking were open
        self.failures = LogLimit(log)  # every line about a connection not admitted (yet)
        self._refusals = LogLimit(log, burst=1)
        self._handshakes: dict[Peer, _Handshake] = {}
        self._closed = False

    @property
    def handshaking(self) -> int:
        """Connections accepted that have not finished their handshake."""
        return len(self._handshakes)

    def opened(self, peer: Peer) -> None:
        """A connection was accepted (the peer's ``on_open``): start its deadline, or refuse it over the cap."""
        if len(self._handshakes) >= self.max_handshaking:
            self.refused += 1
            self._refusals.warning(
                "refusing new connections: %d are still in their handshake (the limit); %d refused so far",
                len(self._handshakes),
                self.refused,
            )
            peer.strict = True
            peer.send_error("HANDSHAKE_FAILED", "too many connections in their handshake, try again later")
            peer.close()
            return
        self._track(peer)

    def _track(self, peer: Peer) -> _Handshake:
        peer.strict = True
        peer.log_limit = self.failures
        peer.decoder.max_body = min(self.max_body, HANDSHAKE_MAX_BODY)
        timer = asyncio.get_running_loop().call_later(self.timeout_s, self._expire, peer)
        state = self._handshakes[peer] = _Handshake(timer)
        return state

    def _expire(self, peer: Peer) -> None:
        state = self._handshakes.pop(peer, None)
        if state is None:
            return
        step = "HELLO" if state.hello is None else "AUTH"
        peer.complain("%s closed: no %s within %gs", peer.label, step, self.timeout_s)
        peer.send_error("HANDSHAKE_FAILED", f"no {step} within {self.timeout_s:g}s")
        peer.close()

    def __call__(self, peer: Peer, frame: Frame) -> None:
        # a server that does not hook opened() as on_open gets the deadline from the first frame on
        state = self._handshakes.get(peer) or self._track(peer)
        if state.hello is None:
            self._on_hello(peer, frame, state)
        else:
            self._on_auth(peer, frame, state)

    def _on_hello(self, peer: Peer, frame: Frame, state: _Handshake) -> None:
        if frame.opcode != Opcode.HELLO or frame.flags:
            raise HandshakeFailed(f"expected HELLO first, got opcode {frame.opcode:#04x}")
        try:
            hello = Hello.from_wire(frame.body)
        except Exception as exc:
            raise HandshakeFailed(f"bad HELLO: {exc}") from exc
        if hello.version != VERSION:
            raise HandshakeFailed(f"protocol version {hello.version} is not supported (this master speaks {VERSION})")
        if self.token:
            state.hello, state.nonce = hello, os.urandom(32)
            peer.send(Challenge(nonce=state.nonce))
            return
        self._welcome(peer, hello)

    def _on_auth(self, peer: Peer, frame: Frame, state: _Handshake) -> None:
        hello, state.hello = state.hello, None  # answered: whatever follows, forget() has nothing to report
        assert self.token and hello is not None
        if frame.opcode != Opcode.AUTH or frame.flags:
            raise HandshakeFailed("expected AUTH after CHALLENGE")
        try:
            auth = Auth.from_wire(frame.body)
        except Exception as exc:
            raise HandshakeFailed(f"authentication failed: bad AUTH: {exc}") from exc
        expected = prove(self.token, state.nonce, hello.role)
        if not hmac.compare_digest(auth.mac, expected):
            raise HandshakeFailed("authentication failed: wrong token")
        self._welcome(peer, hello)

    def _welcome(self, peer: Peer, hello: Hello) -> None:
        state = self._handshakes.pop(peer, None)
        if state is not None:
            state.timer.cancel()
        peer.strict = False
        peer.log_limit = None
        peer.decoder.max_body = self.max_body
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
        """Drop the handshake state of a peer that closed midway (the peer's ``on_close``)."""
        state = self._handshakes.pop(peer, None)
        if state is None:
            return
        state.timer.cancel()
        if state.hello is not None and not self._closed:
            # what a dialler without the token does (and one that will not say it has none)
            self.failures.warning(
                "%s refused: authentication failed: closed without answering the CHALLENGE", peer.label
            )

    def close(self) -> None:
        """The listener is shutting down: stop the deadlines; connections it closes now are not reported."""
        self._closed = True
        for state in self._handshakes.values():
            state.timer.cancel()
