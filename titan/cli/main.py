"""``titan``: the console script (DESIGN §8 "Command line").

No subcommand starts the ``titan>`` REPL; ``titan up`` starts a local cluster
with the REPL attached; the other subcommands send one request and print the
answer (``--json`` for scripts). Errors are one line on stderr: exit status 2
for usage errors, 1 for everything else.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from titan.args import OneLineParser
from titan.config import DEFAULT_PORT, ClientSettings, tls_from_env
from titan.errors import UsageError
from titan.runtime import configure_logging, run

from .demo import add_demo_options
from .listing import DEFAULT_LIMIT
from .oneshot import run_oneshot
from .output import stdout_console
from .repl import Repl
from .safe import error_line

__all__ = ["build_parser", "main"]


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # on subcommands the defaults are suppressed so `titan --master X status ID`
    # and `titan status ID --master X` both work without one overwriting the other
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--master", metavar="HOST:PORT", default=default(None), help="master address (env TITAN_MASTER)"
    )
    parser.add_argument("--token", default=default(None), help="cluster token (env TITAN_TOKEN)")
    parser.add_argument(
        "--tls", action="store_true", default=default(False), help="dial the master over TLS (env TITAN_TLS=1)"
    )
    parser.add_argument(
        "--tls-ca", metavar="FILE", default=default(None), help="dial over TLS trusting this CA (env TITAN_TLS_CA)"
    )
    parser.add_argument("--debug", action="store_true", default=default(False), help="show tracebacks and debug logs")


def _version() -> str:
    try:
        return importlib.metadata.version("titan-orchestrator")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"  # run from a source tree without pip install


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="titan", description="Titan: a lightweight distributed job orchestrator.")
    parser.add_argument("--version", action="version", version=f"titan {_version()}")
    _global_options(parser, suppress=False)
    common = OneLineParser(add_help=False)
    _global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common], description=help)

    up = command("up", "start a local master and workers as child processes, with the REPL attached")
    up.add_argument("--workers", type=int, default=2, help="number of workers (default 2)")
    up.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"master port; 0 picks a free one (default {DEFAULT_PORT})"
    )
    up.add_argument("--capacity", type=int, default=4, help="task slots per worker (default 4)")
    up.add_argument("--host", default="127.0.0.1", help="master host (default 127.0.0.1)")
    up.add_argument(
        "--workspace",
        type=Path,
        default=Path("titan_workspace"),
        help="master workspace and logs (each worker gets <workspace>/worker-<port>)",
    )
    up.add_argument("--first-worker-port", type=int, default=8081, help="port of the first worker (default 8081)")
    up.add_argument("--ready-timeout", type=float, default=20.0, help="seconds each process has to report ready")
    up.add_argument("--autoscale", action="store_true", help="run the master with its autoscaler on")
    up.add_argument(
        "--demo", action="store_true", help="render the Mandelbrot demo on the new cluster before the REPL opens"
    )
    add_demo_options(up, standalone=False)

    demo = command("demo", "run a demo DAG and show it; starts a local cluster if no master answers")
    demo.add_argument("name", choices=["mandelbrot"], help="the demo to run")
    add_demo_options(demo, standalone=True)

    submit = command("submit", "submit one job; prints its id")
    submit.add_argument("job", nargs="?", metavar="'TYPE|DATA|PRIORITY|DELAY_MS'")
    submit.add_argument(
        "--file", metavar="PATH", help="send this local script inline (RUN by default; DATA is its name)"
    )
    _job_options(submit)
    submit.add_argument("--skills", metavar="A,B", help="required worker skills (default GENERAL)")
    submit.add_argument(
        "--port",
        type=int,
        metavar="P",
        help="a DEPLOY'd service's port: it is up once it listens there (the service reads TITAN_SERVICE_PORT)",
    )
    _wait_options(submit, "the job")
    submit.add_argument("--json", action="store_true", help='print {"id": ...} (with --wait: the final job)')

    dag = command("submit-dag", "submit a DAG (accepted whole or not at all); prints its DAG id")
    dag.add_argument(
        "dag",
        metavar="'ID|TYPE|DATA[|PORT]|PRIORITY|DELAY_MS|[DEPS] ; ...' | @FILE | -",
        help="the jobs inline, or read from FILE or stdin (-), one job per line",
    )
    _job_options(dag, every=" of every job")
    _wait_options(dag, "every job")
    dag.add_argument(
        "--json", action="store_true", help='print {"ids": [...], "dag": "DAG-..."} (with --wait: the final jobs)'
    )

    singles = (
        ("status", "show one job (and its DAG), or a whole DAG by its DAG id"),
        ("cancel", "cancel a job"),
        ("retry", "requeue a job from the DLQ"),
    )
    for name, help in singles:
        one = command(name, help)
        one.add_argument("id")
        one.add_argument("--json", action="store_true", help="print the job (a DAG: {dag, jobs}) as JSON")
        if name == "cancel":
            one.add_argument("--dag", action="store_true", help="cancel every unfinished job of the job's DAG")

    listing = command("list", "list jobs")
    listing.add_argument("state", nargs="?", help="only jobs in this state")
    listing.add_argument("--dag", metavar="ID", help="only the jobs of this DAG (a DAG id or any of its job ids)")
    listing.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, metavar="N", help=f"at most N jobs (default {DEFAULT_LIMIT})"
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array of jobs")

    outputs = command("outputs", "save the output files a job kept to DEST/<id>/")
    outputs.add_argument("id")
    outputs.add_argument("--attempt", type=int, help="which attempt (default: the latest that kept any)")
    outputs.add_argument("--dest", default=".", help="folder to write into (default .)")
    outputs.add_argument("--json", action="store_true", help="print the written paths as JSON")

    for name, help in (("stats", "cluster counts and the worker tree"), ("workers", "the workers")):
        command(name, help).add_argument("--json", action="store_true", help="print JSON")

    logs = command("logs", "print a job's log")
    logs.add_argument("id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep following while the job runs")
    logs.add_argument("--attempt", type=int, metavar="N", help="an earlier attempt's log (default: the latest)")

    gc = command("gc", "remove the workspace folders of jobs finished long ago (never an unfinished job's)")
    gc.add_argument("--older-than", default="7d", metavar="AGE", help="e.g. 12h, 7d (default 7d)")
    gc.add_argument("--json", action="store_true", help='print {"removed": [...], "freed_bytes": N}')

    stop = command("stop", "end a RUNNING service (a DEPLOY job); a child worker is drained first")
    stop.add_argument("id")
    stop.add_argument("--json", action="store_true", help="print the job as JSON")
    spawn = command("spawn", "ask a worker to start a child worker")
    spawn.add_argument("--on", metavar="WORKER", help="the parent (id, [port] or port; default: the master picks)")
    spawn.add_argument("--port", type=int, default=0, help="the child's port (default 0: a free one)")
    spawn.add_argument("--capacity", type=int, default=0, help="the child's slots (default: the parent's)")
    spawn.add_argument("--json", action="store_true", help='print {"parent": ..., "spawn_id": ..., "port": ...}')
    retire = command("retire", "drain a worker and its children; each leaves once idle")
    retire.add_argument("worker", metavar="WORKER")
    retire.add_argument("--json", action="store_true", help='print {"workers": [...]}')
    dashboard = command("dashboard", "serve the web dashboard (a client of the master)")
    dashboard.add_argument("--port", type=int, default=8050, help="HTTP port; 0 picks one (default 8050)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")

    wait = command("wait", "block until the jobs are final; exit 0 only if all COMPLETED")
    wait.add_argument("ids", nargs="+", metavar="ID", help="job ids, or DAG ids (every job of the DAG)")
    wait.add_argument("--timeout", type=float, help="give up after this many seconds")
    wait.add_argument("--json", action="store_true", help="print a JSON array of the jobs")
    return parser


def _job_options(parser: argparse.ArgumentParser, every: str = "") -> None:
    parser.add_argument("--attempts", type=int, help=f"max attempts{every} (default 3)")
    parser.add_argument("--timeout", type=float, help=f"seconds before an attempt{every} is killed")
    parser.add_argument(
        "--memory", type=int, metavar="MIB", help=f"memory (MiB) to reserve on the worker{every} (a placement need)"
    )
    parser.add_argument("--backoff-base", type=float, metavar="S", help="retry backoff after the first failure (1 s)")
    parser.add_argument("--backoff-factor", type=float, metavar="F", help="backoff growth per failed attempt (2)")
    parser.add_argument("--backoff-cap", type=float, metavar="S", help="longest retry backoff (60 s)")


def _wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help=f"then block until {what} is final, as titan wait does (exit 0 only if COMPLETED)",
    )
    parser.add_argument("--wait-timeout", type=float, metavar="S", help="with --wait: give up after S seconds")


def _settings(args: argparse.Namespace) -> ClientSettings:
    try:
        settings = ClientSettings.from_env(master=args.master)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.token:
        settings = dataclasses.replace(settings, token=args.token)
    if args.tls or args.tls_ca:
        settings = dataclasses.replace(settings, tls=tls_from_env({}, tls=args.tls, ca=args.tls_ca))
    return settings


async def _dispatch(args: argparse.Namespace) -> int:
    if args.command is None:
        return await Repl(_settings(args), debug=args.debug).run()
    if args.command == "up":
        from .up import run_up  # keeps the subprocess machinery out of the plain client paths

        return await run_up(args, token=args.token)
    if args.command == "dashboard":
        from titan.dashboard import DashboardSettings, serve

        if not 0 <= args.port <= 65535:
            raise UsageError(f"--port must be 0..65535, got {args.port}")
        return await serve(DashboardSettings(host=args.host, port=args.port), _settings(args))
    if args.command == "demo":
        from .demo import run_demo

        return await run_demo(args, _settings(args), stdout_console(), explicit_master=args.master is not None)
    return await run_oneshot(args, _settings(args), stdout_console())


def _fail(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(f"titan: error: {error_line(exc)}\n")


def _reader_gone() -> int:
    """Whoever read our output stopped (``titan logs ID | head``): end quietly, as a shell tool killed by
    SIGPIPE would, with stdout pointed at /dev/null so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``titan`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed in one line
        return exc.code if isinstance(exc.code, int) else 2
    configure_logging("DEBUG" if args.debug else "WARNING")
    try:
        # stock asyncio: prompt_toolkit and the subprocess watcher of `titan up` are at home there
        return run(_dispatch(args), use_uvloop=False)
    except UsageError as exc:
        _fail(exc, args.debug)
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("titan: interrupted\n")
        return 130
    except BrokenPipeError:
        return _reader_gone()
    except Exception as exc:
        _fail(exc, args.debug)
        return 1


if __name__ == "__main__":
    sys.exit(main())
