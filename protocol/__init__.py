"""TITAN_PROTO: sans-IO framing and typed messages. No asyncio, no sockets."""

from __future__ import annotations

from .errors import (
    BadHeader,
    FrameTooLarge,
    HandshakeFailed,
    MalformedBody,
    ProtocolError,
    SchemaError,
    TruncatedFrame,
    UnknownOpcode,
    UnsupportedVersion,
)
from .frame import (
    DEFAULT_MAX_BODY,
    FLAG_ERROR,
    FLAG_REPLY,
    HEADER_SIZE,
    NEED_DATA,
    VERSION,
    Frame,
    FrameDecoder,
    NeedData,
    decode_datagram,
    encode_frame,
    pack_header,
    unpack_header,
)
from .logrecord import (
    LOG_DATAGRAM_BYTES,
    LOG_LOCAL_DATAGRAM_BYTES,
    LOG_MAX_DATAGRAM_BYTES,
    encode_log_record,
    log_data_budget,
    log_key,
    log_mac,
    log_record_head,
    log_record_mac,
)
from .messages import *  # noqa: F403 - re-export the message table
from .messages import __all__ as _messages_all
from .opcodes import Opcode

__all__ = [
    "DEFAULT_MAX_BODY",
    "FLAG_ERROR",
    "FLAG_REPLY",
    "HEADER_SIZE",
    "LOG_DATAGRAM_BYTES",
    "LOG_LOCAL_DATAGRAM_BYTES",
    "LOG_MAX_DATAGRAM_BYTES",
    "NEED_DATA",
    "VERSION",
    "BadHeader",
    "Frame",
    "FrameDecoder",
    "FrameTooLarge",
    "HandshakeFailed",
    "MalformedBody",
    "NeedData",
    "Opcode",
    "ProtocolError",
    "SchemaError",
    "TruncatedFrame",
    "UnknownOpcode",
    "UnsupportedVersion",
    "decode_datagram",
    "encode_frame",
    "encode_log_record",
    "log_data_budget",
    "log_key",
    "log_mac",
    "log_record_head",
    "log_record_mac",
    "pack_header",
    "unpack_header",
    *_messages_all,
]
