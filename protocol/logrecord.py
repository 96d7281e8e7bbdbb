"""LOG_RECORD datagrams: their size budget and their MAC.

A LOG_RECORD travels alone in one UDP datagram (see ``docs/PROTOCOL.md``). Two
things about it are fixed by the protocol rather than by either end:

* **Size.** A datagram of at most :data:`LOG_DATAGRAM_BYTES` (1 200) bytes,
  header included, fits the smallest MTU an IPv6 path may have (1 280, minus 40
  for the IPv6 and 8 for the UDP header), so it is never fragmented on any
  path. :func:`log_data_budget` says how many output bytes fit beside the
  other fields.
* **MAC.** Where the cluster has a token, ``mac`` is HMAC-SHA256 over a
  canonical, length-prefixed encoding of the other fields (:func:`log_record_mac`),
  not over the msgpack body: msgpack may encode one value in several ways, so a
  receiver re-encoding a decoded body could not be sure to reproduce the
  sender's bytes. The key is derived from the token for this one use, so a MAC
  here can never be mistaken for a handshake proof.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

from .frame import encode_frame
from .messages import LogRecord

__all__ = ["LOG_DATAGRAM_BYTES", "encode_log_record", "log_data_budget", "log_key", "log_record_mac"]

LOG_DATAGRAM_BYTES: Final = 1200
MAC_BYTES: Final = 32
_STREAMS: Final = {"stdout": 1, "stderr": 2}
_FIXED: Final = struct.Struct(">QBQQ")  # attempt, stream, seq, offset
_KEY_LABEL: Final = b"titan log record key\x00"


def log_key(token: str) -> bytes:
    """The MAC key of LOG_RECORDs for a cluster token."""
    return hashlib.sha256(_KEY_LABEL + token.encode()).digest()


def log_record_mac(key: bytes, record: LogRecord) -> bytes:
    """HMAC-SHA256(key, u16 len(job_id) | job_id | u64 attempt | u8 stream | u64 seq | u64 offset | data)."""
    job = record.job_id.encode()
    head = struct.pack(">H", len(job)) + job
    fixed = _FIXED.pack(record.attempt, _STREAMS[record.stream], record.seq, record.offset)
    return hmac.new(key, head + fixed + record.data, hashlib.sha256).digest()


def encode_log_record(record: LogRecord) -> bytes:
    """The datagram: one frame, opcode LOG_RECORD (``mac`` left out when None)."""
    body = record.to_wire()
    if body["mac"] is None:
        del body["mac"]
    return encode_frame(record.OPCODE or 0, body)


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
