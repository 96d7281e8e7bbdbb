"""REPL lines -> command dataclasses. Pure: no IO, no terminal, no network.

Commands are case-insensitive; fields are separated by ``|`` (DESIGN §8).
Every malformed line raises :class:`~titan.errors.UsageError` with one line
that names the expected form and what was wrong, so the REPL and the command
line can print it as is.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from protocol import JobSpec
from titan.errors import UsageError

from .scaling import RetireCommand, SpawnCommand, StopCommand, parse_retire, parse_spawn, parse_stop

__all__ = [
    "COMMAND_NAMES",
    "DAG_FORM",
    "JOB_STATES",
    "SUBMIT_FORM",
    "CancelCommand",
    "CancelDagCommand",
    "Command",
    "DlqCommand",
    "ExitCommand",
    "HelpCommand",
    "ListCommand",
    "LogsCommand",
    "RetryCommand",
    "StatsCommand",
    "StatusCommand",
    "SubmitCommand",
    "SubmitDagCommand",
    "WatchCommand",
    "WorkersCommand",
    "is_worker_artifact",
    "parse_dag",
    "parse_line",
    "parse_submit",
]

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
SUBMIT_FORM: Final = "TYPE|DATA[|PRIORITY[|DELAY_MS]]"
WORKER_SUBMIT_FORM: Final = "DEPLOY|Worker.jar|PORT[|PRIORITY[|DELAY_MS]]"
_JOB_SEPARATOR: Final = re.compile(r"(?<!\\);")
DAG_FORM: Final = "ID|TYPE|DATA[|PORT]|PRIORITY|DELAY_MS|[DEPS][|AFFINITY]"

#: job states a LIST may filter on (DESIGN §3)
JOB_STATES: Final = (
    "BLOCKED",
    "DELAYED",
    "PENDING",
    "SCHEDULED",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "SKIPPED",
    "DEAD",
    "STOPPED",
)

# DATA values of a DEPLOY that start a child Titan worker (the classic artifact name is an alias)
_WORKER_ARTIFACTS: Final = frozenset({"worker", "worker.jar"})


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class SubmitCommand:
    """``SUBMIT TYPE|DATA[|PRIORITY[|DELAY_MS]]``; ``warning``: what the line may not mean as written."""

    spec: JobSpec
    warning: str = ""


@dataclass(frozen=True)
class SubmitDagCommand:
    """``SUBMIT_DAG job ; job ; ...``: accepted whole or not at all."""

    specs: list[JobSpec]


@dataclass(frozen=True)
class StatsCommand:
    """``STATS``: counts and the worker tree."""


@dataclass(frozen=True)
class StatusCommand:
    """``STATUS <id>``."""

    job_id: str


@dataclass(frozen=True)
class ListCommand:
    """``LIST [state] [--dag ID]``."""

    state: str | None = None
    dag: str | None = None  # a DAG id, or any job of the DAG


@dataclass(frozen=True)
class LogsCommand:
    """``LOGS <id> [-f] [--attempt N]``."""

    job_id: str
    follow: bool = False
    attempt: int | None = None


@dataclass(frozen=True)
class CancelCommand:
    """``CANCEL <id>``."""

    job_id: str


@dataclass(frozen=True)
class CancelDagCommand:
    """``CANCEL_DAG <id>``: cancel every unfinished job of the DAG (a DAG id or any of its job ids)."""

    ref: str


@dataclass(frozen=True)
class WatchCommand:
    """``WATCH <id>``: a live progress bar until the job (or its whole DAG) is final."""

    job_id: str


@dataclass(frozen=True)
class RetryCommand:
    """``RETRY <id>``: requeue a job from the dead-letter queue."""

    job_id: str


@dataclass(frozen=True)
class DlqCommand:
    """``DLQ``: the dead-letter queue (jobs in state DEAD)."""


@dataclass(frozen=True)
class WorkersCommand:
    """``WORKERS``: a table of the workers."""


@dataclass(frozen=True)
class HelpCommand:
    """``HELP [command]``."""

    topic: str | None = None


@dataclass(frozen=True)
class ExitCommand:
    """``EXIT`` or ``QUIT``."""


Command = (
    SubmitCommand
    | SubmitDagCommand
    | StatsCommand
    | StatusCommand
    | ListCommand
    | LogsCommand
    | CancelCommand
    | CancelDagCommand
    | WatchCommand
    | RetryCommand
    | DlqCommand
    | WorkersCommand
    | HelpCommand
    | ExitCommand
    | StopCommand
    | SpawnCommand
    | RetireCommand
)


# --------------------------------------------------------------------------- fields


def _int_field(command: str, form: str, name: str, text: str, *, minimum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{command} expects {form}; {name} must be an integer, got '{text}'") from None
    if minimum is not None and value < minimum:
        raise UsageError(f"{command} expects {form}; {name} must be at least {minimum}, got {value}")
    if not _INT64_MIN <= value <= _INT64_MAX:  # what the wire carries
        raise UsageError(f"{command} expects {form}; {name} must fit in 64 bits, got {text}")
    return value


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _job_type(command: str, form: str, text: str) -> str:
    if not text:
        raise UsageError(f"{command} expects {form}; TYPE is empty")
    if not all(ch.isalnum() or ch in "_-." for ch in text):
        raise UsageError(f"{command} expects {form}; TYPE must be a word like RUN or PDF_CONVERT, got '{text}'")
    return text.upper()


def is_worker_artifact(data: str) -> bool:
    """Whether a DEPLOY's DATA names the built-in worker (``worker``, alias ``Worker.jar``)."""
    return data.strip().lower() in _WORKER_ARTIFACTS


# --------------------------------------------------------------------------- SUBMIT


def parse_submit(text: str, *, command: str = "SUBMIT") -> JobSpec:
    """``TYPE|DATA[|PRIORITY[|DELAY_MS]]`` -> a :class:`JobSpec`.

    A ``SHELL`` command line may itself contain ``|`` (a pipeline): only up to two
    trailing integer fields are taken as PRIORITY and DELAY_MS, the rest is DATA.

    Raises:
        UsageError: naming the expected form and the offending field.
    """
    fields = [part.strip() for part in text.split("|")]
    if len(fields) < 2 or not fields[0]:
        raise UsageError(f"{command} expects {SUBMIT_FORM}, e.g. {command} RUN|calc.py")
    job_type = _job_type(command, SUBMIT_FORM, fields[0])
    rest = fields[1:]
    if job_type == "SHELL" and len(rest) > 1:
        numbers = 0
        while numbers < 2 and len(rest) - numbers > 1 and _is_int(rest[-1 - numbers]):
            numbers += 1
        raw = text.split("|")
        data = "|".join(raw[1 : 1 + len(rest) - numbers]).strip()
        rest = [data, *rest[len(rest) - numbers :]]
    port: int | None = None
    if job_type == "DEPLOY" and is_worker_artifact(rest[0]):
        # as in SUBMIT_DAG: a child worker's port comes right after the artifact's name
        if len(rest) < 2:
            raise UsageError(f"{command} of the worker artifact expects {WORKER_SUBMIT_FORM} (PORT 0: any free one)")
        port = _port_field(command, WORKER_SUBMIT_FORM, rest[1], minimum=0)
        rest = [rest[0], *rest[2:]]
    if len(rest) > 3:
        raise UsageError(f"{command} expects {SUBMIT_FORM}; got {len(fields)} fields")
    data = rest[0]
    if not data:
        raise UsageError(f"{command} expects {SUBMIT_FORM}; DATA is empty")
    data, args = _file_and_args(command, job_type, data)
    if port is None and job_type == "DEPLOY" and is_worker_artifact(data) and args:
        raise UsageError(f"{command} of the worker artifact takes its port as a field: {WORKER_SUBMIT_FORM}")
    priority = _int_field(command, SUBMIT_FORM, "PRIORITY", rest[1]) if len(rest) > 1 else 1
    delay_ms = _int_field(command, SUBMIT_FORM, "DELAY_MS", rest[2], minimum=0) if len(rest) > 2 else 0
    return JobSpec(type=job_type, data=data, args=args, priority=priority, delay_ms=delay_ms, port=port)


def shell_fields_warning(spec: JobSpec) -> str:
    """A SHELL command line that reads like a mistyped PRIORITY or DELAY_MS: ``true|1|x``.

    Only trailing integers are taken as PRIORITY and DELAY_MS, so ``true|1|x`` runs the command
    ``true|1|x``. Nobody pipes into a one-word command named like that after a number, though,
    so say how it was read.
    """
    if spec.type != "SHELL":
        return ""
    if spec.data.rstrip().endswith("|") and not spec.data.rstrip().endswith("||"):
        return (
            f"the command line '{spec.data}' ends with '|': an empty field is not a PRIORITY or DELAY_MS, so it is "
            "part of the command, and a shell refuses a pipe into nothing"
        )
    *_, before, last = ["", *spec.data.split("|")]
    if before.strip().lstrip("-").isdigit() and last.strip() and " " not in last.strip() and not _is_int(last.strip()):
        return (
            f"'{last.strip()}' is not a number, so the whole '{spec.data}' is the command line "
            "(only trailing integers are taken as PRIORITY and DELAY_MS)"
        )
    return ""


def _file_and_args(where: str, job_type: str, data: str) -> tuple[str, list[str]]:
    """A RUN or DEPLOY names a file and may give it arguments: ``calc.py 200000`` (quoted as in a shell).

    Other types keep DATA whole: a SHELL command line, or a handler's argument.
    """
    if job_type not in ("RUN", "DEPLOY") or not any(ch.isspace() or ch in "'\"\\" for ch in data):
        return data, []  # one word, no quoting: the file's name as it is
    try:
        words = shlex.split(data)
    except ValueError as exc:
        raise UsageError(f"{where}: cannot split '{data}' into a file and its arguments: {exc}") from None
    if not words:
        raise UsageError(f"{where}: DATA is empty")
    return words[0], words[1:]


def _port_field(where: str, form: str, text: str, *, minimum: int) -> int:
    port = _int_field(where, form, "PORT", text, minimum=minimum)
    if port > 65535:
        raise UsageError(f"{where.rstrip(':')}: PORT must be at most 65535, got {port}")
    return port


# --------------------------------------------------------------------------- SUBMIT_DAG


def _parse_deps(job_id: str, text: str) -> list[str]:
    where = f"SUBMIT_DAG job {job_id}"
    if not (text.startswith("[") and text.endswith("]")):
        raise UsageError(f"{where}: expected [DEPS] as the last field, e.g. [A, B] or [] for none; got '{text}'")
    inner = text[1:-1].strip()
    if not inner:
        return []
    deps = [dep.strip() for dep in inner.split(",")]
    for dep in deps:
        if not dep:
            raise UsageError(f"{where}: an empty name in {text}; expected [A, B]")
        if any(ch in dep for ch in "[] "):
            raise UsageError(f"{where}: bad dependency name '{dep}' in {text}; expected [A, B]")
    return deps


def _parse_dag_job(text: str, position: int) -> JobSpec:
    fields = [part.strip() for part in text.split("|")]
    job_id = fields[0] or f"#{position}"
    where = f"SUBMIT_DAG job {job_id}"
    affinity = False
    if fields and fields[-1].upper() == "AFFINITY":
        affinity = True
        fields.pop()
    if len(fields) < 6:
        hint = " (a ';' inside a command is written '\\;')" if len(fields) < 4 else ""
        raise UsageError(f"{where}: expected {DAG_FORM}; got {len(fields)} fields{hint}")
    if not fields[0]:
        raise UsageError(f"SUBMIT_DAG job #{position}: expected {DAG_FORM}; ID is empty")
    if any(ch in fields[0] for ch in "[], "):
        raise UsageError(f"{where}: ID must be a single word, got '{fields[0]}'")
    job_type = _job_type(where + ":", DAG_FORM, fields[1])
    data = fields[2]
    if not data:
        raise UsageError(f"{where}: expected {DAG_FORM}; DATA is empty")
    deps = _parse_deps(job_id, fields[-1])
    numbers = fields[3:-1]
    port: int | None = None
    worker = job_type == "DEPLOY" and is_worker_artifact(data)
    if len(numbers) == 3:
        if not worker:
            raise UsageError(f"{where}: PORT is only allowed for a DEPLOY of the worker artifact (worker, Worker.jar)")
        port = _port_field(where + ":", DAG_FORM, numbers[0], minimum=1)
        numbers = numbers[1:]
    elif len(numbers) != 2:
        raise UsageError(f"{where}: expected {DAG_FORM}; got {len(fields)} fields")
    priority = _int_field(where + ":", DAG_FORM, "PRIORITY", numbers[0])
    delay_ms = _int_field(where + ":", DAG_FORM, "DELAY_MS", numbers[1], minimum=0)
    if affinity and not deps:
        raise UsageError(f"{where}: AFFINITY runs a job on the worker of its first dependency; it has none")
    data, args = _file_and_args(where, job_type, data)
    return JobSpec(
        type=job_type,
        data=data,
        args=args,
        id=fields[0],
        priority=priority,
        delay_ms=delay_ms,
        deps=deps,
        affinity=affinity,
        port=port,
    )


def parse_dag(text: str) -> list[JobSpec]:
    """``job ; job ; ...`` with each job ``ID|TYPE|DATA[|PORT]|PRIORITY|DELAY_MS|[DEPS][|AFFINITY]``.

    Empty segments (a trailing ``;``) are ignored. Ids must be unique; whether the
    dependencies exist and form no cycle is for the master to judge, since a DAG may
    depend on jobs submitted earlier.

    Raises:
        UsageError: naming the job and the field at fault.
    """
    # "\;" is a ';' inside a job (a SHELL command line's own separator), not between jobs
    segments = [segment.replace("\\;", ";").strip() for segment in _JOB_SEPARATOR.split(text)]
    specs: list[JobSpec] = []
    seen: set[str] = set()
    for position, segment in enumerate(segments, start=1):
        if not segment:
            continue
        spec = _parse_dag_job(segment, position)
        assert spec.id is not None
        if spec.id in seen:
            raise UsageError(f"SUBMIT_DAG: job id {spec.id} appears twice")
        seen.add(spec.id)
        specs.append(spec)
    if not specs:
        raise UsageError(f"SUBMIT_DAG expects jobs separated by ';', each {DAG_FORM}")
    return specs


# --------------------------------------------------------------------------- one line


def _one_id(name: str, rest: str, build: Callable[[str], Command]) -> Command:
    words = rest.split()
    if len(words) != 1:
        raise UsageError(f"{name} expects one job id: {name} <id>")
    return build(words[0])


def _no_args(name: str, rest: str, command: Command) -> Command:
    if rest:
        raise UsageError(f"{name} takes no arguments")
    return command


def _parse_list(rest: str) -> Command:
    words = rest.split()
    dag: str | None = None
    if "--dag" in words:
        at = words.index("--dag")
        if at + 1 >= len(words) or words[at + 1].startswith("-"):
            raise UsageError("LIST expects [STATE] [--dag ID]; --dag needs a DAG id (or one of its jobs)")
        dag = words[at + 1]
        del words[at : at + 2]
    if not words:
        return ListCommand(None, dag)
    state = words[0].upper()
    if len(words) > 1 or state not in JOB_STATES:
        raise UsageError(f"LIST expects [STATE] [--dag ID] with STATE one of {', '.join(JOB_STATES)}; got '{rest}'")
    return ListCommand(state, dag)


def _submit_command(spec: JobSpec) -> SubmitCommand:
    return SubmitCommand(spec, shell_fields_warning(spec))


def _parse_logs(rest: str) -> Command:
    words = rest.split()
    follow = False
    attempt: int | None = None
    ids: list[str] = []
    while words:
        word = words.pop(0)
        if word in ("-f", "--follow"):
            follow = True
        elif word == "--attempt" or word.startswith("--attempt="):
            _, joined, number = word.partition("=")  # --attempt=2 as well as --attempt 2, as argparse takes
            if not joined:
                if not words:
                    raise UsageError(f"{_LOGS_FORM}; --attempt needs a number")
                number = words.pop(0)
            attempt = _int_field("LOGS", "LOGS <id> [-f] [--attempt N]", "N", number, minimum=1)
        elif word.startswith("-"):
            raise UsageError(f"{_LOGS_FORM}; unknown option '{word}'")
        else:
            ids.append(word)
    if len(ids) != 1:
        raise UsageError(_LOGS_FORM)
    return LogsCommand(ids[0], follow, attempt)


_LOGS_FORM: Final = "LOGS expects LOGS <id> [-f] [--attempt N]"


def _parse_help(rest: str) -> Command:
    words = rest.split()
    if len(words) > 1:
        raise UsageError("HELP expects HELP [command]")
    if not words:
        return HelpCommand()
    topic = words[0].upper()
    if topic not in _PARSERS:
        raise UsageError(f"HELP: unknown command '{words[0]}'; try HELP")
    return HelpCommand(topic)


_PARSERS: Final[dict[str, Callable[[str], Command]]] = {
    "SUBMIT": lambda rest: _submit_command(parse_submit(rest)),
    "SUBMIT_DAG": lambda rest: SubmitDagCommand(parse_dag(rest)),
    "STATS": lambda rest: _no_args("STATS", rest, StatsCommand()),
    "STATUS": lambda rest: _one_id("STATUS", rest, StatusCommand),
    "LIST": _parse_list,
    "LOGS": _parse_logs,
    "CANCEL": lambda rest: _one_id("CANCEL", rest, CancelCommand),
    "CANCEL_DAG": lambda rest: _one_id("CANCEL_DAG", rest, CancelDagCommand),
    "WATCH": lambda rest: _one_id("WATCH", rest, WatchCommand),
    "RETRY": lambda rest: _one_id("RETRY", rest, RetryCommand),
    "DLQ": lambda rest: _no_args("DLQ", rest, DlqCommand()),
    "WORKERS": lambda rest: _no_args("WORKERS", rest, WorkersCommand()),
    "STOP": parse_stop,
    "SPAWN": parse_spawn,
    "RETIRE": parse_retire,
    "HELP": _parse_help,
    "EXIT": lambda rest: _no_args("EXIT", rest, ExitCommand()),
    "QUIT": lambda rest: _no_args("QUIT", rest, ExitCommand()),
}

#: every command word the REPL knows, in the order HELP lists them
COMMAND_NAMES: Final = tuple(_PARSERS)


def parse_line(line: str) -> Command:
    """One REPL line -> its command.

    Raises:
        UsageError: an empty line, an unknown command or malformed arguments.
    """
    text = line.strip()
    if not text:
        raise UsageError("empty line; type HELP for the commands")
    word, *tail = text.split(maxsplit=1)  # a tab separates the command as well as a space does
    rest = tail[0] if tail else ""
    name = word.upper()
    parser = _PARSERS.get(name)
    if parser is None:
        raise UsageError(f"unknown command '{word}'; type HELP for the commands")
    rest = rest.strip()
    if name in ("SUBMIT", "SUBMIT_DAG") and not rest:
        form = SUBMIT_FORM if name == "SUBMIT" else f"jobs separated by ';', each {DAG_FORM}"
        raise UsageError(f"{name} expects {form}")
    return parser(rest)
