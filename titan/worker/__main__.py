"""``python -m titan.worker``: run one worker until SIGINT/SIGTERM or a DRAIN.

Prints ``titan worker [8081] registered with HOST:PORT`` on stdout (once, when
first registered) so that scripts can wait for that line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from titan.args import OneLineParser
from titan.config import DEFAULT_MASTER, WorkerSettings, parse_address, tls_from_env
from titan.durations import parse_duration
from titan.errors import AuthRefused, UsageError, WorkspaceError
from titan.net.tls import TlsSetupError
from titan.runtime import configure_logging, run, tune_gc_for_service

from .agent import Worker
from .dirs import workspace_problem

__all__ = ["main", "parse_args"]

log = logging.getLogger("titan.worker")

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _build_parser(environ: Mapping[str, str]) -> OneLineParser:
    parser = OneLineParser(prog="python -m titan.worker", description="Run a Titan worker.")
    parser.add_argument("--master", default=environ.get("TITAN_MASTER") or DEFAULT_MASTER, help="HOST:PORT")
    parser.add_argument("--port", type=int, default=8080, help="this worker's port, its id and name (default 8080)")
    parser.add_argument("--capacity", type=int, default=4, help="slots (default 4)")
    parser.add_argument("--skills", default="GENERAL", help="comma-separated skills (default GENERAL)")
    parser.add_argument(
        "--memory",
        type=int,
        metavar="MIB",
        help="memory jobs may reserve here in all, in MiB (default: this machine's physical memory)",
    )
    parser.add_argument(
        "--workspace",
        type=Path,
        default=WorkerSettings.workspace,
        help="this worker's own folder; {port} is replaced by --port (default titan_workspace/worker-{port})",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="most seconds between heartbeats; the master's interval wins where it is shorter (default 10)",
    )
    parser.add_argument("--token", default=environ.get("TITAN_TOKEN") or None, help="cluster token (or TITAN_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="dial the master over TLS, trusting the system's CAs")
    parser.add_argument(
        "--tls-ca", metavar="FILE", default=None, help="dial over TLS, trusting this CA (PEM) (or TITAN_TLS_CA)"
    )
    parser.add_argument(
        "--live-logs-in-clear",
        action="store_true",
        help="with TLS, still ship live logs over UDP (not encrypted) to a master on another host",
    )
    parser.add_argument(
        "--keep-attempts",
        metavar="AGE",
        default="7d",
        help="how long job folders left in the workspace's jobs/ (attempts whose logs or outputs were over "
        "the limits, attempts a killed run never reported) stay after their last change: 90s, 12h, 7d, "
        "or 'forever' (default 7d)",
    )
    parser.add_argument("--parent", default=None, help="id of the worker that started this one")
    parser.add_argument("--id", dest="worker_id", default=None, help="stable worker id (default HOST:PORT)")
    parser.add_argument(
        "--spawn-id", default="", help="the DEPLOY job or spawn request this child worker was started for"
    )
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=_LOG_LEVELS)
    return parser


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[WorkerSettings, str]:
    """Command line (and ``TITAN_MASTER``/``TITAN_TOKEN``) -> settings and log level; exits 2 on bad flags."""
    env = os.environ if environ is None else environ
    parser = _build_parser(env)
    args = parser.parse_args(argv)
    try:
        host, port = parse_address(args.master)
    except ValueError as exc:
        parser.error(str(exc))
    skills = tuple(skill.strip() for skill in args.skills.split(",") if skill.strip())
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is out of range")
    if args.capacity < 1:
        parser.error(f"--capacity must be at least 1, got {args.capacity}")
    if not 0 < args.heartbeat_interval < math.inf:
        parser.error(
            f"--heartbeat-interval must be a positive, finite number of seconds, got {args.heartbeat_interval}"
        )
    if not skills:
        parser.error("--skills needs at least one skill")
    if args.memory is not None and args.memory < 1:
        parser.error(f"--memory must be at least 1 MiB, got {args.memory}")
    keep_attempts_s: float | None = None
    if args.keep_attempts.strip().lower() != "forever":
        try:
            keep_attempts_s = parse_duration(args.keep_attempts)
        except UsageError as exc:
            parser.error(f"--keep-attempts: {exc}")
    settings = WorkerSettings(
        master_host=host,
        master_port=port,
        port=args.port,
        capacity=args.capacity,
        memory_mb=args.memory,
        skills=skills,
        workspace=args.workspace,
        heartbeat_interval_s=args.heartbeat_interval,
        token=args.token,
        tls=tls_from_env(env, tls=args.tls, ca=args.tls_ca),
        live_logs_in_clear=args.live_logs_in_clear,
        parent=args.parent,
        worker_id=args.worker_id or None,
        spawn_id=args.spawn_id,
        keep_attempts_s=keep_attempts_s,
    )
    problem = workspace_problem(settings.workspace)
    if problem:
        parser.error(problem)
    return settings, args.log_level


async def serve(settings: WorkerSettings) -> None:
    """Run until SIGINT/SIGTERM, or until drained; always shuts the worker down cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    worker = Worker(settings)
    waits: list[asyncio.Task[object]] = []
    try:
        await worker.start()
        waits = [
            asyncio.create_task(_announce(worker)),
            asyncio.create_task(stop.wait()),
            asyncio.create_task(worker.drained.wait()),
            asyncio.create_task(worker.refused.wait()),
        ]
        await asyncio.wait(waits[1:], return_when=asyncio.FIRST_COMPLETED)
        if worker.refused.is_set():
            raise AuthRefused(worker.refusal)
        log.info("%s shutting down (%s)", worker.name, "drained" if worker.drained.is_set() else "signal")
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        await worker.aclose()
        for signum in signals:
            loop.remove_signal_handler(signum)


async def _announce(worker: Worker) -> None:
    await worker.registered.wait()
    settings = worker.settings
    print(f"titan worker {worker.name} registered with {settings.master_host}:{settings.master_port}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    settings, log_level = parse_args(argv)
    configure_logging(log_level)
    tune_gc_for_service()
    try:
        run(serve(settings))
    except KeyboardInterrupt:  # a Ctrl-C before the handlers were installed
        pass
    except (WorkspaceError, AuthRefused, TlsSetupError) as exc:  # taken, a bad token or TLS file: status 1
        print(f"titan worker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
