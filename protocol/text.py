"""Text for people on the wire: one line, bounded, always encodable.

An ERROR's ``message`` often quotes what the peer sent (a job id, a state, a
value of the wrong type). Quoted as it came, a job id with a newline in it would
split the message over lines a reader takes for separate ones, and a 70 000-
character one would flood a terminal; a lone surrogate from a local string
would not even encode. :func:`one_line` makes any such text safe to send.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MAX_MESSAGE_CHARS", "one_line", "printable"]

# far more than any message Titan writes about its own state needs
MAX_MESSAGE_CHARS: Final = 2000


def printable(text: str) -> str:
    """``text`` with line breaks, control and other unprintable characters escaped as Python writes
    them (a newline becomes the two characters ``\\n``)."""
    if text.isprintable():
        return text  # nearly always: nothing to copy
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """:func:`printable` ``text``, cut to ``limit`` characters."""
    if len(text) <= limit and text.isprintable():
        return text  # the usual message: nothing to do
    escaped = printable(text[:limit])
    if len(text) <= limit and len(escaped) <= limit:
        return escaped
    return f"{escaped[:limit]}... (cut from {len(text)} characters)"
