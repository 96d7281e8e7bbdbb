"""``python -m titan.master``: run a master until SIGINT/SIGTERM.

Prints one readiness line, ``titan master listening on HOST:PORT``, once the
socket is bound (``titan up`` and the tests wait for it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from titan.config import DEFAULT_PORT, MasterSettings
from titan.runtime import configure_logging, run

from .server import Master

__all__ = ["main", "parse_args"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got '{text}'")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got '{text}'") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range")
    return value


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[MasterSettings, str]:
    """Command line (and ``TITAN_TOKEN``) -> settings and the log level."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m titan.master", description="Run a Titan master.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"TCP port; 0 picks one (default {DEFAULT_PORT})"
    )
    parser.add_argument("--workspace", type=Path, default=Path("titan_workspace"), help="state and job records")
    parser.add_argument("--perm-files", type=Path, default=Path("perm_files"), help="scripts and binaries jobs may run")
    parser.add_argument(
        "--heartbeat-timeout", type=_positive, default=30.0, help="seconds of silence before a worker is lost"
    )
    parser.add_argument("--heartbeat-interval", type=_positive, default=10.0, help="seconds between worker heartbeats")
    parser.add_argument("--token", default=None, help="cluster token (default: $TITAN_TOKEN)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    args = parser.parse_args(argv)
    settings = MasterSettings(
        host=args.host,
        port=args.port,
        workspace=args.workspace,
        perm_files=args.perm_files,
        heartbeat_timeout_s=args.heartbeat_timeout,
        heartbeat_interval_s=args.heartbeat_interval,
        token=args.token or env.get("TITAN_TOKEN") or None,
    )
    return settings, args.log_level


async def serve(settings: MasterSettings) -> int:
    """Start, announce readiness, wait for a signal, shut down. Returns the exit status."""
    master = Master(settings)
    try:
        await master.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"titan master: cannot listen on {settings.host}:{settings.port}: {reason}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        print(f"titan master listening on {settings.host}:{master.port}", flush=True)
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await master.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    settings, level = parse_args(argv)
    configure_logging(level)
    return run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
