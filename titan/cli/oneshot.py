"""The one-shot subcommands (``titan submit``, ``titan status``, ...): one request, one answer.

Each function takes the parsed arguments and an open client and returns the exit
status. With ``--json`` the answer is printed as ONE JSON document (DESIGN §8);
otherwise as the same rich views the REPL uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.text import Text

from protocol import JobInfo, JobSpec
from titan.client import TitanClient, WaitTimeout
from titan.config import ClientSettings
from titan.durations import parse_duration
from titan.errors import RemoteError, RequestTimeout, TitanError, UsageError

from .dagref import expand_dag_ids, resolve
from .dagview import dag_tree
from .executor import cancel_dag
from .inline import FILE_KINDS, attach_inline, inline_spec
from .jsonview import job_json, stats_json, worker_json
from .listing import list_some
from .logview import LogPiece, ended_badly, log_note, read_log
from .output import print_table, write_all
from .parse import JOB_STATES, parse_dag, parse_submit, shell_fields_warning
from .progress import follow_jobs
from .render import job_detail, job_table, state_text, stats_view, workers_table
from .rewait import through_restarts
from .safe import for_terminal
from .scaling import oneshot_retire, oneshot_spawn, oneshot_stop

__all__ = ["ONESHOT_COMMANDS", "check_arguments", "run_oneshot"]

Handler = Callable[[TitanClient, argparse.Namespace, Console], Awaitable[int]]

#: the exit status of a wait whose timeout passed first (as timeout(1) has it)
WAIT_TIMED_OUT: Final = 124


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")


def _positive_seconds(flag: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} must be a positive number of seconds, got {value:g}")
    return value


def _job_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--attempts``, ``--timeout``, ``--memory``, ``--backoff-*`` as JobSpec fields (only those given)."""
    changes: dict[str, Any] = {}
    if args.attempts is not None:
        if not 1 <= args.attempts < 2**63:
            raise UsageError(f"--attempts must be at least 1 and fit in 64 bits, got {args.attempts}")
        changes["max_attempts"] = args.attempts
    if args.timeout is not None:
        changes["timeout_s"] = _positive_seconds("--timeout", args.timeout)
    if args.memory is not None:
        if not 1 <= args.memory < 2**63:
            raise UsageError(f"--memory must be at least 1 MiB and fit in 64 bits, got {args.memory}")
        changes["memory_mb"] = args.memory
    for option, name, minimum in (
        ("backoff_base", "backoff_base_s", 0.0),
        ("backoff_factor", "backoff_factor", 1.0),
        ("backoff_cap", "backoff_cap_s", 0.0),
    ):
        value = getattr(args, option, None)
        if value is None:
            continue
        flag = "--" + option.replace("_", "-")
        if minimum == 0.0:
            value = _positive_seconds(flag, value)
        if not math.isfinite(value) or value < minimum:
            raise UsageError(f"{flag} must be at least {minimum:g}, got {value:g}")
        changes[name] = value
    return changes


def _submit_spec(args: argparse.Namespace) -> JobSpec:
    if args.file is not None:
        kind, _, rest = (args.job or "RUN").partition("|")
        data, bar, tail = rest.partition("|")
        if kind.strip().upper() not in FILE_KINDS:
            raise UsageError(f"--file sends a script for RUN or DEPLOY jobs, not {kind.strip() or 'an empty type'}")
        if data.strip():
            raise UsageError("give the job's DATA or --file PATH, not both (leave DATA empty: 'RUN||PRIORITY')")
        spec = inline_spec(parse_submit(f"{kind}|{args.file}" + (f"|{tail}" if bar else "")), args.file)
    elif args.job is None:
        raise UsageError("submit expects 'TYPE|DATA[|PRIORITY[|DELAY_MS]]' or --file PATH")
    else:
        spec = attach_inline(parse_submit(args.job))
        warning = shell_fields_warning(spec)
        if warning:
            sys.stderr.write(f"titan: warning: {warning}\n")
    changes = _job_options(args)
    if args.skills is not None:
        skills = [skill.strip().upper() for skill in args.skills.split(",") if skill.strip()]
        if not skills:
            raise UsageError("--skills expects A,B")
        changes["skills"] = skills
    if args.port is not None:
        if spec.type.upper() != "DEPLOY":
            raise UsageError(f"--port is for a DEPLOY (a service's port), not {spec.type}")
        if spec.port is not None:
            raise UsageError(f"the port is given twice: {spec.port} in the job and --port {args.port}")
        if not 1 <= args.port <= 65535:
            raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
        changes["port"] = args.port
    return dataclasses.replace(spec, **changes)


def dag_text(argument: str) -> str:
    """A DAG as given: inline, ``-`` (read stdin) or ``@FILE``. Read, its lines are jobs too (a DAG of
    thousands of jobs is over the kernel's limit on one argument); blank lines and ``#`` comments are
    skipped.

    Raises:
        UsageError: the file cannot be read.
    """
    if argument == "-":
        text = sys.stdin.read()
    elif argument.startswith("@"):
        try:
            text = Path(argument[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(f"submit-dag: cannot read {argument[1:]}: {reason}") from None
    else:
        return argument
    return " ; ".join(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse malformed input before touching the network; stores what it parsed on ``args``."""
    if args.command in ("submit", "submit-dag") and args.wait_timeout is not None:
        if not args.wait:
            raise UsageError("--wait-timeout goes with --wait")
        _positive_seconds("--wait-timeout", args.wait_timeout)
    if args.command == "submit":
        args.spec = _submit_spec(args)
    elif args.command == "submit-dag":
        options = _job_options(args)
        args.specs = [dataclasses.replace(spec, **options) for spec in parse_dag(dag_text(args.dag))]
    elif args.command == "list" and not 1 <= args.limit < 2**31:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    elif args.command == "logs" and args.attempt is not None and not 1 <= args.attempt < 2**63:
        raise UsageError(f"--attempt must be at least 1, got {args.attempt}")
    elif args.command == "list" and args.state:
        args.state = args.state.upper()
        if args.state not in JOB_STATES:
            raise UsageError(f"list expects [STATE] with STATE one of {', '.join(JOB_STATES)}; got '{args.state}'")
    elif args.command == "gc":
        args.older_than_s = parse_duration(args.older_than)
    elif args.command == "wait" and args.timeout is not None:
        _positive_seconds("--timeout", args.timeout)


async def _submit(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    reply = await client.submit_info(args.spec)
    if reply.warning:
        sys.stderr.write(f"titan: warning: {reply.warning}\n")
    if args.wait:
        if not args.json:
            _print_now(reply.job_id)  # the id first: a script can still find the job if the wait is cut short
        return await _await_final(
            client, [reply.job_id], args, out, timeout_s=args.wait_timeout, json_shape=lambda jobs: jobs[0]
        )
    if args.json:
        _emit_json({"id": reply.job_id, **({"warning": reply.warning} if reply.warning else {})})
    else:
        sys.stdout.write(reply.job_id + "\n")
    return 0


async def _submit_dag(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    reply = await client.submit_dag_info(args.specs)
    ids = reply.job_ids
    if reply.warning:
        sys.stderr.write(f"titan: warning: {reply.warning}\n")
    if args.wait:
        if not args.json:
            _print_now(reply.dag_id)
        return await _await_final(
            client,
            ids,
            args,
            out,
            timeout_s=args.wait_timeout,
            json_shape=lambda jobs: {"ids": ids, "dag": reply.dag_id, "jobs": jobs},
        )
    if args.json:
        _emit_json({"ids": ids, "dag": reply.dag_id, **({"warning": reply.warning} if reply.warning else {})})
    else:  # the DAG id: what status, wait, list --dag and cancel --dag take (--json also has the job ids)
        _print_now(reply.dag_id)
    return 0


async def _status(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    subject = await resolve(client, args.id)
    if subject.job is None:  # a DAG id: the DAG, shaped as cancel --dag --json shapes it
        if args.json:
            _emit_json({"dag": subject.dag, "jobs": [job_json(member) for member in subject.members]})
        else:
            out.print(dag_tree(subject.members))
        return 0
    if args.json:
        _emit_json(job_json(subject.job))
    else:
        out.print(job_detail(subject.job))
        if subject.dag:
            out.print(dag_tree(subject.members, focus=subject.job.id))
    return 0


async def _list(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    listing = await list_some(client, args.state or None, args.limit, dag=args.dag)
    if args.json:
        _emit_json([job_json(job) for job in listing.jobs])
    else:
        print_table(out, job_table(listing.jobs))
    note = listing.note(args.limit, dag=args.dag is not None, flag=True)
    if note:
        sys.stderr.write(f"titan: {note}\n")  # stderr: a script reading the rows or the JSON is not misled
    return 0


async def _stats(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    stats = await client.stats()
    if args.json:
        _emit_json(stats_json(stats))
    else:
        out.print(stats_view(stats))
    return 0


async def _workers(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    workers = (await client.stats()).workers
    if args.json:
        _emit_json([worker_json(worker) for worker in workers])
    else:
        print_table(out, workers_table(workers))
    return 0


async def _job_change(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    if args.command == "cancel" and args.dag:
        return await _cancel_dag(client, args, out)
    try:
        job = await (client.cancel(args.id) if args.command == "cancel" else client.retry(args.id))
    except RemoteError as exc:
        if exc.code == "UNKNOWN_JOB" and args.command == "cancel" and args.id.startswith("DAG-"):
            raise RemoteError(exc.code, f"{exc}; to cancel a whole DAG: titan cancel {args.id} --dag") from None
        raise
    if args.json:
        _emit_json(job_json(job))
    else:
        out.print(Text.assemble(f"{job.id} ", state_text(job.state)))
    return 0


async def _cancel_dag(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    """Every unfinished job of the DAG cancelled: each job's state, as CANCEL_DAG in the REPL shows them."""
    cancelled = await cancel_dag(client, args.id)
    if args.json:
        _emit_json(
            {"dag": cancelled.dag, "cancelled": cancelled.cancelled, "jobs": [job_json(j) for j in cancelled.jobs]}
        )
        return 0
    out.print(cancelled.summary)
    for member in cancelled.jobs[:_CANCELLED_SHOWN]:
        out.print(Text.assemble(f"{member.id} ", state_text(member.state)))
    left = len(cancelled.jobs) - _CANCELLED_SHOWN
    if left > 0:  # a DAG of thousands: the summary says it; --json and list --dag have every job
        out.print(f"… {left} more: titan list --dag {cancelled.dag} lists every job (--json: all of them here)")
    return 0


_CANCELLED_SHOWN: Final = 50


async def _wait(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    ids = await expand_dag_ids(client, args.ids)
    return await _await_final(client, ids, args, out, timeout_s=args.timeout)


def _print_now(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _await_final(
    client: TitanClient,
    ids: list[str],
    args: argparse.Namespace,
    out: Console,
    *,
    timeout_s: float | None = None,
    json_shape: Callable[[list[dict[str, Any]]], Any] = lambda jobs: jobs,
) -> int:
    """Wait until every job in ``ids`` is final (through master restarts), print them; the exit status.

    0 if every job COMPLETED, 1 if one ended otherwise, :data:`WAIT_TIMED_OUT` if ``timeout_s``
    passed first (a script can tell "not yet" from "failed"). ``titan wait`` and ``titan
    submit[-dag] --wait`` share it. ``--json`` prints ``json_shape`` of the jobs' maps (by
    default the array itself).
    """

    async def wait_on(current: TitanClient, timeout_s: float | None) -> list[JobInfo]:
        if out.is_terminal and not args.json:
            title = f"{len(ids)} jobs" if len(ids) > 1 else ids[0]
            return await follow_jobs(current, ids, out, title=title, timeout_s=timeout_s)
        return await current.wait(ids, timeout_s=timeout_s)

    try:
        jobs = await through_restarts(client, wait_on, timeout_s)
    except WaitTimeout as exc:
        jobs = exc.jobs
        error: RequestTimeout | None = exc
    except RequestTimeout as exc:  # the time ran out while the master was away: no states to show
        jobs, error = [], exc
    else:
        error = None
    if args.json:
        if jobs:
            _emit_json(json_shape([job_json(job) for job in jobs]))
    else:
        for job in jobs:
            line = Text.assemble(f"{job.id} ", state_text(job.state))
            if job.state != "COMPLETED" and job.error:
                line.append(f"  {job.error}", style="dim")
            out.print(line)
    if error is not None:
        sys.stderr.write(f"titan: error: {' '.join(str(error).split())}\n")
        return WAIT_TIMED_OUT
    return 0 if jobs and all(job.state == "COMPLETED" for job in jobs) else 1


async def _outputs(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    reply = await client.outputs(args.id, args.attempt)
    dest = Path(args.dest) / reply.job_id
    written: list[str] = []
    for name, data in sorted(reply.files.items()):
        parts = name.split("/")
        if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise TitanError(f"refusing the output {name!r}: it would be written outside {dest}")
        path = dest / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            raise TitanError(f"cannot write {path}: {exc.strerror or exc}") from None
        written.append(str(path))
    if args.json:
        _emit_json({"id": reply.job_id, "attempt": reply.attempt, "files": written})
    elif not written:
        out.print(f"{reply.job_id} kept no output files")
    else:
        sys.stdout.write("".join(path + "\n" for path in written))
    return 0


async def _logs(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    def show(piece: LogPiece) -> None:
        if piece.new_attempt is not None:
            sys.stderr.write(f"--- attempt {piece.new_attempt} ---\n")
        if piece.note:
            sys.stdout.flush()
            sys.stderr.write(piece.note + "\n")
        target = sys.stderr if piece.stream == "stderr" else sys.stdout
        target.flush()
        write_all(target.buffer, piece.data)  # the bytes as the job wrote them
        target.buffer.flush()

    job = await read_log(client, args.id, follow=args.follow, show=show, attempt=args.attempt)
    note = log_note(job, args.attempt, follow=args.follow)
    if note:
        sys.stderr.write(note + "\n")
    if ended_badly(job, follow=args.follow, attempt=args.attempt):
        job = for_terminal(job)
        sys.stderr.write(f"titan: {job.id} ended {job.state}" + (f": {job.error}" if job.error else "") + "\n")
        return 1
    return 0


async def _gc(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    reply = await client.gc(args.older_than_s)
    if args.json:
        _emit_json({"removed": reply.removed, "freed_bytes": reply.freed_bytes})
    else:
        out.print(f"removed {len(reply.removed)} job folder(s), {reply.freed_bytes} bytes")
    return 0


ONESHOT_COMMANDS: Final[dict[str, Handler]] = {
    "submit": _submit,
    "submit-dag": _submit_dag,
    "status": _status,
    "list": _list,
    "stats": _stats,
    "workers": _workers,
    "cancel": _job_change,
    "retry": _job_change,
    "wait": _wait,
    "logs": _logs,
    "gc": _gc,
    "outputs": _outputs,
    "stop": oneshot_stop,
    "spawn": oneshot_spawn,
    "retire": oneshot_retire,
}


async def run_oneshot(args: argparse.Namespace, settings: ClientSettings, out: Console) -> int:
    """Connect, run ``args.command``, close; returns the exit status."""
    handler = ONESHOT_COMMANDS[args.command]
    check_arguments(args)
    async with await TitanClient.connect(settings) as client:
        return await handler(client, args, out)
