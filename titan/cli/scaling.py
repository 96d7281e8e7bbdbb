"""Services and scaling on the command line: ``STOP``, ``SPAWN``, ``RETIRE``, and the autoscaler in STATS.

Parsing is pure (a line -> a command dataclass or a one-line :class:`UsageError`),
like :mod:`titan.cli.parse`; :func:`run_scaling` carries a command out with the
client and prints one line; :func:`autoscaler_rows` is the STATS view's part.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from rich.console import Console
from rich.text import Text

from protocol import SpawnReply
from titan.client import TitanClient
from titan.errors import UsageError

from .jsonview import job_json

__all__ = [
    "SCALING_HELP",
    "SPAWN_FORM",
    "RetireCommand",
    "ScalingCommand",
    "SpawnCommand",
    "StopCommand",
    "autoscaler_rows",
    "oneshot_retire",
    "oneshot_spawn",
    "oneshot_stop",
    "parse_retire",
    "parse_spawn",
    "parse_stop",
    "run_scaling",
]

SPAWN_FORM: Final = "SPAWN [on <worker>] [PORT]"

#: (command, syntax, example) rows for HELP
SCALING_HELP: Final[tuple[tuple[str, str, str], ...]] = (
    ("STOP", "STOP <id>   (end a RUNNING service, a DEPLOY job; a child worker is drained first)", "STOP START_DASH"),
    (
        "SPAWN",
        f"{SPAWN_FORM}   (start a child worker; default: the master picks the parent and a free port)",
        "SPAWN on 8081 8090",
    ),
    ("RETIRE", "RETIRE <worker>   (drain a worker and its children; each leaves once idle)", "RETIRE 8090"),
)


@dataclass(frozen=True)
class StopCommand:
    """``STOP <id>``."""

    job_id: str


@dataclass(frozen=True)
class SpawnCommand:
    """``SPAWN [on <worker>] [PORT]``; ``port`` 0 lets the worker pick."""

    worker: str | None = None
    port: int = 0


@dataclass(frozen=True)
class RetireCommand:
    """``RETIRE <worker>``."""

    worker: str


ScalingCommand = StopCommand | SpawnCommand | RetireCommand


def parse_stop(rest: str) -> StopCommand:
    words = rest.split()
    if len(words) != 1:
        raise UsageError("STOP expects one job id: STOP <id>")
    return StopCommand(words[0])


def parse_retire(rest: str) -> RetireCommand:
    words = rest.split()
    if len(words) != 1:
        raise UsageError("RETIRE expects one worker (its id, [port] or port): RETIRE <worker>")
    return RetireCommand(words[0])


def parse_spawn(rest: str) -> SpawnCommand:
    """``[on <worker>] [PORT]`` -> :class:`SpawnCommand`.

    Raises:
        UsageError: naming the expected form and what was wrong.
    """
    words = rest.split()
    worker: str | None = None
    if words and words[0].lower() == "on":
        if len(words) < 2:
            raise UsageError(f"SPAWN expects {SPAWN_FORM}; 'on' needs a worker")
        worker, words = words[1], words[2:]
    if len(words) > 1:
        raise UsageError(f"SPAWN expects {SPAWN_FORM}; got '{rest}'")
    port = 0
    if words:
        try:
            port = int(words[0])
        except ValueError:
            raise UsageError(f"SPAWN expects {SPAWN_FORM}; PORT must be an integer, got '{words[0]}'") from None
        if not 0 <= port <= 65535:
            raise UsageError(f"SPAWN expects {SPAWN_FORM}; PORT must be 0..65535, got {port}")
    return SpawnCommand(worker, port)


async def run_scaling(command: ScalingCommand, client: TitanClient, console: Console) -> None:
    """Carry out one command and print what happened in one line."""
    match command:
        case StopCommand(job_id=job_id):
            job = await client.stop(job_id)
            console.print(Text.assemble(f"{job.id} is now ", (job.state, "dim")))
        case SpawnCommand(worker=worker, port=port):
            console.print(spawn_line(await client.spawn(worker, port)))
        case RetireCommand(worker=worker):
            console.print(retire_line(await client.retire(worker)))


def spawn_line(reply: SpawnReply) -> Text:
    where = f"port {reply.port}" if reply.port else "a free port"
    return Text.assemble(
        f"{reply.parent} asked to start a child worker on {where} as ",
        (reply.spawn_id, "bold green"),
        "; it shows in STATS once registered",
    )


def retire_line(ids: list[str]) -> Text:
    return Text.assemble("draining ", (", ".join(ids), "bold"), "; each leaves once idle")


def autoscaler_rows(extra: Mapping[str, Any], now: float | None = None) -> list[tuple[str, Text]]:
    """The autoscaler's state for the STATS header: nothing when the master runs without it."""
    info = extra.get("autoscaler")
    if not isinstance(info, Mapping) or not info.get("enabled"):
        return []
    now = time.time() if now is None else now
    limits = info.get("limits", {})
    state = Text(
        f"on: at most {limits.get('max_workers')} workers, {limits.get('max_children')} children each,"
        f" depth {limits.get('max_depth')}"
    )
    if info.get("pending_spawns"):
        state.append(f"; {info['pending_spawns']} spawn(s) in flight", style="yellow")
    rows = [("Autoscaler", state)]
    decisions = info.get("decisions") or []
    for decision in list(decisions)[-3:]:
        age = max(0.0, now - float(decision.get("t", now)))
        rows.append(
            ("", Text(f"{age:.0f}s ago: {decision.get('action')} {decision.get('worker')}: {decision.get('reason')}"))
        )
    return rows


# --------------------------------------------------------------------------- one-shot subcommands


def _emit(value: Any) -> None:
    sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")


async def oneshot_stop(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    """``titan stop ID [--json]``."""
    job = await client.stop(args.id)
    if args.json:
        _emit(job_json(job))
    else:
        out.print(Text.assemble(f"{job.id} ", (job.state, "dim")))
    return 0


async def oneshot_spawn(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    """``titan spawn [--on WORKER] [--port PORT] [--capacity N] [--json]``."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {args.port}")
    if args.capacity < 0:
        raise UsageError(f"--capacity must not be negative, got {args.capacity}")
    reply = await client.spawn(args.on, args.port, args.capacity)
    if args.json:
        _emit({"parent": reply.parent, "spawn_id": reply.spawn_id, "port": reply.port})
    else:
        out.print(spawn_line(reply))
    return 0


async def oneshot_retire(client: TitanClient, args: argparse.Namespace, out: Console) -> int:
    """``titan retire WORKER [--json]``."""
    ids = await client.retire(args.worker)
    if args.json:
        _emit({"workers": ids})
    else:
        out.print(retire_line(ids))
    return 0
