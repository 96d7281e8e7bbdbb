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

import operator
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, cast

from .errors import SchemaError, UnknownOpcode
from .frame import FLAG_ERROR, FLAG_REPLY, Frame, encode_frame
from .opcodes import Opcode
from .schema import Message
from .schema import require as _require

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
    # LOG_RECORD datagrams meant for this attempt (sequence numbers used, both streams)
    log_datagrams: int = 0
    # DEPLOY: the service is up (settled, or its port answers); restarts after crashes so far
    up: bool = False
    restarts: int = 0


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
    # sha256 of the payloads in the worker's cache: the master does not ship those again
    payloads: list[str] = field(default_factory=list)
    # a child worker: the DEPLOY job id or the SPAWN_WORKER spawn_id it was started for
    spawn_id: str = ""

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
    # DEPLOY of a script: the service's port; it is up once the port accepts connections
    port: int | None = None


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
    capacity: int = 0  # 0: the parent's own
    spawn_id: str = ""  # echoed by the child in its REGISTER

    def check(self) -> None:
        _require(0 <= self.port <= 65535, f"SpawnWorker.port: out of range: {self.port}")
        _require(self.capacity >= 0, f"SpawnWorker.capacity: must not be negative, got {self.capacity}")


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
    # retry backoff: wait min(cap, base * factor ** (n - 1)) after failed attempt n, half of it jittered;
    # None takes the master's default
    backoff_base_s: float | None = None
    backoff_factor: float | None = None
    backoff_cap_s: float | None = None

    def to_wire(self) -> dict[str, Any]:
        """Fields at their default are left out (the receiver fills them back in): a DAG of
        100 000 jobs is then a few MiB instead of over the 16 MiB frame limit."""
        names, defaults, values_of = _jobspec_defaults()
        body: dict[str, Any] = {"type": self.type}
        for name, default, value in zip(names, defaults, values_of(self), strict=True):
            if value != default:
                body[name] = value
        return body

    def check(self) -> None:
        # plain ifs: the messages are only formatted on failure (a DAG brings 100 000 specs)
        if not self.type:
            raise SchemaError("JobSpec.type: must not be empty")
        if self.delay_ms < 0:
            raise SchemaError(f"JobSpec.delay_ms: must not be negative, got {self.delay_ms}")
        if self.max_attempts < 1:
            raise SchemaError(f"JobSpec.max_attempts: must be at least 1, got {self.max_attempts}")
        if self.slots < 1:
            raise SchemaError(f"JobSpec.slots: must be at least 1, got {self.slots}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise SchemaError(f"JobSpec.timeout_s: must be positive, got {self.timeout_s}")
        if self.id is not None and not self.id:
            raise SchemaError("JobSpec.id: must not be empty")


_JOBSPEC_DEFAULTS: list[tuple[tuple[str, ...], tuple[Any, ...], Callable[[Any], tuple[Any, ...]]]] = []


def _jobspec_defaults() -> tuple[tuple[str, ...], tuple[Any, ...], Callable[[Any], tuple[Any, ...]]]:
    """The optional JobSpec fields, their defaults, and one getter for all their values (computed once)."""
    if not _JOBSPEC_DEFAULTS:
        pairs = [
            (f.name, f.default if f.default is not MISSING else cast(Callable[[], Any], f.default_factory)())
            for f in fields(JobSpec)
            if f.default is not MISSING or f.default_factory is not MISSING
        ]
        names = tuple(name for name, _ in pairs)
        _JOBSPEC_DEFAULTS.append((names, tuple(default for _, default in pairs), operator.attrgetter(*names)))
    return _JOBSPEC_DEFAULTS[0]


@dataclass(frozen=True, slots=True)
class TransitionInfo(Message):
    """One line of a job's story: a state change and what caused it."""

    start: str
    finish: str
    stimulus: str
    t: float


@dataclass(frozen=True, slots=True)
class AttemptInfo(Message):
    """One attempt of a job: where and when it ran and how it ended."""

    attempt: int
    state: str
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: str = ""
    backoff_s: float | None = None
    outputs: list[str] = field(default_factory=list)
    # live log datagrams that never reached the master (the stored log is exact regardless)
    log_lost: int = 0
    # the stored logs hold only the tail (over the size limit)
    truncated: bool = False


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
    dag: str | None = None
    runs: list[AttemptInfo] = field(default_factory=list)
    # DEPLOY: restarts of the current attempt's service, and whether it is up now
    restarts: int = 0
    up: bool = False


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
    # a child worker: the DEPLOY job id or the spawn request (AUTO-n: the autoscaler's) it was started for
    spawn_id: str = ""


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
    dag_id: str = ""


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
    dag: str | None = None


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
    dag: bool = False


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
class JobOutputs(Message):
    """Ask for the output files a job's attempt kept (default: its latest attempt that has any)."""

    OPCODE = Opcode.JOB_OUTPUTS
    job_id: str
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class JobOutputsReply(Message):
    OPCODE = Opcode.JOB_OUTPUTS
    job_id: str
    attempt: int
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Gc(Message):
    """Remove the workspace folders of jobs final for longer than ``older_than_s``."""

    OPCODE = Opcode.GC
    older_than_s: float

    def check(self) -> None:
        _require(self.older_than_s >= 0, f"Gc.older_than_s: must not be negative, got {self.older_than_s}")


@dataclass(frozen=True, slots=True)
class GcReply(Message):
    OPCODE = Opcode.GC
    removed: list[str]
    freed_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Stop(Message):
    """End a running service (a DEPLOY job): it becomes STOPPED."""

    OPCODE = Opcode.STOP
    job_id: str


@dataclass(frozen=True, slots=True)
class Spawn(Message):
    """Ask a worker (default: the least-loaded top-level one) to start a child worker."""

    OPCODE = Opcode.SPAWN
    worker: str | None = None
    port: int = 0
    capacity: int = 0

    def check(self) -> None:
        _require(0 <= self.port <= 65535, f"Spawn.port: out of range: {self.port}")
        _require(self.capacity >= 0, f"Spawn.capacity: must not be negative, got {self.capacity}")


@dataclass(frozen=True, slots=True)
class SpawnReply(Message):
    OPCODE = Opcode.SPAWN
    parent: str
    spawn_id: str
    port: int = 0


@dataclass(frozen=True, slots=True)
class Retire(Message):
    """Drain a worker and its children; each leaves once idle."""

    OPCODE = Opcode.RETIRE
    worker: str


@dataclass(frozen=True, slots=True)
class RetireReply(Message):
    OPCODE = Opcode.RETIRE
    workers: list[str]


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
    # set on the last frame when the master ended the subscription early (e.g. a follower too slow)
    error: str = ""


@dataclass(frozen=True, slots=True)
class LogRecord(Message):
    """UDP, worker -> master: a sequence-numbered slice of a running job's output."""

    OPCODE = Opcode.LOG_RECORD
    job_id: str
    attempt: int
    stream: Literal["stdout", "stderr"]
    seq: int
    data: bytes
    offset: int = 0
    mac: bytes | None = None

    def check(self) -> None:
        _require(self.seq >= 0, f"LogRecord.seq: must not be negative, got {self.seq}")
        _require(self.offset >= 0, f"LogRecord.offset: must not be negative, got {self.offset}")


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
