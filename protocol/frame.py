"""TITAN_PROTO framing: the 8-byte header and an incremental, sans-IO codec.

Theory of operation
-------------------
A frame is ``| version | opcode | flags | spare | length (u32 BE) |`` followed by
``length`` bytes of msgpack that must decode to a map. The codec never touches
a socket: :func:`encode_frame` returns bytes and :class:`FrameDecoder` is fed
whatever chunks the transport delivers (TCP may cut a frame anywhere) and hands
back whole frames, or :data:`NEED_DATA` when it needs more bytes.

The declared length is checked against the limit as soon as the header is
complete, before a single body byte is buffered, so a peer cannot make us
allocate what it merely promises. Header errors poison the decoder: once the
frame boundary is lost nothing after it can be trusted, so every later call
raises the same error. A body that fails to decode does not poison it, since
its boundary was known; the caller answers with an ERROR and reads on.
"""

from __future__ import annotations

import gc
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from .errors import (
    BadHeader,
    FrameTooLarge,
    MalformedBody,
    ProtocolError,
    TruncatedFrame,
    UnsupportedVersion,
)

__all__ = [
    "DEFAULT_MAX_BODY",
    "FLAG_ERROR",
    "FLAG_REPLY",
    "HEADER_SIZE",
    "NEED_DATA",
    "VERSION",
    "Frame",
    "FrameDecoder",
    "NeedData",
    "decode_datagram",
    "encode_frame",
    "pack_header",
    "packb",
    "unpack_header",
]

VERSION: Final = 1
HEADER: Final = struct.Struct(">BBBBI")
HEADER_SIZE: Final = HEADER.size
FLAG_REPLY: Final = 0x01
FLAG_ERROR: Final = 0x02
KNOWN_FLAGS: Final = FLAG_REPLY | FLAG_ERROR
DEFAULT_MAX_BODY: Final = 16 * 1024 * 1024
MAX_WIRE_LENGTH: Final = 0xFFFFFFFF


class NeedData:
    """Sentinel type: the decoder holds no whole frame yet."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: the opcode as sent, its flags and its body map."""

    opcode: int
    body: dict[str, Any]
    flags: int = 0

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & FLAG_REPLY)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    @property
    def rid(self) -> int | None:
        """The request id the body carries, if any."""
        rid = self.body.get("rid")
        return rid if isinstance(rid, int) and not isinstance(rid, bool) else None


def pack_header(opcode: int, flags: int, length: int) -> bytes:
    """Pack an 8-byte header for a body of ``length`` bytes."""
    if not 0 <= opcode <= 0xFF:
        raise ValueError(f"opcode {opcode} does not fit in one byte")
    if flags & ~KNOWN_FLAGS:
        raise ValueError(f"unknown flag bits {flags:#04x}")
    if not 0 <= length <= MAX_WIRE_LENGTH:
        raise ValueError(f"body of {length} bytes does not fit the length field")
    return HEADER.pack(VERSION, opcode, flags, 0, length)


_TLS_HANDSHAKE: Final = 0x16


def unpack_header(header: bytes | bytearray | memoryview, max_body: int) -> tuple[int, int, int]:
    """Validate an 8-byte header and return ``(opcode, flags, length)``.

    Raises:
        UnsupportedVersion, BadHeader, FrameTooLarge.
    """
    version, opcode, flags, spare, length = HEADER.unpack_from(header)
    if version != VERSION:
        # 0x16 opens every TLS record of a handshake: the peer speaks TLS to an end that does not
        tls = "; this is a TLS handshake, and this end does not use TLS" if version == _TLS_HANDSHAKE else ""
        raise UnsupportedVersion(f"protocol version {version} is not supported (this peer speaks {VERSION}){tls}")
    if flags & ~KNOWN_FLAGS:
        raise BadHeader(f"unknown flag bits {flags & ~KNOWN_FLAGS:#04x} in version {VERSION}")
    if spare != 0:
        raise BadHeader(f"spare byte must be zero in version {VERSION}, got {spare}")
    if length > max_body:
        raise FrameTooLarge(f"declared body of {length} bytes exceeds the limit of {max_body}")
    return opcode, flags, length


def encode_frame(opcode: int, body: dict[str, Any], *, flags: int = 0) -> bytes:
    """Return the wire bytes of one frame whose body is ``body`` as msgpack."""
    payload = packb(body)
    return pack_header(opcode, flags, len(payload)) + payload


_packers = threading.local()


def packb(obj: Any) -> bytes:
    """``msgpack.packb(obj, use_bin_type=True)``, reusing one packer per thread.

    Making a packer costs more than packing a small body; one packer cannot be
    shared between threads (it keeps its buffer between calls), hence one each.
    """
    try:
        packer: msgpack.Packer = _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    packed: bytes = packer.pack(obj)
    return packed


# msgpack makes one object per value: while a body of several MiB (a 100 000-job DAG) is
# unpacked, the cyclic GC would rescan the growing heap again and again, 5x the unpack itself
_GC_PAUSE_BYTES: Final = 1 << 20


def _decode_body(payload: bytes | memoryview) -> dict[str, Any]:
    paused = len(payload) >= _GC_PAUSE_BYTES and gc.isenabled()
    if paused:
        gc.disable()
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types for garbage
        raise MalformedBody(f"body is not valid msgpack: {type(exc).__name__}") from exc
    finally:
        if paused:
            gc.enable()
    if not isinstance(body, dict):
        raise MalformedBody(f"body must be a msgpack map, got {type(body).__name__}")
    return body


class FrameDecoder:
    """Incremental decoder: ``feed()`` chunks in, ``next_frame()`` frames out.

    ``feed(b"")`` signals end of stream; a partial frame left at that point is
    reported as :class:`TruncatedFrame`.
    """

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        self._buffer = bytearray()
        self._eof = False
        self._poison: ProtocolError | None = None
        # header of the frame being assembled, once validated
        self._pending: tuple[int, int, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("feed() after end of stream")
        self._buffer += data

    def next_frame(self) -> Frame | NeedData:
        """Return the next whole frame, or :data:`NEED_DATA`.

        Raises:
            ProtocolError: a subclass naming what was wrong.
        """
        if self._poison is not None:
            raise self._poison
        buf = self._buffer
        if self._pending is None:
            if len(buf) < HEADER_SIZE:
                return self._need_more()
            try:
                self._pending = unpack_header(buf, self.max_body)
            except ProtocolError as exc:
                self._poison = exc
                self._buffer = bytearray()
                raise
        opcode, flags, length = self._pending
        end = HEADER_SIZE + length
        if len(buf) < end:
            return self._need_more()
        self._pending = None
        try:
            # decoded in place: msgpack copies out what it keeps, so the body is never copied whole
            with memoryview(buf) as view, view[HEADER_SIZE:end] as payload:
                body = _decode_body(payload)
        finally:
            del buf[:end]
        return Frame(opcode, body, flags)

    def _need_more(self) -> NeedData:
        if self._eof and self._buffer:
            self._poison = TruncatedFrame(f"stream ended inside a frame ({len(self._buffer)} bytes left over)")
            raise self._poison
        return NEED_DATA

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.next_frame()
            if isinstance(frame, NeedData):
                return
            yield frame


def decode_datagram(data: bytes, max_body: int = DEFAULT_MAX_BODY) -> Frame:
    """Decode a UDP datagram that must hold exactly one whole frame."""
    if not data:
        raise TruncatedFrame("empty datagram")
    if len(data) < HEADER_SIZE:
        raise TruncatedFrame(f"datagram ended inside the header ({len(data)} bytes)")
    opcode, flags, length = unpack_header(data, max_body)
    end = HEADER_SIZE + length
    if len(data) < end:
        raise TruncatedFrame(f"datagram ended inside the frame ({len(data)} of {end} bytes)")
    if len(data) > end:
        raise BadHeader(f"{len(data) - end} trailing bytes after the frame in a datagram")
    with memoryview(data) as view, view[HEADER_SIZE:] as payload:
        return Frame(opcode, _decode_body(payload), flags)
