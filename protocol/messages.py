"""Typed message bodies and the envelope that puts them in frames.

Each body is a frozen dataclass with an ``OPCODE``. :meth:`Message.from_wire`
validates a decoded map against the dataclass' annotations: a missing field,
a wrong type or a value out of range raises :class:`SchemaError`, never
``KeyError``/``TypeError``. Unknown keys are ignored so that a newer peer may
add optional fields. The request id (``rid``) lives in the body map but belongs
to the envelope, not to the message: see :func:`encode_message` and
:func:`parse_request`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Literal, TypeVar, Union

from .errors import SchemaError, UnknownOpcode
from .frame import FLAG_ERROR, FLAG_REPLY, Frame, encode_frame
from .opcodes import Opcode

__all__ = [
    "REPLIES",
    "REQUESTS",
    "Auth",
    "Cancel",
    "Challenge",
    "Drain",
    "ErrorReply",
    "Heartbeat",
    "Hello",
    "JobInfo",
    "JobListReply",
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
    "Retry",
    "SpawnWorker",
    "Stats",
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
    "parse_message",
    "parse_reply",
    "parse_request",
]

M = TypeVar("M", bound="Message")
Converter = Callable[[Any, str], Any]


class Message:
    """Base of every body. Subclasses are frozen dataclasses."""

    OPCODE: ClassVar[Opcode | None] = None
    _converters: ClassVar[dict[str, tuple[Converter, bool]]]

    def to_wire(self) -> dict[str, Any]:
        """The body as a plain map, ready for msgpack."""
        return {f.name: _to_wire_value(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_wire(cls: type[M], body: Mapping[str, Any]) -> M:
        """Validate ``body`` and build the message.

        Raises:
            SchemaError: a field is missing, mistyped or out of range.
        """
        if not isinstance(body, Mapping):
            raise SchemaError(f"{cls.__name__}: expected a map, got {type(body).__name__}")
        kwargs: dict[str, Any] = {}
        for name, (convert, required) in _converters_of(cls).items():
            if name in body:
                kwargs[name] = convert(body[name], f"{cls.__name__}.{name}")
            elif required:
                raise SchemaError(f"{cls.__name__}: missing field '{name}'")
        message = cls(**kwargs)
        message.check()
        return message

    def check(self) -> None:
        """Range checks beyond types; raise :class:`SchemaError`."""


def _to_wire_value(value: Any) -> Any:
    if isinstance(value, Message):
        return value.to_wire()
    if isinstance(value, list):
        return [_to_wire_value(v) for v in value]
    return value


def _converters_of(cls: type[Message]) -> dict[str, tuple[Converter, bool]]:
    cached = cls.__dict__.get("_converters")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    hints = typing.get_type_hints(cls)
    table: dict[str, tuple[Converter, bool]] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        required = f.default is MISSING and f.default_factory is MISSING
        table[f.name] = (_converter(hints[f.name]), required)
    cls._converters = table
    return table


def _fail(where: str, expected: str, value: Any) -> SchemaError:
    return SchemaError(f"{where}: expected {expected}, got {type(value).__name__}")


def _converter(tp: Any) -> Converter:  # noqa: C901 - one branch per supported annotation
    if tp is Any:
        return lambda v, where: v
    if tp is str:
        return _check_str
    if tp is bool:
        return _check_bool
    if tp is int:
        return _check_int
    if tp is float:
        return _check_float
    if tp is bytes:
        return _check_bytes
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {tp}")
        convert_inner = _converter(inner[0])
        return lambda v, where: None if v is None else convert_inner(v, where)
    if origin is Literal:
        allowed = args
        return lambda v, where: _check_literal(v, where, allowed)
    if origin is list:
        convert_item = _converter(args[0])
        return lambda v, where: _check_list(v, where, convert_item)
    if origin is dict:
        convert_value = _converter(args[1])
        return lambda v, where: _check_dict(v, where, convert_value)
    if isinstance(tp, type) and issubclass(tp, Message):
        return lambda v, where: _check_nested(v, where, tp)
    raise TypeError(f"unsupported field type {tp!r}")


def _check_str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise _fail(where, "a string", v)
    return v


def _check_bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(where, "a boolean", v)
    return v


def _check_int(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise _fail(where, "an integer", v)
    return v


def _check_float(v: Any, where: str) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise _fail(where, "a number", v)
    if v != v or v in (float("inf"), float("-inf")):
        raise SchemaError(f"{where}: expected a finite number, got {v}")
    try:
        return float(v)
    except OverflowError:  # an int beyond float range (not from msgpack, whose ints are 64-bit)
        raise SchemaError(f"{where}: expected a finite number, got an integer out of range") from None


def _check_bytes(v: Any, where: str) -> bytes:
    if not isinstance(v, bytes):
        raise _fail(where, "bytes", v)
    return v


def _check_literal(v: Any, where: str, allowed: tuple[Any, ...]) -> Any:
    if v not in allowed or isinstance(v, bool) != any(isinstance(a, bool) for a in allowed):
        raise SchemaError(f"{where}: expected one of {', '.join(map(str, allowed))}, got {v!r}")
    return v


def _check_list(v: Any, where: str, convert_item: Converter) -> list[Any]:
    if not isinstance(v, list | tuple):
        raise _fail(where, "an array", v)
    return [convert_item(item, f"{where}[{i}]") for i, item in enumerate(v)]


def _check_dict(v: Any, where: str, convert_value: Converter) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(where, "a map", v)
    out: dict[str, Any] = {}
    for key, item in v.items():
        if not isinstance(key, str):
            raise _fail(f"{where} key", "a string", key)
        out[key] = convert_value(item, f"{where}[{key!r}]")
    return out


def _check_nested(v: Any, where: str, tp: type[Message]) -> Message:
    if not isinstance(v, dict):
        raise _fail(where, "a map", v)
    try:
        return tp.from_wire(v)
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc.message}") from exc


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SchemaError(message)


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


# --------------------------------------------------------------------------- worker <-> master


@dataclass(frozen=True, slots=True)
class TaskRef(Message):
    """One attempt of one job."""

    job_id: str
    attempt: int


TaskState = Literal["RUNNING", "COMPLETED", "FAILED"]


@dataclass(frozen=True, slots=True)
class TaskStatus(Message):
    """Worker -> master: an attempt started or ended. No answer."""

    OPCODE = Opcode.TASK_STATUS
    job_id: str
    attempt: int
    state: TaskState
    exit_code: int | None = None
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    # on a final report: the attempt's complete logs (tail-capped) and its output files
    stdout: bytes | None = None
    stderr: bytes | None = None
    outputs: dict[str, bytes] = field(default_factory=dict)
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Register(Message):
    """Worker -> master after the handshake; also on every reconnect."""

    OPCODE = Opcode.REGISTER
    worker_id: str
    name: str
    host: str
    port: int
    capacity: int
    skills: list[str]
    parent: str | None = None
    pid: int = 0
    running: list[TaskRef] = field(default_factory=list)
    finished: list[TaskStatus] = field(default_factory=list)

    def check(self) -> None:
        _require(self.capacity >= 1, f"Register.capacity: must be at least 1, got {self.capacity}")
        _require(0 <= self.port <= 65535, f"Register.port: out of range: {self.port}")


@dataclass(frozen=True, slots=True)
class RegisterReply(Message):
    OPCODE = Opcode.REGISTER
    worker_id: str
    heartbeat_interval_s: float
    stale: list[TaskRef] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Worker -> master every heartbeat interval. No answer."""

    OPCODE = Opcode.HEARTBEAT
    load: int
    running: list[TaskRef] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TaskStart(Message):
    """Master -> worker: run this attempt. No answer; the worker sends TASK_STATUS."""

    OPCODE = Opcode.TASK_START
    job_id: str
    attempt: int
    kind: str
    data: str
    args: list[str] = field(default_factory=list)
    timeout_s: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    payload: bytes | None = None
    payload_name: str = ""
    payload_hash: str = ""
    payload_mode: int = 0o644
    slots: int = 1
    # parents' output files, keyed "<parent id>/<relative path>", laid out under TITAN_INPUT_DIR
    inputs: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskStop(Message):
    """Master -> worker: kill this attempt's process group."""

    OPCODE = Opcode.TASK_STOP
    job_id: str
    attempt: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SpawnWorker(Message):
    """Master -> worker: start a child worker on ``port``."""

    OPCODE = Opcode.SPAWN_WORKER
    port: int
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class Drain(Message):
    """Master -> worker: take no new tasks; exit once idle."""

    OPCODE = Opcode.DRAIN
    reason: str = ""


# --------------------------------------------------------------------------- client -> master


@dataclass(frozen=True, slots=True)
class JobSpec(Message):
    """What a client asks to run (DESIGN §3)."""

    type: str
    data: str = ""
    id: str | None = None
    args: list[str] = field(default_factory=list)
    priority: int = 1
    delay_ms: int = 0
    deps: list[str] = field(default_factory=list)
    max_attempts: int = 3
    timeout_s: float | None = None
    slots: int = 1
    memory_mb: int | None = None
    skills: list[str] = field(default_factory=lambda: ["GENERAL"])
    affinity: bool = False
    port: int | None = None
    payload: bytes | None = None

    def check(self) -> None:
        _require(bool(self.type), "JobSpec.type: must not be empty")
        _require(self.delay_ms >= 0, f"JobSpec.delay_ms: must not be negative, got {self.delay_ms}")
        _require(self.max_attempts >= 1, f"JobSpec.max_attempts: must be at least 1, got {self.max_attempts}")
        _require(self.slots >= 1, f"JobSpec.slots: must be at least 1, got {self.slots}")
        _require(
            self.timeout_s is None or self.timeout_s > 0, f"JobSpec.timeout_s: must be positive, got {self.timeout_s}"
        )
        _require(self.id is None or bool(self.id), "JobSpec.id: must not be empty")


@dataclass(frozen=True, slots=True)
class TransitionInfo(Message):
    """One line of a job's story: a state change and what caused it."""

    start: str
    finish: str
    stimulus: str
    t: float


@dataclass(frozen=True, slots=True)
class JobInfo(Message):
    """A job as the master sees it."""

    id: str
    type: str
    data: str
    state: str
    priority: int
    attempts: int
    max_attempts: int
    submitted_at: float
    worker: str | None = None
    exit_code: int | None = None
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    deps: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    delay_ms: int = 0
    timeout_s: float | None = None
    skills: list[str] = field(default_factory=list)
    history: list[TransitionInfo] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WorkerInfo(Message):
    """A worker as the master sees it."""

    id: str
    name: str
    host: str
    port: int
    load: int
    capacity: int
    skills: list[str]
    health: str
    parent: str | None = None
    services: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    last_seen_s: float = 0.0
    pid: int = 0


@dataclass(frozen=True, slots=True)
class Submit(Message):
    OPCODE = Opcode.SUBMIT
    job: JobSpec


@dataclass(frozen=True, slots=True)
class SubmitReply(Message):
    OPCODE = Opcode.SUBMIT
    job_id: str


@dataclass(frozen=True, slots=True)
class SubmitDag(Message):
    OPCODE = Opcode.SUBMIT_DAG
    jobs: list[JobSpec]

    def check(self) -> None:
        _require(bool(self.jobs), "SubmitDag.jobs: a DAG needs at least one job")


@dataclass(frozen=True, slots=True)
class SubmitDagReply(Message):
    OPCODE = Opcode.SUBMIT_DAG
    job_ids: list[str]


@dataclass(frozen=True, slots=True)
class JobStatus(Message):
    OPCODE = Opcode.JOB_STATUS
    job_id: str


@dataclass(frozen=True, slots=True)
class JobReply(Message):
    """Answer to JOB_STATUS, CANCEL and RETRY."""

    OPCODE = Opcode.JOB_STATUS
    job: JobInfo


@dataclass(frozen=True, slots=True)
class ListJobs(Message):
    OPCODE = Opcode.LIST_JOBS
    state: str | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class JobListReply(Message):
    """Answer to LIST_JOBS and WAIT."""

    OPCODE = Opcode.LIST_JOBS
    jobs: list[JobInfo]
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class Stats(Message):
    OPCODE = Opcode.STATS


@dataclass(frozen=True, slots=True)
class StatsReply(Message):
    OPCODE = Opcode.STATS
    queued: int
    delayed: int
    blocked: int
    dead: int
    running: int
    scheduled: int
    completed: int
    failed: int
    cancelled: int
    workers: list[WorkerInfo]
    uptime_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Cancel(Message):
    OPCODE = Opcode.CANCEL
    job_id: str


@dataclass(frozen=True, slots=True)
class Retry(Message):
    OPCODE = Opcode.RETRY
    job_id: str


@dataclass(frozen=True, slots=True)
class Wait(Message):
    """Answered once every job is final, or when ``timeout_s`` passes."""

    OPCODE = Opcode.WAIT
    job_ids: list[str]
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class LogsSubscribe(Message):
    OPCODE = Opcode.LOGS_SUBSCRIBE
    job_id: str
    follow: bool = False


@dataclass(frozen=True, slots=True)
class LogsSubscribed(Message):
    OPCODE = Opcode.LOGS_SUBSCRIBE
    job_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class LogData(Message):
    """Master -> client: a chunk of a followed log; ``eof`` ends the stream."""

    OPCODE = Opcode.LOG_DATA
    job_id: str
    attempt: int
    stream: Literal["stdout", "stderr"]
    data: bytes
    eof: bool = False


@dataclass(frozen=True, slots=True)
class LogRecord(Message):
    """UDP, worker -> master: a sequence-numbered slice of a running job's output."""

    OPCODE = Opcode.LOG_RECORD
    job_id: str
    attempt: int
    stream: Literal["stdout", "stderr"]
    seq: int
    data: bytes
    mac: bytes | None = None


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
}


def encode_message(message: Message, *, rid: int | None = None, reply_to: Opcode | None = None) -> bytes:
    """Frame ``message``. ``reply_to`` marks an answer to a request of that opcode."""
    body = message.to_wire()
    if rid is not None:
        body["rid"] = rid
    if reply_to is not None:
        return encode_frame(reply_to, body, flags=FLAG_REPLY)
    assert message.OPCODE is not None, f"{type(message).__name__} cannot be sent on its own"
    return encode_frame(message.OPCODE, body)


def encode_error(code: str, message: str, *, rid: int | None = None) -> bytes:
    """An ERROR frame; with ``rid`` it answers that request."""
    body: dict[str, Any] = {"code": code, "message": message}
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
