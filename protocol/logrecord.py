"""LOG_RECORD datagrams: their size budget and their MAC.

A LOG_RECORD travels alone in one UDP datagram (see ``docs/PROTOCOL.md``). Two
things about it are fixed by the protocol rather than by either end:

* **Size.** A datagram of at most :data:`LOG_DATAGRAM_BYTES` (1 200) bytes,
  header included, fits the smallest MTU an IPv6 path may have (1 280, minus 40
  for the IPv6 and 8 for the UDP header), so it is never fragmented on any
  path. When the master is on the sender's own host the path is the loopback
  interface (MTU 65 536), and a datagram may be up to
  :data:`LOG_LOCAL_DATAGRAM_BYTES` (65 000): one datagram then carries what
  54 small ones would, for the same per-datagram work at both ends. A receiver
  accepts any size up to :data:`LOG_MAX_DATAGRAM_BYTES`.
  :func:`log_data_budget` says how many output bytes fit beside the other
  fields.
* **MAC.** Where the cluster has a token, ``mac`` is HMAC-SHA256 over a
  canonical, length-prefixed encoding of the other fields (:func:`log_record_mac`),
  not over the msgpack body: msgpack may encode one value in several ways, so a
  receiver re-encoding a decoded body could not be sure to reproduce the
  sender's bytes. The key is derived from the token for this one use, so a MAC
  here can never be mistaken for a handshake proof.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import struct
from typing import Final, Literal

from .frame import pack_header, packb
from .messages import LogRecord
from .opcodes import Opcode

__all__ = [
    "LOG_DATAGRAM_BYTES",
    "LOG_LOCAL_DATAGRAM_BYTES",
    "LOG_MAX_DATAGRAM_BYTES",
    "encode_log_record",
    "log_data_budget",
    "log_key",
    "log_mac",
    "log_record_head",
    "log_record_mac",
]

LOG_DATAGRAM_BYTES: Final = 1200
#: the largest datagram over the loopback interface (the master on the sender's host)
LOG_LOCAL_DATAGRAM_BYTES: Final = 65_000
#: the largest UDP payload there is (IPv4: 65 535 - 20 - 8); receivers take any datagram up to it
LOG_MAX_DATAGRAM_BYTES: Final = 65_507
MAC_BYTES: Final = 32
_STREAMS: Final = {"stdout": 1, "stderr": 2}
_FIXED: Final = struct.Struct(">QBQQ")  # attempt, stream, seq, offset
_JOB_LENGTH: Final = struct.Struct(">H")
_DATA_KEY: Final = packb("data")
_KEY_LABEL: Final = b"titan log record key\x00"


def log_key(token: str) -> bytes:
    """The MAC key of LOG_RECORDs for a cluster token."""
    return hashlib.sha256(_KEY_LABEL + token.encode()).digest()


def log_record_mac(key: bytes, record: LogRecord) -> bytes:
    """HMAC-SHA256(key, u16 len(job_id) | job_id | u64 attempt | u8 stream | u64 seq | u64 offset | data)."""
    return log_mac(key, record.job_id, record.attempt, record.stream, record.seq, record.offset, record.data)


def log_mac(
    key: bytes,
    job_id: str,
    attempt: int,
    stream: Literal["stdout", "stderr"],
    seq: int,
    offset: int,
    data: bytes | memoryview,
) -> bytes:
    """:func:`log_record_mac` of the record with these fields (``data`` may be a view: it is not copied)."""
    job = job_id.encode()
    mac = _keyed(key).copy()  # the key's pads are hashed once per key, not once per datagram
    mac.update(_JOB_LENGTH.pack(len(job)) + job + _FIXED.pack(attempt, _STREAMS[stream], seq, offset))
    mac.update(data)
    return mac.digest()


@functools.lru_cache(maxsize=16)
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def encode_log_record(record: LogRecord) -> bytes:
    """The datagram: one frame, opcode LOG_RECORD (``mac`` left out when None)."""
    head = log_record_head(
        record.job_id, record.attempt, record.stream, record.seq, record.offset, len(record.data), record.mac
    )
    return head + record.data


def log_record_head(
    job_id: str,
    attempt: int,
    stream: Literal["stdout", "stderr"],
    seq: int,
    offset: int,
    size: int,
    mac: bytes | None = None,
) -> bytes:
    """The datagram of a LOG_RECORD up to its ``size`` bytes of data: the datagram is this, then the data.

    ``data`` is the body's last value, so a sender can hand the two pieces to
    ``sendmsg`` and never copy the output into a datagram of its own.
    """
    fields: dict[str, object] = {"job_id": job_id, "attempt": attempt, "stream": stream, "seq": seq, "offset": offset}
    if mac is not None:
        fields["mac"] = mac
    body = bytearray(packb(fields))
    body[0] += 1  # a fixmap (0x80 | entries): one entry more, "data"
    body += _DATA_KEY
    if size < 0x100:
        body += b"\xc4" + size.to_bytes(1, "big")
    elif size < 0x10000:
        body += b"\xc5" + size.to_bytes(2, "big")
    else:
        body += b"\xc6" + size.to_bytes(4, "big")
    return pack_header(Opcode.LOG_RECORD, 0, len(body) + size) + body


def log_data_budget(job_id: str, *, with_mac: bool, datagram_bytes: int = LOG_DATAGRAM_BYTES) -> int:
    """How many output bytes one datagram of ``job_id``'s log can carry.

    Measured on a record with the widest integers, so any seq or offset fits.
    """
    probe = LogRecord(
        job_id=job_id,
        attempt=2**63,
        stream="stdout",
        seq=2**63,
        data=b"",
        offset=2**63,
        mac=b"\x00" * MAC_BYTES if with_mac else None,
    )
    overhead = len(encode_log_record(probe)) + 5  # bin 32 header, the widest a data field can need
    return max(0, datagram_bytes - overhead)
