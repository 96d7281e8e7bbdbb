"""Worker <-> master message bodies (REGISTER, HEARTBEAT, TASK_STATUS, TASK_START, ...).

Part of :mod:`protocol.messages`, which re-exports every name here; see its
docstring for how a body is validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .opcodes import Opcode
from .schema import Message
from .schema import require as _require

__all__ = [
    "Drain",
    "Heartbeat",
    "Register",
    "RegisterReply",
    "SpawnWorker",
    "TaskRef",
    "TaskStart",
    "TaskState",
    "TaskStatus",
    "TaskStop",
]


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

    OMIT_DEFAULTS = True  # on the hot path: fields at their default stay off the wire
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
    # on a final report: the worker stopped the attempt because it is shutting down, not because
    # of anything the job did; the master requeues the job at once, and the attempt does not count
    handed_back: bool = False


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
    # memory (MiB) jobs may reserve here (``JobSpec.memory_mb``); None: no limit on reservations
    memory_mb: int | None = None
    # the machine's memory (MiB), which every worker on this host shares; None: unknown
    host_memory_mb: int | None = None
    # the worker's clock (epoch seconds) as it sent this: with a finished result's own times, the
    # master dates a result that waited for this reconnect by when it happened, not when it arrived
    sent_at: float | None = None

    def check(self) -> None:
        _require(self.capacity >= 1, f"Register.capacity: must be at least 1, got {self.capacity}")
        _require(0 <= self.port <= 65535, f"Register.port: out of range: {self.port}")
        _require(
            self.memory_mb is None or self.memory_mb >= 1,
            f"Register.memory_mb: must be at least 1, got {self.memory_mb}",
        )
        _require(
            self.host_memory_mb is None or self.host_memory_mb >= 1,
            f"Register.host_memory_mb: must be at least 1, got {self.host_memory_mb}",
        )


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
    # the worker is shutting down: it takes no new task, hands back what it runs, and leaves
    leaving: bool = False


@dataclass(frozen=True, slots=True)
class TaskStart(Message):
    """Master -> worker: run this attempt. No answer; the worker sends TASK_STATUS."""

    OMIT_DEFAULTS = True  # on the hot path: fields at their default stay off the wire
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
