"""``python -m titan.master``: run a master until SIGINT/SIGTERM.

Prints one readiness line, ``titan master listening on HOST:PORT``, once the
socket is bound (``titan up`` and the tests wait for it).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import math
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from titan.args import OneLineParser
from titan.config import DEFAULT_PORT, AutoscaleSettings, MasterSettings
from titan.errors import WorkspaceError
from titan.net.loglimit import LogLimit
from titan.net.tls import TlsSetupError
from titan.runtime import configure_logging, run, tune_gc_for_service

from .server import Master

__all__ = ["main", "parse_args"]

log = logging.getLogger("titan.master")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got '{text}'")
    return value


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of milliseconds, got '{text}'") from None
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1000 ms, got '{text}'")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got '{text}'")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got '{text}'") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range")
    return value


_DEFAULT_INTERVAL_S: Final = MasterSettings.heartbeat_interval_s
_DEFAULT_TIMEOUT_S: Final = MasterSettings.heartbeat_timeout_s
_TIMEOUT_INTERVALS: Final = 3  # a worker is lost after missing about this many heartbeats


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[MasterSettings, str]:
    """Command line (and ``TITAN_TOKEN``) -> settings and the log level."""
    env = os.environ if environ is None else environ
    parser = OneLineParser(prog="python -m titan.master", description="Run a Titan master.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"TCP port; 0 picks one (default {DEFAULT_PORT})"
    )
    parser.add_argument("--workspace", type=Path, default=Path("titan_workspace"), help="state and job records")
    parser.add_argument("--perm-files", type=Path, default=Path("perm_files"), help="scripts and binaries jobs may run")
    parser.add_argument(
        "--heartbeat-timeout",
        type=_positive,
        default=None,
        help=f"seconds of silence before a worker is lost (default {_DEFAULT_TIMEOUT_S:g}, or "
        f"{_TIMEOUT_INTERVALS} heartbeat intervals where that is longer)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=_positive,
        default=None,
        help=f"seconds between worker heartbeats (default {_DEFAULT_INTERVAL_S:g})",
    )
    parser.add_argument("--token", default=None, help="cluster token (default: $TITAN_TOKEN)")
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve every TCP connection over TLS with this certificate chain (PEM)",
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="the certificate's private key (default: in the --tls-cert file)"
    )
    parser.add_argument(
        "--fsync",
        choices=["on", "off"],
        default="on",
        help="fsync the WAL before acknowledging (default on); off survives a process crash but not a machine crash",
    )
    parser.add_argument(
        "--wal-commit-delay",
        type=_milliseconds,
        default=MasterSettings.wal_commit_delay_s * 1000,
        metavar="MS",
        help="how long changes nobody is waiting on may wait to share an fsync (default %(default)g ms; "
        "an answer to a client never waits)",
    )
    parser.add_argument(
        "--snapshot-every",
        type=_count,
        default=MasterSettings.snapshot_every_records,
        metavar="RECORDS",
        help=f"snapshot the state after this many WAL records (default {MasterSettings.snapshot_every_records})",
    )
    parser.add_argument(
        "--max-workers",
        type=_count,
        default=MasterSettings.max_workers,
        help="most workers in all, counting spawns on their way: a SPAWN (or an autoscaler's) past it is "
        "refused (default %(default)s)",
    )
    parser.add_argument(
        "--max-depth",
        type=_count,
        default=MasterSettings.max_depth,
        help="deepest child worker a SPAWN may start; a top-level worker is depth 0 (default %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    _autoscale_options(parser)
    args = parser.parse_args(argv)
    if args.tls_key is not None and args.tls_cert is None:
        parser.error("--tls-key needs --tls-cert")
    interval_given = args.heartbeat_interval is not None
    if not interval_given:
        args.heartbeat_interval = _DEFAULT_INTERVAL_S
    if args.heartbeat_timeout is None:
        args.heartbeat_timeout = max(_DEFAULT_TIMEOUT_S, _TIMEOUT_INTERVALS * args.heartbeat_interval)
    elif args.heartbeat_timeout <= args.heartbeat_interval:
        interval = f"{args.heartbeat_interval:g}" + ("" if interval_given else " (the default)")
        parser.error(
            f"--heartbeat-timeout {args.heartbeat_timeout:g} must be longer than the heartbeat interval, "
            f"{interval}: workers heartbeat every interval and are lost after a timeout of silence"
        )
    settings = MasterSettings(
        host=args.host,
        port=args.port,
        workspace=args.workspace,
        perm_files=args.perm_files,
        heartbeat_timeout_s=args.heartbeat_timeout,
        heartbeat_interval_s=args.heartbeat_interval,
        token=args.token or env.get("TITAN_TOKEN") or None,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        fsync=args.fsync == "on",
        snapshot_every_records=args.snapshot_every,
        wal_commit_delay_s=args.wal_commit_delay / 1000,
        max_workers=args.max_workers,
        max_depth=args.max_depth,
        autoscale=_autoscale(parser, args),
    )
    return settings, args.log_level


_AUTOSCALE_FLAGS: Final = (
    # flag, field, type, help
    ("--autoscale-max-workers", "max_workers", int, "most workers in all, spawns in flight included"),
    ("--autoscale-max-children", "max_children", int, "most children per worker"),
    ("--autoscale-max-depth", "max_depth", int, "deepest child (a top-level worker is depth 0)"),
    ("--autoscale-up-after", "scale_up_after_s", float, "seconds the queue must outgrow the free slots"),
    ("--autoscale-cooldown", "cooldown_s", float, "seconds between two rounds of spawns"),
    ("--autoscale-idle", "idle_retire_s", float, "seconds an autoscaled child may stay idle before it is retired"),
    ("--autoscale-step", "max_step", int, "most children asked for in one round"),
    ("--autoscale-interval", "interval_s", float, "seconds between two autoscaler checks"),
)


def _autoscale_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("autoscaler (off unless --autoscale)")
    group.add_argument("--autoscale", action="store_true", help="grow and shrink the cluster with child workers")
    for flag, name, kind, text in _AUTOSCALE_FLAGS:
        default = getattr(AutoscaleSettings, name)
        # its own dest: --max-workers and --max-depth name the cluster's bounds with the same field names
        group.add_argument(
            flag, dest=f"autoscale_{name}", type=kind, default=default, help=f"{text} (default {default:g})"
        )


def _autoscale(parser: argparse.ArgumentParser, args: argparse.Namespace) -> AutoscaleSettings | None:
    if not args.autoscale:
        return None
    try:
        return AutoscaleSettings(**{name: getattr(args, f"autoscale_{name}") for _, name, _, _ in _AUTOSCALE_FLAGS})
    except ValueError as exc:
        parser.error(str(exc))


def _accept_errors_logged(loop: asyncio.AbstractEventLoop) -> None:
    """Say in our log, a few times a minute at most, when the loop cannot accept a connection.

    Stock asyncio reports accept() failing (EMFILE: out of descriptors) to the loop's exception
    handler; uvloop never does (libuv accepts and closes the connection itself), which is why the
    master also warns when its connections near the open-file limit (server.py).
    """
    limit = LogLimit(log, burst=3, period_s=60.0)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            limit.warning("cannot accept connections: %s", context.get("exception"))
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _loopback_only(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, ``127.x``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address


async def serve(settings: MasterSettings) -> int:
    """Start, announce readiness, wait for a signal, shut down. Returns the exit status."""
    _accept_errors_logged(asyncio.get_running_loop())
    master = Master(settings)
    try:
        await master.start()
    except (WorkspaceError, TlsSetupError) as exc:
        print(f"titan master: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"titan master: cannot listen on {settings.host}:{settings.port}: {reason}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    asked_by: list[str] = []

    def on_signal(signum: int) -> None:
        asked_by.append(signal.Signals(signum).name)
        stop.set()

    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    log.info(
        "workers heartbeat every %gs and are lost after %gs of silence",
        settings.heartbeat_interval_s,
        settings.heartbeat_timeout_s,
    )
    if settings.token is None and not _loopback_only(settings.host):
        print(
            f"titan master: WARNING: listening on {settings.host or 'every address'} without a token: anyone who "
            "can reach this port can run commands here (set --token or TITAN_TOKEN)",
            file=sys.stderr,
            flush=True,
        )
    if not settings.fsync:
        print(
            "titan master: WARNING: --fsync off: acknowledged jobs can be lost if the machine crashes",
            file=sys.stderr,
            flush=True,
        )
    stopped = asyncio.ensure_future(master.wait_closed())
    asked = asyncio.ensure_future(stop.wait())
    try:
        over = " (TLS)" if settings.tls_cert is not None else ""
        print(f"titan master listening on {settings.host}:{master.port}{over}", flush=True)
        await asyncio.wait([stopped, asked], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        for waiting in (stopped, asked):
            waiting.cancel()
        if asked_by:
            log.info("shutting down (%s)", asked_by[0])
        await master.aclose()
        if asked_by:
            log.info("stopped; the WAL is closed")
    if master.failure is not None:
        print(f"titan master: stopped: {master.failure}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    settings, level = parse_args(argv)
    configure_logging(level)
    tune_gc_for_service()
    return run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
