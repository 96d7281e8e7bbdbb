"""Client -> master message bodies and their replies (SUBMIT, JOB_STATUS, LIST_JOBS, STATS, WAIT, ...).

Part of :mod:`protocol.messages`, which re-exports every name here; see its
docstring for how a body is validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .errors import SchemaError
from .opcodes import Opcode
from .schema import Message
from .schema import require as _require

__all__ = [
    "AttemptInfo",
    "Cancel",
    "Gc",
    "GcReply",
    "JobInfo",
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
    "Retire",
    "RetireReply",
    "Retry",
    "Spawn",
    "SpawnReply",
    "Stats",
    "StatsReply",
    "Stop",
    "Submit",
    "SubmitDag",
    "SubmitDagReply",
    "SubmitReply",
    "TransitionInfo",
    "Wait",
    "WorkerInfo",
]


# --------------------------------------------------------------------------- client -> master

# exec refuses any one argument of 32 pages or more (Linux's MAX_ARG_STRLEN, its NUL included)
MAX_ARG_BYTES: Final = 128 * 1024 - 1
# and arguments with the environment over a quarter of the stack limit (2 MiB by default): half
# of that is left to the worker's environment
MAX_ARGV_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class JobSpec(Message):
    """What a client asks to run (DESIGN §3)."""

    # a DAG of 100 000 jobs is then a few MiB instead of over the 16 MiB frame limit
    OMIT_DEFAULTS = True
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
        if self.memory_mb is not None and self.memory_mb < 1:
            raise SchemaError(f"JobSpec.memory_mb: must be at least 1, got {self.memory_mb}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise SchemaError(f"JobSpec.timeout_s: must be positive, got {self.timeout_s}")
        if self.id is not None and not self.id:
            raise SchemaError("JobSpec.id: must not be empty")
        # no program can take a NUL in its argv: refused here, not when a worker tries to spawn it
        if "\0" in self.data:
            raise SchemaError("JobSpec.data: must not contain NUL characters")
        if self.args and any("\0" in arg for arg in self.args):
            raise SchemaError("JobSpec.args: must not contain NUL characters")
        self._check_executable_size()

    def _check_executable_size(self) -> None:
        # nor a single argument over the kernel's 128 KiB, nor an argv over what exec takes beside an
        # environment: such a job could never start, so it is refused here, not at each of its attempts
        if self.type.upper() == "SHELL" and _utf8_over(self.data, MAX_ARG_BYTES):
            raise SchemaError(f"JobSpec.data: a command line over {MAX_ARG_BYTES} bytes cannot be executed")
        if not self.args:
            return
        if any(_utf8_over(arg, MAX_ARG_BYTES) for arg in self.args):
            raise SchemaError(f"JobSpec.args: an argument over {MAX_ARG_BYTES} bytes cannot be executed")
        characters = sum(len(arg) for arg in self.args) + len(self.data)
        if characters * 4 > MAX_ARGV_BYTES and (
            sum(len(arg.encode("utf-8", "surrogatepass")) for arg in self.args)
            + len(self.data.encode("utf-8", "surrogatepass"))
            > MAX_ARGV_BYTES
        ):
            raise SchemaError(f"JobSpec.args: data and args over {MAX_ARGV_BYTES} bytes cannot be executed")


def _utf8_over(text: str, limit: int) -> bool:
    """Whether ``text`` takes more than ``limit`` bytes in UTF-8 (encoded only when it might)."""
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


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

    OMIT_DEFAULTS = True  # on the hot path: fields at their default stay off the wire
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

    OMIT_DEFAULTS = True  # on the hot path: fields at their default stay off the wire
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
    # attempts counted against max_attempts (since submission, or the last RETRY); ``attempts`` is the
    # latest attempt's number, which also counts numbers skipped so that an old report is fenced
    tries: int = 0
    memory_mb: int | None = None  # reserved on its worker while it runs
    affinity: bool = False  # runs on the worker that ran its first dependency (a DAG's AFFINITY)


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
    # memory (MiB) its jobs may reserve (None: no limit), and how much its active jobs reserve
    memory_mb: int | None = None
    memory_used_mb: int = 0


@dataclass(frozen=True, slots=True)
class Submit(Message):
    OPCODE = Opcode.SUBMIT
    job: JobSpec


@dataclass(frozen=True, slots=True)
class SubmitReply(Message):
    OMIT_DEFAULTS = True  # on the hot path: the warning is nearly always empty
    OPCODE = Opcode.SUBMIT
    job_id: str
    # accepted, but it cannot start yet: no worker that is up has what it needs
    warning: str = ""


@dataclass(frozen=True, slots=True)
class SubmitDag(Message):
    """A DAG, whole (``parts`` 1) or as one of ``parts`` consecutive parts on one connection.

    The master keeps parts until the last one arrives and then admits them as one
    DAG, all or nothing: a DAG is then not bounded by one frame's size, and the
    master checks a part while the client is still encoding the next one.
    """

    OMIT_DEFAULTS = True  # a DAG sent whole looks exactly as it did before parts existed
    OPCODE = Opcode.SUBMIT_DAG
    jobs: list[JobSpec]
    part: int = 0
    parts: int = 1

    def check(self) -> None:
        _require(bool(self.jobs), "SubmitDag.jobs: a DAG needs at least one job")
        _require(self.parts >= 1, f"SubmitDag.parts: must be at least 1, got {self.parts}")
        _require(0 <= self.part < self.parts, f"SubmitDag.part: must be 0 to {self.parts - 1}, got {self.part}")


@dataclass(frozen=True, slots=True)
class SubmitDagReply(Message):
    OMIT_DEFAULTS = True  # the warning is nearly always empty
    OPCODE = Opcode.SUBMIT_DAG
    job_ids: list[str]
    dag_id: str = ""
    # which jobs no worker that is up could ever run (skills, slots, memory); "" when all can
    warning: str = ""


@dataclass(frozen=True, slots=True)
class JobStatus(Message):
    OPCODE = Opcode.JOB_STATUS
    job_id: str


@dataclass(frozen=True, slots=True)
class JobReply(Message):
    """Answer to JOB_STATUS, CANCEL and RETRY."""

    OMIT_DEFAULTS = True  # on the hot path: fields at their default stay off the wire
    OPCODE = Opcode.JOB_STATUS
    job: JobInfo


@dataclass(frozen=True, slots=True)
class ListJobs(Message):
    OPCODE = Opcode.LIST_JOBS
    state: str | None = None
    limit: int = 1000
    dag: str | None = None
    offset: int = 0  # skip this many matching jobs first: a long listing is read in pages


@dataclass(frozen=True, slots=True)
class JobListReply(Message):
    """Answer to LIST_JOBS and WAIT."""

    OMIT_DEFAULTS = True  # on the hot path: fields at their default stay off the wire
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
    attempt: int | None = None  # an earlier attempt's stored log (None: the latest, followed with ``follow``)

    def check(self) -> None:
        _require(
            self.attempt is None or self.attempt >= 1, f"LogsSubscribe.attempt: must be at least 1, got {self.attempt}"
        )


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
    # where ``data`` starts in its attempt's stream; None where the master cannot tell (the copy
    # it kept of a running attempt's live log before it restarted): lets a client that
    # reconnects skip what it has shown, and see what went by while it was away
    offset: int | None = None

    def check(self) -> None:
        _require(self.offset is None or self.offset >= 0, f"LogData.offset: must not be negative, got {self.offset}")


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
