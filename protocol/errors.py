"""The protocol's one error hierarchy.

Every failure the codec or the message layer can detect is a subclass of
:class:`ProtocolError`. ``error_code`` is the code sent back in an ERROR frame,
and ``fatal`` says whether the byte stream can still be trusted afterwards:
a bad header leaves no way to find the next frame (fatal), while a body that
fails validation was cleanly delimited (the connection may carry on).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadHeader",
    "FrameTooLarge",
    "HandshakeFailed",
    "MalformedBody",
    "ProtocolError",
    "SchemaError",
    "TruncatedFrame",
    "UnknownOpcode",
    "UnsupportedVersion",
]


class ProtocolError(Exception):
    """Base of everything the codec and the message layer reject."""

    error_code: ClassVar[str] = "PROTOCOL_ERROR"
    fatal: ClassVar[bool] = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedVersion(ProtocolError):
    """The header names a protocol version this peer does not speak."""

    error_code = "BAD_VERSION"


class BadHeader(ProtocolError):
    """Unknown flag bits or a non-zero spare byte."""

    error_code = "BAD_HEADER"


class FrameTooLarge(ProtocolError):
    """The declared body length exceeds the configured limit."""

    error_code = "FRAME_TOO_LARGE"


class TruncatedFrame(ProtocolError):
    """The stream ended in the middle of a frame."""

    error_code = "TRUNCATED_FRAME"


class MalformedBody(ProtocolError):
    """The body is not a msgpack map."""

    error_code = "BAD_BODY"
    fatal = False


class UnknownOpcode(ProtocolError):
    """The opcode is not in the table, or not expected from this sender."""

    error_code = "UNKNOWN_OPCODE"
    fatal = False


class SchemaError(ProtocolError):
    """A field is missing, of the wrong type, or out of range."""

    error_code = "BAD_MESSAGE"
    fatal = False


class HandshakeFailed(ProtocolError):
    """Wrong role, wrong version or a failed token proof during the handshake."""

    error_code = "HANDSHAKE_FAILED"
