"""``titan demo mandelbrot``: a real map-reduce DAG, rendered by the cluster.

T tile jobs (``mandelbrot_tile.py``, the map) each render one tile and leave it
in their output folder; one stitch job (``mandelbrot_stitch.py``, the reduce)
depends on all of them, finds every tile under ``TITAN_INPUT_DIR/<tile id>/``
and writes a PNG. The master carries the tiles from the workers that rendered
them to the worker that stitches, and keeps the PNG with the stitch job's
record; the demo fetches it (JOB_OUTPUTS) and writes it next to you.

The two scripts are sent inline with each job, so the demo works against any
master, whatever its ``perm_files/`` holds. With no master answering (at
``--master``, ``TITAN_MASTER`` or the default address) the demo starts a local
cluster the way ``titan up`` does, and stops it afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.text import Text

from protocol import JobSpec
from titan.client import TitanClient
from titan.config import ClientSettings
from titan.errors import ConnectError, TitanError, UsageError

from .progress import follow_jobs

__all__ = ["DemoFailed", "DemoResult", "add_demo_options", "mandelbrot_specs", "render_mandelbrot", "run_demo"]

TILE_SCRIPT: Final = "mandelbrot_tile.py"
STITCH_SCRIPT: Final = "mandelbrot_stitch.py"
PNG_NAME: Final = "mandelbrot.png"
DEFAULT_SIZE: Final = 1024
DEFAULT_TILES: Final = 16
DEFAULT_ITERATIONS: Final = 200


class DemoFailed(TitanError):
    """The demo's DAG did not complete."""

    code = "DEMO_FAILED"


@dataclass(frozen=True)
class DemoResult:
    path: Path
    elapsed_s: float
    tiles_per_worker: dict[str, int]


def add_demo_options(parser: argparse.ArgumentParser, *, standalone: bool) -> None:
    """The demo's options; ``standalone`` adds those of its own local cluster (``titan up`` has its own)."""
    parser.add_argument(
        "--size", type=int, default=DEFAULT_SIZE, help=f"image width and height (default {DEFAULT_SIZE})"
    )
    parser.add_argument("--tiles", type=int, default=DEFAULT_TILES, help=f"tile jobs (default {DEFAULT_TILES})")
    parser.add_argument(
        "--iterations", type=int, default=DEFAULT_ITERATIONS, help=f"max iterations per pixel ({DEFAULT_ITERATIONS})"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(PNG_NAME), help=f"where to write the PNG (default ./{PNG_NAME})"
    )
    if standalone:
        parser.add_argument(
            "--local", action="store_true", help="always start a local cluster, even if a master answers"
        )
        parser.add_argument("--workers", type=int, default=2, help="workers of the local cluster (default 2)")
        parser.add_argument("--capacity", type=int, default=2, help="task slots per local worker (default 2)")
        parser.add_argument("--workspace", type=Path, help="keep the local cluster's workspace and logs here")


def check_demo_options(args: argparse.Namespace) -> None:
    if not 16 <= args.size <= 8192:
        raise UsageError(f"--size must be 16..8192, got {args.size}")
    if not 1 <= args.tiles <= min(4096, args.size * args.size):
        raise UsageError(f"--tiles must be 1..{min(4096, args.size * args.size)}, got {args.tiles}")
    if not 1 <= args.iterations <= 100_000:
        raise UsageError(f"--iterations must be 1..100000, got {args.iterations}")


def _script(name: str) -> bytes:
    """The script from ``./perm_files`` or the one that ships with Titan's sources."""
    for folder in (Path.cwd() / "perm_files", Path(__file__).resolve().parents[2] / "perm_files"):
        path = folder / name
        if path.is_file():
            return path.read_bytes()
    raise DemoFailed(f"cannot find {name}: run the demo from the Titan checkout (it lives in perm_files/)")


def mandelbrot_specs(size: int, tiles: int, iterations: int, prefix: str) -> list[JobSpec]:
    """T tile jobs, then the stitch job that depends on all of them."""
    tile, stitch = _script(TILE_SCRIPT), _script(STITCH_SCRIPT)
    specs = [
        JobSpec(
            type="RUN",
            data=TILE_SCRIPT,
            id=f"{prefix}-tile-{index:03d}",
            args=[str(size), str(tiles), str(index), str(iterations)],
            payload=tile,
        )
        for index in range(tiles)
    ]
    specs.append(
        JobSpec(
            type="RUN",
            data=STITCH_SCRIPT,
            id=f"{prefix}-stitch",
            args=[PNG_NAME],
            deps=[spec.id for spec in specs if spec.id is not None],
            payload=stitch,
        )
    )
    return specs


async def render_mandelbrot(client: TitanClient, args: argparse.Namespace, console: Console) -> DemoResult:
    """Submit the DAG, follow it with a progress bar, write the PNG to ``args.out``."""
    check_demo_options(args)
    prefix = f"MANDEL-{secrets.token_hex(3)}"
    specs = mandelbrot_specs(args.size, args.tiles, args.iterations, prefix)
    started = time.monotonic()
    reply = await client.submit_dag_info(specs)
    console.print(
        Text.assemble(
            "Mandelbrot render farm: ",
            (f"{args.tiles} tile jobs", "bold"),
            " -> ",
            ("1 stitch job", "bold"),
            f", {args.size}x{args.size}, DAG {reply.dag_id}",
        )
    )
    title = f"rendering {args.size}x{args.size}"
    jobs = await follow_jobs(client, reply.job_ids, console, title=title, interval_s=0.1)
    elapsed = time.monotonic() - started
    stitch = jobs[-1]
    if stitch.state != "COMPLETED":
        failed = next((job for job in jobs if job.state in ("DEAD", "CANCELLED")), stitch)
        raise DemoFailed(f"the render did not complete: {failed.id} is {failed.state} ({failed.error or 'no error'})")
    outputs = await client.outputs(stitch.id)
    data = outputs.files.get(PNG_NAME)
    if data is None:
        raise DemoFailed(f"{stitch.id} completed but kept no {PNG_NAME}")
    path = Path(args.out)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    per_worker = dict(Counter(job.worker or "?" for job in jobs[:-1]))
    spread = ", ".join(f"{worker} {count}" for worker, count in sorted(per_worker.items()))
    console.print(Text(f"tiles per worker: {spread}; stitched by {stitch.id} on {stitch.worker}"))
    console.print(
        Text.assemble("wrote ", (str(path.resolve()), "bold green"), f" ({len(data)} bytes) in {elapsed:.2f}s")
    )
    return DemoResult(path.resolve(), elapsed, per_worker)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _reachable(settings: ClientSettings) -> TitanClient | None:
    try:
        return await TitanClient.connect(dataclasses.replace(settings, connect_timeout_s=2.0))
    except ConnectError:
        return None


async def run_demo(
    args: argparse.Namespace, settings: ClientSettings, console: Console, *, explicit_master: bool = False
) -> int:
    """``titan demo mandelbrot``: on the master that answers, else on a local cluster of our own."""
    check_demo_options(args)
    if args.workers < 1 or args.capacity < 1:
        raise UsageError("--workers and --capacity must be at least 1")
    client = None if args.local else await _reachable(settings)
    if client is not None:
        async with client:
            await render_mandelbrot(client, args, console)
        return 0
    if not args.local:
        where = "--master" if explicit_master else "the master address"
        console.print(f"no master answers at {settings.host}:{settings.port} ({where}): starting a local cluster")
    from .up import LocalCluster, cluster_specs  # the subprocess machinery only when needed

    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="titan-demo-"))
    specs = cluster_specs(
        workers=args.workers,
        port=_free_port("127.0.0.1"),
        capacity=args.capacity,
        workspace=workspace,
    )
    env = dict(os.environ)
    if settings.token:
        env["TITAN_TOKEN"] = settings.token
    try:
        async with LocalCluster(specs, env=env) as cluster:
            host, port = cluster.master_address or ("127.0.0.1", 0)
            console.print(f"local cluster: master {host}:{port}, {args.workers} worker(s) x {args.capacity} slots")
            local = dataclasses.replace(settings, host=host, port=port)
            async with await TitanClient.connect(local) as client:
                await render_mandelbrot(client, args, console)
    finally:
        if args.workspace is None:
            shutil.rmtree(workspace, ignore_errors=True)
    return 0
