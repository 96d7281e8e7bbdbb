"""The dashboard's entry point: ``titan dashboard``, ``python -m titan.dashboard``, the deployable script.

Prints one line, ``titan dashboard serving http://HOST:PORT/ (master HOST:PORT)``,
once it listens, then serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from titan.args import OneLineParser
from titan.config import ClientSettings, tls_from_env
from titan.runtime import configure_logging, run

from .server import Dashboard, DashboardSettings

__all__ = ["main", "parse_args", "serve"]


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None, *, prog: str = "titan dashboard"
) -> tuple[DashboardSettings, ClientSettings]:
    """Flags (and ``TITAN_MASTER``/``TITAN_TOKEN``) -> settings; a bad flag exits 2 with one line."""
    env = os.environ if environ is None else environ
    parser = OneLineParser(prog=prog, description="Serve the Titan dashboard, a web page that shows the cluster.")
    parser.add_argument(
        "--port", type=int, default=DashboardSettings.port, help="HTTP port; 0 picks one (default 8050)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--master", metavar="HOST:PORT", default=None, help="master address (env TITAN_MASTER)")
    parser.add_argument("--token", default=None, help="cluster token (env TITAN_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="dial the master over TLS (env TITAN_TLS=1)")
    parser.add_argument("--tls-ca", metavar="FILE", help="dial over TLS trusting this CA (env TITAN_TLS_CA)")
    parser.add_argument("--refresh", type=float, default=DashboardSettings.refresh_s, metavar="SECONDS")
    parser.add_argument(
        "--any-port-if-busy", action="store_true", help="serve on a free port when --port is taken instead of failing"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port} is out of range")
    if not args.refresh > 0:
        parser.error(f"--refresh must be positive, got {args.refresh:g}")
    try:
        client = ClientSettings.from_env(env, master=args.master)
    except ValueError as exc:
        parser.error(str(exc))
    if args.token:
        client = dataclasses.replace(client, token=args.token)
    if args.tls or args.tls_ca:
        client = dataclasses.replace(client, tls=tls_from_env({}, tls=args.tls, ca=args.tls_ca))
    settings = DashboardSettings(
        host=args.host, port=args.port, refresh_s=args.refresh, any_port_if_busy=args.any_port_if_busy
    )
    return settings, client


async def serve(settings: DashboardSettings, client: ClientSettings) -> int:
    """Serve until SIGINT/SIGTERM; 1 with a one-line message when the port cannot be bound."""
    dashboard = Dashboard(settings, client)
    try:
        await dashboard.start()
    except OSError as exc:
        print(
            f"titan dashboard: cannot serve on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    serving = asyncio.ensure_future(dashboard.serve_forever())
    try:
        print(f"titan dashboard serving {dashboard.url} (master {client.host}:{client.port})", flush=True)
        await asyncio.wait([serving, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await dashboard.aclose()
    return 0


def main(argv: Sequence[str] | None = None, *, prog: str = "titan dashboard") -> int:
    settings, client = parse_args(argv, prog=prog)
    configure_logging("WARNING")
    return run(serve(settings, client))
