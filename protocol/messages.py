"""Typed message bodies and the envelope that puts them in frames.

Each body is a frozen dataclass with an ``OPCODE``. :meth:`Message.from_wire`
validates a decoded map against the dataclass' annotations: a missing field,
a wrong type or a value out of range raises :class:`SchemaError`, never
``KeyError``/``TypeError``. Unknown keys are ignored so that a newer peer may
add optional fields. The request id (``rid``) lives in the body map but belongs
to the envelope, not to the message: see :func:`encode_message` and
:func:`parse_request`.

The handshake bodies are here; the others are grouped by sender in
``messages_worker.py`` (worker <-> master) and ``messages_client.py``
(client -> master), and every one is exported from this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import SchemaError, UnknownOpcode
from .frame import FLAG_ERROR, FLAG_REPLY, Frame, encode_frame
from .messages_client import (
    AttemptInfo,
    Cancel,
    Gc,
    GcReply,
    JobInfo,
    JobListReply,
    JobOutputs,
    JobOutputsReply,
    JobReply,
    JobSpec,
    JobStatus,
    ListJobs,
    LogData,
    LogRecord,
    LogsSubscribe,
    LogsSubscribed,
    Retire,
    RetireReply,
    Retry,
    Spawn,
    SpawnReply,
    Stats,
    StatsReply,
    Stop,
    Submit,
    SubmitDag,
    SubmitDagReply,
    SubmitReply,
    TransitionInfo,
    Wait,
    WorkerInfo,
)
from .messages_worker import (
    Drain,
    Heartbeat,
    Register,
    RegisterReply,
    SpawnWorker,
    TaskRef,
    TaskStart,
    TaskStatus,
    TaskStop,
)
from .opcodes import Opcode
from .schema import Message
from .text import one_line

__all__ = [
    "REPLIES",
    "REQUESTS",
    "Auth",
    "Cancel",
    "Challenge",
    "Drain",
    "ErrorReply",
    "Gc",
    "GcReply",
    "Heartbeat",
    "Hello",
    "JobInfo",
    "AttemptInfo",
    "JobListReply",
    "JobOutputs",
    "JobOutputsReply",
    "JobReply",
    "JobSpec",
    "JobStatus",
    "ListJobs",
    "LogData",
    "LogRecord",
    "LogsSubscribe",
    "LogsSubscribed",
    "Message",
    "Register",
    "RegisterReply",
    "Retire",
    "RetireReply",
    "Retry",
    "Spawn",
    "SpawnReply",
    "SpawnWorker",
    "Stats",
    "Stop",
    "StatsReply",
    "Submit",
    "SubmitDag",
    "SubmitDagReply",
    "SubmitReply",
    "TaskRef",
    "TaskStart",
    "TaskStatus",
    "TaskStop",
    "TransitionInfo",
    "Wait",
    "Welcome",
    "WorkerInfo",
    "encode_error",
    "encode_message",
    "encode_reply_body",
    "parse_message",
    "parse_reply",
    "parse_request",
]


# --------------------------------------------------------------------------- handshake

Role = Literal["worker", "client"]


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First frame of every connection: who is calling and what it speaks."""

    OPCODE = Opcode.HELLO
    role: Role
    version: int
    name: str = ""


@dataclass(frozen=True, slots=True)
class Challenge(Message):
    """Master -> peer when the cluster has a token: prove you know it."""

    OPCODE = Opcode.CHALLENGE
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Auth(Message):
    """Peer -> master: HMAC-SHA256(token, nonce + role)."""

    OPCODE = Opcode.AUTH
    mac: bytes


@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """Master -> peer: the handshake succeeded."""

    OPCODE = Opcode.WELCOME
    server: str
    version: int
    heartbeat_interval_s: float
    max_body: int


@dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    """An error: a stable code and a one-line message for people."""

    OPCODE = Opcode.ERROR
    code: str
    message: str


# --------------------------------------------------------------------------- envelope

#: body class for a frame without the reply flag, by opcode
REQUESTS: Mapping[Opcode, type[Message]] = {
    cls.OPCODE: cls
    for cls in (
        Hello,
        Challenge,
        Auth,
        Welcome,
        ErrorReply,
        TaskStatus,
        Register,
        Heartbeat,
        TaskStart,
        TaskStop,
        SpawnWorker,
        Drain,
        Submit,
        SubmitDag,
        JobStatus,
        ListJobs,
        Stats,
        Cancel,
        Retry,
        Wait,
        LogsSubscribe,
        JobOutputs,
        Gc,
        Stop,
        Spawn,
        Retire,
        LogData,
        LogRecord,
    )  # fmt: skip
    if cls.OPCODE is not None
}

#: body class for a frame with the reply flag, by the request's opcode
REPLIES: Mapping[Opcode, type[Message]] = {
    Opcode.REGISTER: RegisterReply,
    Opcode.SUBMIT: SubmitReply,
    Opcode.SUBMIT_DAG: SubmitDagReply,
    Opcode.JOB_STATUS: JobReply,
    Opcode.LIST_JOBS: JobListReply,
    Opcode.STATS: StatsReply,
    Opcode.CANCEL: JobReply,
    Opcode.RETRY: JobReply,
    Opcode.WAIT: JobListReply,
    Opcode.LOGS_SUBSCRIBE: LogsSubscribed,
    Opcode.JOB_OUTPUTS: JobOutputsReply,
    Opcode.GC: GcReply,
    Opcode.STOP: JobReply,
    Opcode.SPAWN: SpawnReply,
    Opcode.RETIRE: RetireReply,
}


def encode_message(message: Message, *, rid: int | None = None, reply_to: Opcode | None = None) -> bytes:
    """Frame ``message``. ``reply_to`` marks an answer to a request of that opcode.

    Raises:
        SchemaError: a value msgpack cannot carry (an integer beyond 64 bits, a string
            that is not valid Unicode).
    """
    body = message.to_wire()
    if rid is not None:
        body["rid"] = rid
    try:
        if reply_to is not None:
            return encode_frame(reply_to, body, flags=FLAG_REPLY)
        assert message.OPCODE is not None, f"{type(message).__name__} cannot be sent on its own"
        return encode_frame(message.OPCODE, body)
    except (OverflowError, TypeError, UnicodeEncodeError) as exc:
        raise SchemaError(f"{type(message).__name__}: cannot be encoded: {exc}") from exc


def encode_reply_body(kind: type[Message], body: dict[str, Any], *, rid: int | None, reply_to: Opcode) -> bytes:
    """Frame an answer whose body the caller built as ``kind(...).to_wire()`` would.

    For hot answers that skip building the message (the master's WAIT and LIST
    answers: a job's map straight from its record); the caller vouches for the
    shape, and its tests compare it with ``to_wire``. ``body`` gains the ``rid``.

    Raises:
        SchemaError: a value msgpack cannot carry.
    """
    if rid is not None:
        body["rid"] = rid
    try:
        return encode_frame(reply_to, body, flags=FLAG_REPLY)
    except (OverflowError, TypeError, UnicodeEncodeError) as exc:
        raise SchemaError(f"{kind.__name__}: cannot be encoded: {exc}") from exc


def encode_error(code: str, message: str, *, rid: int | None = None) -> bytes:
    """An ERROR frame; with ``rid`` it answers that request.

    ``message`` goes out as one bounded line (:func:`~protocol.text.one_line`), whatever it quotes.
    """
    body: dict[str, Any] = {"code": code, "message": one_line(message)}
    flags = FLAG_ERROR
    if rid is not None:
        body["rid"] = rid
        flags |= FLAG_REPLY
    return encode_frame(Opcode.ERROR, body, flags=flags)


def _opcode(frame: Frame) -> Opcode:
    try:
        return Opcode(frame.opcode)
    except ValueError:
        raise UnknownOpcode(f"unknown opcode {frame.opcode:#04x}") from None


def parse_request(frame: Frame, allowed: Mapping[Opcode, type[Message]] = REQUESTS) -> Message:
    """Validate a frame that is not a reply against the body class of its opcode.

    ``allowed`` narrows the table to what this receiver accepts from this sender.
    """
    op = _opcode(frame)
    cls = allowed.get(op)
    if cls is None:
        raise UnknownOpcode(f"opcode {op.name} is not accepted here")
    return cls.from_wire(frame.body)


def parse_reply(frame: Frame) -> Message:
    """Validate a reply frame: an :class:`ErrorReply` or the request's answer class."""
    if frame.is_error or frame.opcode == Opcode.ERROR:
        return ErrorReply.from_wire(frame.body)
    op = _opcode(frame)
    cls = REPLIES.get(op)
    if cls is None:
        raise UnknownOpcode(f"opcode {op.name} has no reply")
    return cls.from_wire(frame.body)


def parse_message(frame: Frame) -> Message:
    """Either of the above, by the frame's reply flag."""
    return parse_reply(frame) if frame.is_reply or frame.is_error else parse_request(frame)
