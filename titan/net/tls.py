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
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

from titan.errors import ConnectError, TitanError, TlsRefused

__all__ = [
    "PLAIN_TO_TLS_HINT",
    "TlsAcceptor",
    "TlsClient",
    "TlsSetupError",
    "describe_handshake_failure",
    "describe_tls_failure",
    "server_context",
]

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: a trusted
# certificate, for other names or addresses
_NAME_MISMATCH: Final = frozenset({62, 64})

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


class TlsAcceptor(asyncio.Protocol):
    """The master's side of one connection while its TLS handshake runs; after it, ``make_protocol()``'s.

    asyncio's own server-side TLS drops a failed handshake in silence, before any protocol of ours
    has seen the connection, and keeps the protocol object it made for it from ever hearing of it
    (neither ``connection_made`` nor ``connection_lost``). The master could not say why a peer was
    refused, and each refused connection left a protocol behind. Here the handshake runs under
    ``loop.start_tls``: a failure is handed to ``on_failure`` (the peer's address and OpenSSL's
    reason) and leaves nothing; the protocol is made only once the handshake has succeeded.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        timeout_s: float,
        make_protocol: Callable[[], asyncio.Protocol],
        on_failure: Callable[[str, BaseException], None],
        pending: set[asyncio.Task[None]],
    ) -> None:
        self._context = context
        self._timeout_s = timeout_s
        self._make_protocol = make_protocol
        self._on_failure = on_failure
        self._pending = pending  # the handshakes under way, for whoever stops the server to cancel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        plain = cast(asyncio.Transport, transport)
        plain.pause_reading()  # the handshake's bytes are for start_tls, not for this protocol
        peername = transport.get_extra_info("peername")
        address = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) and len(peername) >= 2 else "?"
        task = asyncio.get_running_loop().create_task(self._handshake(plain, address), name=f"tls-{address}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _handshake(self, transport: asyncio.Transport, address: str) -> None:
        relay = _Relay()
        try:
            secure = await asyncio.get_running_loop().start_tls(
                transport, relay, self._context, server_side=True, ssl_handshake_timeout=self._timeout_s
            )
        except asyncio.CancelledError:
            transport.abort()
            raise
        except (OSError, TimeoutError, ConnectionError) as exc:  # ssl.SSLError is an OSError
            transport.abort()
            self._on_failure(address, exc)
            return
        if secure is None:  # the connection closed as the handshake ended
            return
        relay.start(self._make_protocol(), secure)

    def data_received(self, data: bytes) -> None:
        """Never called: reading is paused until start_tls takes the connection over."""

    def connection_lost(self, exc: Exception | None) -> None:
        """The handshake task sees a lost connection as its failure."""


class _Relay(asyncio.Protocol):
    """The protocol start_tls is given: holds what arrives before the real one has the connection.

    start_tls returns the secure transport a loop turn after the handshake ends, and a peer's
    first bytes (its HELLO) may already have come through by then.
    """

    def __init__(self) -> None:
        self._protocol: asyncio.Protocol | None = None
        self._early: list[bytes] = []
        self._eof = False
        self._lost: tuple[Exception | None] | None = None

    def start(self, protocol: asyncio.Protocol, transport: asyncio.BaseTransport) -> None:
        self._protocol = protocol
        protocol.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            protocol.data_received(data)
        if self._eof:
            protocol.eof_received()
        if self._lost is not None:
            protocol.connection_lost(self._lost[0])

    def data_received(self, data: bytes) -> None:
        if self._protocol is None:
            self._early.append(data)
        else:
            self._protocol.data_received(data)

    def eof_received(self) -> bool | None:
        if self._protocol is None:
            self._eof = True
            return None
        return self._protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._protocol is None:
            self._lost = (exc,)
        else:
            self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._protocol is not None:
            self._protocol.resume_writing()


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
