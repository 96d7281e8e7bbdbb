"""The one-shot subcommands (``titan submit``, ``titan status``, ...): one request, one answer.

Each function takes the parsed arguments and an open client and returns the exit
status. With ``--json`` the answer is printed as ONE JSON document (DESIGN §8);
otherwise as the same rich views the REPL uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final

from rich.console import Console
from rich.text import Text

from protocol import JobSpec
from titan.client import TitanClient, WaitTimeout
from titan.config import ClientSettings
from titan.errors import RemoteError, UsageError

from .executor import logs_refusal
from .jsonview import job_json, stats_json, worker_json
from .parse import JOB_STATES, parse_dag, parse_submit
from .render import job_detail, job_table, state_text, stats_view, workers_table

__all__ = ["ONESHOT_COMMANDS", "check_arguments", "run_oneshot"]

Handler = Callable[[TitanClient, argparse.Namespace, Console], Awaitable[int]]


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")


def _submit_spec(args: argparse.Namespace) -> JobSpec:
    spec = parse_submit(args.job)
    changes: dict[str, Any] = {}
    if args.attempts is not None:
        if args.attempts < 1:
            raise UsageError(f"--attempts must be at least 1, got {args.attempts}")
        changes["max_attempts"] = args.attempts
    if args.timeout is not None:
        if args.timeout <= 0:
            raise UsageError(f"--timeout must be positive, got {args.timeout:g}")
        changes["timeout_s"] = args.timeout
    if args.skills is not None:
        skills = [skill.strip().upper() for skill in args.skills.split(",") if skill.strip()]
        if not skills:
            raise UsageError("--skills expects A,B")
        changes["skills"] = skills
    return dataclasses.replace(spec, **changes)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse malformed input before touching the network; stores what it parsed on ``args``."""
    if args.command == "submit":
        args.spec = _submit_spec(args)
    elif args.command == "submit-dag":
        args.specs = parse_dag(args.dag)
    elif args.command == "list" and args.state:
        args.state = args.state.upper()
        if args.state not in JOB_STATES:
            raise UsageError(f"list expects [STATE] with STATE one of {', '.join(JOB_STATES)}; got '{args.state}'")
    elif args.command == "wait" and args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout:g}")


async def _submit(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    job_id = await client.submit(args.spec)
    if args.json:
        _emit_json({"id": job_id})
    else:
        sys.stdout.write(job_id + "\n")
    return 0


async def _submit_dag(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    ids = await client.submit_dag(args.specs)
    if args.json:
        _emit_json({"ids": ids})
    else:
        sys.stdout.write("".join(job_id + "\n" for job_id in ids))
    return 0


async def _status(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    job = await client.status(args.id)
    if args.json:
        _emit_json(job_json(job))
    else:
        out.print(job_detail(job))
    return 0


async def _list(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    jobs = await client.list_jobs(args.state or None)
    if args.json:
        _emit_json([job_json(job) for job in jobs])
    else:
        out.print(job_table(jobs))
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
        out.print(workers_table(workers))
    return 0


async def _job_change(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    job = await (client.cancel(args.id) if args.command == "cancel" else client.retry(args.id))
    if args.json:
        _emit_json(job_json(job))
    else:
        out.print(Text.assemble(f"{job.id} ", state_text(job.state)))
    return 0


async def _wait(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    try:
        jobs = await client.wait(args.ids, timeout_s=args.timeout)
    except WaitTimeout as exc:
        jobs = exc.jobs
        error: WaitTimeout | None = exc
    else:
        error = None
    if args.json:
        _emit_json([job_json(job) for job in jobs])
    else:
        for job in jobs:
            out.print(Text.assemble(f"{job.id} ", state_text(job.state)))
    if error is not None:
        raise error
    return 0 if jobs and all(job.state == "COMPLETED" for job in jobs) else 1


async def _logs(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    try:
        async with client.logs(args.id, follow=args.follow) as stream:
            async for chunk in stream:
                target = sys.stderr if chunk.stream == "stderr" else sys.stdout
                target.write(chunk.data.decode("utf-8", errors="replace"))
                target.flush()
    except RemoteError as exc:
        raise logs_refusal(exc, client.address) from None
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
}


async def run_oneshot(args: argparse.Namespace, settings: ClientSettings, out: Console) -> int:
    """Connect, run ``args.command``, close; returns the exit status."""
    handler = ONESHOT_COMMANDS[args.command]
    check_arguments(args)
    async with await TitanClient.connect(settings) as client:
        return await handler(client, args, out)
