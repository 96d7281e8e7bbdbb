"""TLS on the cluster's TCP connections: an option of both ends (DESIGN §2).

The master turns it on with a certificate (``--tls-cert``, and ``--tls-key``
unless the key is in the same file); every connection to it -- workers,
clients, the dashboard's link -- is then TLS from its first byte, and a peer
that speaks plain TITAN_PROTO to it, or TLS to a plain master, gets a one-line
error that says which side is missing TLS. The dialling side verifies the
master's certificate against the system's trust store (``--tls``) or against a
CA file of its own (``--tls-ca``, which implies ``--tls``), and checks that it
names the host dialled (a DNS name or an IP address in its subjectAltName).

TITAN_PROTO's framing and handshake are unchanged inside TLS: the token's
HMAC proof still runs, so TLS keeps the traffic private and proves the master
to its peers, and the token proves the peers to the master. The live log
datagrams (UDP) are not covered: see ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from titan.errors import ConnectError, TitanError, TlsRefused

__all__ = [
    "PLAIN_TO_TLS_HINT",
    "TlsClient",
    "TlsServer",
    "TlsSetupError",
    "describe_handshake_failure",
    "describe_tls_failure",
    "server_context",
]

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: a trusted
# certificate, for other names or addresses
_NAME_MISMATCH: Final = frozenset({62, 64})

# a failed accept (out of file descriptors, say) is tried again after this long
_ACCEPT_RETRY_S: Final = 0.1

# what a peer that does not speak TLS to a TLS master sees: its HELLO answered by a closed connection
PLAIN_TO_TLS_HINT: Final = "if the master uses TLS, connect with --tls or --tls-ca FILE"


class TlsSetupError(TitanError):
    """A certificate, key or CA file that cannot be used; the message names the file."""

    code = "TLS"


def _load(what: str, files: list[Path], load: Callable[[], object]) -> None:
    """Run ``load``; any failure becomes one line naming ``what`` and, if one is missing, the file."""
    for path in files:
        if not path.exists():
            raise TlsSetupError(f"TLS file {path} does not exist")
        if not path.is_file():
            raise TlsSetupError(f"TLS file {path} is not a file")
    try:
        load()
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        if isinstance(exc, ssl.SSLError) and (not reason or "PEM lib" in str(exc)):
            reason = "not in PEM format, or a key that is missing or encrypted"
        elif reason == "KEY_VALUES_MISMATCH":
            reason = "the key does not belong to the certificate"
        raise TlsSetupError(f"TLS {what} cannot be used: {reason}") from None


def server_context(cert: Path, key: Path | None = None) -> ssl.SSLContext:
    """The master's context: ``cert`` (a PEM chain) with ``key`` (default: the key inside ``cert``).

    Raises:
        TlsSetupError: a file is missing, is not PEM, or the key does not match the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    what = f"certificate {cert}" if key is None else f"certificate {cert} with key {key}"

    def no_passphrase() -> str:
        # without this, OpenSSL asks for the passphrase on the terminal: a master under a service
        # manager would wait for it
        raise TlsSetupError(f"TLS key {key or cert} is encrypted: give the master a key without a passphrase")

    def load() -> None:
        context.load_cert_chain(cert, key, password=no_passphrase)

    _load(what, [cert] if key is None else [cert, key], load)
    return context


@dataclass(frozen=True)
class TlsClient:
    """How a worker or client dials a TLS master: trust ``ca`` (a PEM file), or the system's CAs if None."""

    ca: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A verifying context (certificate and host name both checked).

        Raises:
            TlsSetupError: ``ca`` is missing or holds no certificate.
        """
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca is not None:
            ca = self.ca
            _load(f"CA file {ca}", [ca], lambda: context.load_verify_locations(cafile=ca))
        return context


def describe_tls_failure(exc: ssl.SSLError, host: str, port: int) -> ConnectError:
    """A dialling side's TLS failure as one line that says what to change."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or "not trusted"
        if exc.verify_code in _NAME_MISMATCH:  # the certificate is trusted, but names other hosts
            hint = "dial the master by a name or address its certificate lists (subjectAltName)"
        else:
            hint = "pass the CA that signed it with --tls-ca FILE"
        return TlsRefused(f"cannot reach the master at {host}:{port}: its TLS certificate was refused ({why}); {hint}")
    reason = exc.reason or str(exc)
    if reason in ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING", "RECORD_LAYER_FAILURE"):
        return TlsRefused(
            f"cannot reach the master at {host}:{port}: it does not answer in TLS "
            f"({reason}); drop --tls/--tls-ca if it runs without a certificate"
        )
    return ConnectError(f"cannot reach the master at {host}:{port}: TLS failed ({reason})")


class TlsServer:
    """The master's TLS listener: it accepts each connection and runs its handshake itself.

    asyncio's own server-side TLS drops a failed handshake in silence, before any protocol of ours
    has seen the connection, so the master could not say why a peer was refused. Here each
    accepted socket goes to ``loop.connect_accepted_socket`` with the TLS context: the socket is
    TLS from its first byte (no plain protocol ever reads the peer's ClientHello, which an earlier
    design, upgrading a plain connection with ``start_tls``, sometimes lost on uvloop, leaving the
    handshake to time out), a failure is handed to ``on_failure`` (the peer's address and OpenSSL's
    reason), and ``make_protocol()``'s protocol hears of the connection only once the handshake has
    succeeded (its ``connection_made``), so a refused peer leaves nothing behind.

    Use :meth:`bind`, then :meth:`start_serving`; :meth:`close` stops accepting and cancels the
    handshakes under way, :meth:`wait_closed` waits for that.
    """

    def __init__(
        self,
        listeners: list[socket.socket],
        context: ssl.SSLContext,
        *,
        timeout_s: float,
        make_protocol: Callable[[], asyncio.Protocol],
        on_failure: Callable[[str, BaseException], None],
    ) -> None:
        self._listeners = listeners
        self._context = context
        self._timeout_s = timeout_s
        self._make_protocol = make_protocol
        self._on_failure = on_failure
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()  # accept loops and handshakes under way
        self._handshakes = 0

    @classmethod
    async def bind(
        cls,
        host: str,
        port: int,
        context: ssl.SSLContext,
        *,
        timeout_s: float,
        make_protocol: Callable[[], asyncio.Protocol],
        on_failure: Callable[[str, BaseException], None],
        backlog: int = 1024,
    ) -> TlsServer:
        """Listen on every address ``host`` resolves to (``""``: all), as ``loop.create_server`` does.

        Raises:
            OSError: an address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        listeners: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                listener = socket.socket(family, kind, proto)
                listeners.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.bind(address)
                listener.listen(backlog)
                listener.setblocking(False)
        except BaseException:
            for listener in listeners:
                listener.close()
            raise
        return cls(listeners, context, timeout_s=timeout_s, make_protocol=make_protocol, on_failure=on_failure)

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._listeners)

    @property
    def handshakes(self) -> int:
        """Handshakes under way."""
        return self._handshakes

    async def start_serving(self) -> None:
        for listener in self._listeners:
            self._track(self._accept(listener), f"tls-accept-{listener.getsockname()[1]}")

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for listener in self._listeners:
            listener.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _track(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = self._loop.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, peer = await self._loop.sock_accept(listener)
            except (ConnectionAbortedError, InterruptedError):
                continue  # the peer gave up while it waited in the backlog
            except OSError as exc:  # out of descriptors, say: try again in a moment, as asyncio's server does
                self._on_failure("?", exc)
                await asyncio.sleep(_ACCEPT_RETRY_S)
                continue
            address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"
            self._track(self._handshake(connection, address), f"tls-{address}")

    async def _handshake(self, connection: socket.socket, address: str) -> None:
        self._handshakes += 1
        try:
            await self._loop.connect_accepted_socket(
                self._make_protocol, connection, ssl=self._context, ssl_handshake_timeout=self._timeout_s
            )
        except asyncio.CancelledError:
            connection.close()
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:  # ssl.SSLError is an OSError
            connection.close()
            self._on_failure(address, exc)
        finally:
            self._handshakes -= 1


def describe_handshake_failure(exc: BaseException) -> str:
    """Why a peer's TLS handshake failed, in a few words for the master's log."""
    reason = getattr(exc, "reason", None) or type(exc).__name__
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"):
        return f"{reason}: it does not speak TLS (a worker or client without --tls?)"
    if isinstance(exc, TimeoutError):
        return "it sent no TLS handshake in time"
    if isinstance(exc, ConnectionError) or reason == "UNEXPECTED_EOF_WHILE_READING":
        return f"{reason}: it closed the connection during the handshake (does it trust this certificate?)"
    return str(reason)
