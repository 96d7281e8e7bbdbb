"""WAL record framing: pure functions, no IO.

Theory of operation
-------------------
A log file is a plain concatenation of frames::

    | length u32 BE | crc32 u32 BE | msgpack body (length bytes) |

The body is one msgpack map (a ``dict`` with string keys in practice). The
checksum is ``zlib.crc32`` of the body: it runs at several GB/s in C, catches
every burst error up to 32 bits and all but 2**-32 of the rest, which is what
a log needs to tell a torn or rotten record from a good one. It is not a
defence against someone who edits the file on purpose.

Decoding walks the buffer frame by frame and stops at the *first* frame that
is not provably good. Everything before it is returned; nothing after it is,
because a log with a hole in it no longer says what happened in order. The
caller gets the length of the good prefix and a :class:`Damage` naming why the
walk stopped, so it can truncate a torn tail or report a corrupt record.

What a damaged frame looks like, and why each check exists:

* the buffer ends inside the 8-byte header or inside the body
  (:attr:`Damage.TORN_HEADER`, :attr:`Damage.TORN_BODY`): the writer died
  mid-write. This is the usual crash signature and only ever at the tail.
* the length is zero (:attr:`Damage.ZERO_LENGTH`): a zero-filled region, which
  is what a file system shows for blocks allocated but never written. It needs
  its own check because ``crc32(b"") == 0`` would otherwise let eight zero
  bytes pass as a valid empty frame.
* the length is above :data:`MAX_RECORD_BYTES` (:attr:`Damage.ABSURD_LENGTH`):
  garbage in the header. Refusing it early keeps a flipped high bit from
  turning into "torn body, wait for 3 GB more".
* the checksum does not match (:attr:`Damage.BAD_CHECKSUM`).
* the checksum matches but the body is not exactly one msgpack map
  (:attr:`Damage.BAD_MSGPACK`, :attr:`Damage.NOT_A_MAP`): cannot come from
  :func:`encode_record`, so it is treated as corruption too.

Seals
-----
When the writer moves on to the next segment it ends the full one with a
*seal*: a frame of fixed size (:data:`SEAL_BYTES`) whose body is
``{"seal": <crc32 u32 BE of every byte before it><record count u64 BE>}``.
Recovery then proves a sealed segment whole with one C-speed checksum of the
file instead of walking a million frames in Python (:func:`read_seal`); the
last segment, never sealed, and any segment whose seal does not check out are
walked frame by frame as before. A seal is not a record: readers stop in front
of it.

The decoder never raises on garbage and never returns a record it has not
checked. msgpack turns tuples into lists and needs ``strict_map_key=False``
to give back non-string keys; records are meant to be plain JSON-like maps.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, Final, NamedTuple

import msgpack

from protocol.frame import packb
from titan.wal.errors import WalCorrupt

__all__ = [
    "HEADER_BYTES",
    "MAX_RECORD_BYTES",
    "Damage",
    "DecodeResult",
    "SEAL_BYTES",
    "Record",
    "ScanResult",
    "Seal",
    "Snapshot",
    "decode_records",
    "decode_snapshot",
    "encode_record",
    "encode_seal",
    "find_next_frame",
    "looks_like_seal",
    "iter_records",
    "pack_snapshot_body",
    "read_seal",
    "scan_frames",
    "snapshot_header",
]

Record = dict[str, Any]

HEADER: Final = struct.Struct(">II")
HEADER_BYTES: Final = HEADER.size
# Far above any record the master writes (payloads are capped at 8 MiB by
# settings) and far below what a random 32-bit length usually reads as.
MAX_RECORD_BYTES: Final = 64 * 1024 * 1024


class Damage(enum.StrEnum):
    """Why :func:`decode_records` stopped before the end of the buffer."""

    TORN_HEADER = "torn header"
    TORN_BODY = "torn body"
    ZERO_LENGTH = "zero length"
    ABSURD_LENGTH = "absurd length"
    BAD_CHECKSUM = "bad checksum"
    BAD_MSGPACK = "bad msgpack"
    NOT_A_MAP = "not a map"

    @property
    def is_torn(self) -> bool:
        """True when the buffer simply ends too early (a write cut short)."""
        return self in (Damage.TORN_HEADER, Damage.TORN_BODY)


class DecodeResult(NamedTuple):
    """What :func:`decode_records` found: unpacks as ``records, good_length, problem``."""

    records: list[Record]
    good_length: int
    problem: Damage | None


def encode_record(body: Mapping[str, Any]) -> bytes:
    """Frame one record: header (length, crc32) followed by the msgpack body.

    Raises:
        ValueError: the packed body is larger than :data:`MAX_RECORD_BYTES`.
        TypeError: the body holds something msgpack cannot pack.
    """
    packed = packb(body)
    if len(packed) > MAX_RECORD_BYTES:
        raise ValueError(f"WAL record of {len(packed)} bytes is over the {MAX_RECORD_BYTES}-byte limit")
    return HEADER.pack(len(packed), zlib.crc32(packed)) + packed


# A seal's body, packed by hand so that its size never varies: fixmap(1),
# fixstr "seal", bin8 of 12 bytes (crc32 u32, record count u64).
_SEAL_FIELDS: Final = struct.Struct(">IQ")
_SEAL_PREFIX: Final = b"\x81\xa4seal\xc4" + bytes([_SEAL_FIELDS.size])
SEAL_BYTES: Final = HEADER.size + len(_SEAL_PREFIX) + _SEAL_FIELDS.size


class Seal(NamedTuple):
    """What a seal vouches for: the ``covered`` bytes in front of it hold ``records`` records."""

    covered: int
    records: int
    crc: int


def encode_seal(records: int, crc: int) -> bytes:
    """The seal for a segment whose bytes so far have checksum ``crc`` and hold ``records`` records."""
    body = _SEAL_PREFIX + _SEAL_FIELDS.pack(crc, records)
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def read_seal(buf: bytes | bytearray | memoryview) -> Seal | None:
    """The seal at the very end of ``buf``, if there is one whose own frame is intact.

    It only says what the seal claims: the caller checks ``crc`` against the
    covered bytes before trusting the segment.
    """
    size = len(buf)
    if size < SEAL_BYTES:
        return None
    tail = bytes(buf[size - SEAL_BYTES :])
    length, crc = HEADER.unpack_from(tail)
    body = tail[HEADER.size :]
    if length != len(body) or not body.startswith(_SEAL_PREFIX) or zlib.crc32(body) != crc:
        return None
    covered_crc, records = _SEAL_FIELDS.unpack_from(body, len(_SEAL_PREFIX))
    return Seal(size - SEAL_BYTES, records, covered_crc)


def looks_like_seal(buf: bytes | bytearray | memoryview, offset: int) -> bool:
    """True if the frame at ``offset`` is the last thing in ``buf`` and has a seal's size (maybe damaged)."""
    if len(buf) - offset != SEAL_BYTES:
        return False
    length, _ = HEADER.unpack_from(buf, offset)
    return bool(length == SEAL_BYTES - HEADER.size)


def decode_records(buf: bytes | bytearray | memoryview) -> DecodeResult:
    """Decode every whole, valid frame at the start of ``buf``.

    Returns:
        The records in order, the length of the prefix they came from, and
        ``None`` if that prefix is the whole buffer, else the :class:`Damage`
        of the frame at ``good_length``.
    """
    # Hot loop for replay: locals instead of globals and attribute lookups.
    view = memoryview(buf).cast("B")
    size = len(view)
    unpack_header = HEADER.unpack_from
    crc32 = zlib.crc32
    unpackb = msgpack.unpackb
    limit = MAX_RECORD_BYTES
    records: list[Record] = []
    append = records.append
    pos = 0
    try:
        while pos < size:
            if size - pos < 8:
                return DecodeResult(records, pos, Damage.TORN_HEADER)
            length, crc = unpack_header(view, pos)
            if length == 0:
                return DecodeResult(records, pos, Damage.ZERO_LENGTH)
            if length > limit:
                return DecodeResult(records, pos, Damage.ABSURD_LENGTH)
            end = pos + 8 + length
            if end > size:
                return DecodeResult(records, pos, Damage.TORN_BODY)
            body = view[pos + 8 : end]
            if crc32(body) != crc:
                return DecodeResult(records, pos, Damage.BAD_CHECKSUM)
            try:
                record = unpackb(body, raw=False, strict_map_key=False)
            except Exception:
                # msgpack raises a zoo of types (ExtraData, FormatError,
                # StackError, ValueError, UnicodeDecodeError...): all mean
                # the same thing here.
                return DecodeResult(records, pos, Damage.BAD_MSGPACK)
            if type(record) is not dict:
                return DecodeResult(records, pos, Damage.NOT_A_MAP)
            append(record)
            pos = end
        return DecodeResult(records, pos, None)
    finally:
        view.release()


class ScanResult(NamedTuple):
    """What :func:`scan_frames` found: unpacks as ``frames, good_length, problem``."""

    frames: int
    good_length: int
    problem: Damage | None


def scan_frames(buf: bytes | bytearray | memoryview) -> ScanResult:
    """Check framing and checksums without unpacking bodies.

    Recovery runs this first (about five times faster than decoding) so it can
    judge and repair the whole log before the caller replays a single record;
    :func:`iter_records` then decodes the verified prefix. The msgpack checks
    are left to that second pass, where a failure means a frame with a good
    checksum that :func:`encode_record` could not have written.
    """
    view = memoryview(buf).cast("B")
    size = len(view)
    unpack_header = HEADER.unpack_from
    crc32 = zlib.crc32
    limit = MAX_RECORD_BYTES
    count = 0
    pos = 0
    try:
        # the hot loop of recovery (a million frames): one test covers the three length checks
        while pos < size:
            if size - pos < 8:
                return ScanResult(count, pos, Damage.TORN_HEADER)
            length, crc = unpack_header(view, pos)
            end = pos + 8 + length
            if not 0 < length <= limit or end > size:
                return ScanResult(count, pos, _length_damage(length))
            if crc32(view[pos + 8 : end]) != crc:
                return ScanResult(count, pos, Damage.BAD_CHECKSUM)
            count += 1
            pos = end
        return ScanResult(count, pos, None)
    finally:
        view.release()


def _length_damage(length: int) -> Damage:
    """What is wrong with a frame whose length is bad or runs past the buffer."""
    if length == 0:
        return Damage.ZERO_LENGTH
    return Damage.ABSURD_LENGTH if length > MAX_RECORD_BYTES else Damage.TORN_BODY


def iter_records(buf: bytes | bytearray | memoryview, *, checked: bool = False) -> Iterator[Record]:
    """Yield the records of a buffer that is expected to hold only whole, valid frames.

    Unlike :func:`decode_records` this streams: replaying a million records
    should not need a million-element list, and a record that is applied and
    dropped before the next one is decoded leaves its memory warm in the cache
    for the next (a list per 16 MiB segment made replay half again as slow).
    It treats damage as a broken promise rather than a tail to report.
    ``checked`` skips the per-frame checksums: pass it only for bytes
    :func:`scan_frames` or a seal has just verified (recovery proves they are
    the same bytes with one checksum of the whole span).

    Raises:
        WalCorrupt: a frame is damaged; carries its offset and the reason.
    """
    view = memoryview(buf).cast("B")
    size = len(view)
    unpack_header = HEADER.unpack_from
    crc32 = zlib.crc32
    unpackb = msgpack.unpackb
    pos = 0
    try:
        while pos < size:
            if size - pos < 8:
                raise WalCorrupt(pos, Damage.TORN_HEADER)
            length, crc = unpack_header(view, pos)
            end = pos + 8 + length
            if length == 0 or length > MAX_RECORD_BYTES or end > size:
                raise WalCorrupt(pos, f"bad length {length}")
            body = view[pos + 8 : end]
            if not checked and crc32(body) != crc:
                raise WalCorrupt(pos, Damage.BAD_CHECKSUM)
            try:
                record = unpackb(body, raw=False, strict_map_key=False)
            except Exception as exc:
                raise WalCorrupt(pos, f"{Damage.BAD_MSGPACK}: {exc}") from exc
            if type(record) is not dict:
                raise WalCorrupt(pos, Damage.NOT_A_MAP)
            del body  # a live slice would keep ``view`` from being released
            yield record
            pos = end
    finally:
        view.release()


def find_next_frame(buf: bytes | bytearray, start: int) -> int | None:
    """Offset of the first valid frame at or after ``start``, or ``None``.

    Recovery uses this to tell a torn tail (nothing valid after the damage: the
    writer died mid-batch) from corruption with acknowledged records behind it.
    Candidates are found with C-speed searches rather than by testing every
    offset: any length up to 16 MiB has a zero first byte, and zero-filled
    runs are skipped whole.
    """
    size = len(buf)
    pos = start
    while True:
        pos = buf.find(b"\x00", pos)
        if pos < 0 or size - pos < 9:
            return None
        length, crc = HEADER.unpack_from(buf, pos)
        if length == 0:
            # Skip the whole run of zero bytes in one C call.
            run_end = size - len(bytes(buf[pos:]).lstrip(b"\x00"))
            pos = max(run_end - 3, pos + 1)
            continue
        end = pos + 8 + length
        if end <= size and zlib.crc32(buf[pos + 8 : end]) == crc:
            return pos
        pos += 1


# -- snapshots --------------------------------------------------------------
#
# A snapshot file is ``| magic 8 | crc32 u32 BE | length u64 BE | body |``,
# the body being msgpack ``{"upto": seq, "state": {...}}``. It is written to a
# temp file and renamed into place, so a reader only ever sees a whole one;
# the checksum covers the case where the disk lied anyway.

SNAPSHOT_MAGIC: Final = b"TITANSN1"
SNAPSHOT_HEADER: Final = struct.Struct(">8sIQ")


class Snapshot(NamedTuple):
    """A decoded snapshot: the state, and the first segment it does not cover."""

    upto_segment: int
    state: dict[str, Any]


def pack_snapshot_body(state: Mapping[str, Any], upto_segment: int) -> bytes:
    """msgpack the snapshot body. Runs on the caller's thread so the state is
    captured at the instant of the call; framing and writing can happen later."""
    body: bytes = msgpack.packb({"upto": upto_segment, "state": state}, use_bin_type=True)
    return body


def snapshot_header(body: bytes) -> bytes:
    """The header that goes in front of a packed snapshot body."""
    return SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, zlib.crc32(body), len(body))


def decode_snapshot(buf: bytes) -> Snapshot | None:
    """The snapshot in ``buf``, or ``None`` if it is not one whole, valid snapshot."""
    if len(buf) < SNAPSHOT_HEADER.size:
        return None
    magic, crc, length = SNAPSHOT_HEADER.unpack_from(buf)
    body = memoryview(buf)[SNAPSHOT_HEADER.size :]
    if magic != SNAPSHOT_MAGIC or length != len(body) or zlib.crc32(body) != crc:
        return None
    try:
        decoded = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:
        return None
    if not isinstance(decoded, dict):
        return None
    upto, state = decoded.get("upto"), decoded.get("state")
    if type(upto) is not int or upto < 1 or not isinstance(state, dict):
        return None
    return Snapshot(upto, state)
