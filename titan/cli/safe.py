"""What the master says about jobs and workers, made safe to print on a terminal.

Job ids, data, errors, skills and worker names come from whoever submitted the
job or started the worker. Printed as they came, an escape sequence in one
(``\\x1b[2J``) would clear or recolour the terminal of the operator who runs
``titan list``, and a text-direction control would make a line read other than
it is. :func:`for_terminal` returns a message whose every string has such
characters escaped as Python writes them (``\\x1b``), as the master's own error
messages are (``protocol.text.one_line``); ``--json`` output needs nothing of
the kind, since JSON escapes them itself.

A job's log shown in the REPL (``LOGS``) is text from the job itself, so
:func:`log_for_terminal` escapes it the same way, lines and tabs apart.
``titan logs`` in a shell writes the bytes as the job wrote them: that is what
it is for, and a pipe or file is where they usually go.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from protocol import Message, ProtocolError
from protocol.text import printable
from titan.errors import TitanError

__all__ = ["error_line", "for_terminal", "log_for_terminal"]

M = TypeVar("M", bound=Message)


def _needs_escaping(value: Any) -> bool:
    if isinstance(value, str):
        return not value.isprintable()
    if isinstance(value, list):
        return any(_needs_escaping(item) for item in value)
    if isinstance(value, Message):
        return any(_needs_escaping(getattr(value, field.name)) for field in dataclasses.fields(value))  # type: ignore[arg-type]
    return False


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    if isinstance(value, Message):
        return for_terminal(value)
    return value


def for_terminal(message: M) -> M:
    """``message`` itself when all its text is printable (the usual case), else a copy that is."""
    if not _needs_escaping(message):
        return message
    fields = dataclasses.fields(message)  # type: ignore[arg-type]
    return dataclasses.replace(message, **{field.name: _escaped(getattr(message, field.name)) for field in fields})  # type: ignore[type-var]


_LAYOUT = str.maketrans("", "", "\n\t")


def log_for_terminal(text: str) -> str:
    """A job's log text with everything but printable characters, line breaks and tabs escaped."""
    if text.translate(_LAYOUT).isprintable():
        return text  # nearly always: nothing to copy
    return "".join(char if char in "\n\t" or char.isprintable() else repr(char)[1:-1] for char in text)


def error_line(exc: BaseException) -> str:
    """``exc`` as the one line a person is shown: printable (a message may quote what was typed or
    sent, escape sequences and all), and marked as ours when it is not an error Titan reports."""
    message = printable(" ".join(str(exc).split())) or type(exc).__name__
    if not isinstance(exc, TitanError | ProtocolError):
        message = f"internal error: {type(exc).__name__}: {message}"
    return message
