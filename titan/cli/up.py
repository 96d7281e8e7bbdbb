"""``titan up``: a local master and N workers as child processes, with the REPL attached.

Theory of operation
-------------------
Each child is started with ``sys.executable -m titan.master|titan.worker``, its
stdout and stderr merged into one pipe that a copier task writes to
``<workspace>/logs/<name>.log``; the copier also watches for the child's
readiness line (``titan master listening on HOST:PORT``, ``titan worker [PORT]
registered with ...``). A child that exits first, or stays silent past the
timeout, fails the start with its last output line (e.g. the master's "port
already in use"), and everything started so far is stopped.

No orphans, three layers:

1. Normal exits (EXIT, Ctrl-D, an error, Ctrl-C during start-up, SIGTERM or
   SIGHUP to ``titan up``) unwind through :meth:`LocalCluster.stop`: SIGTERM to
   each child's process group, then SIGKILL after a grace period; workers
   first so the master sees them leave.
2. ``titan up`` killed outright (SIGKILL, a crash): every child armed
   ``PR_SET_PDEATHSIG`` in a ``preexec_fn`` on Linux, so the kernel signals it
   when its parent dies. This needs no cooperation from the master or worker
   code, unlike a lifeline pipe that each child would have to watch. The signal
   is SIGTERM rather than SIGKILL so that a worker can still stop its own task
   process groups (which live in sessions of their own) on the way out. The
   child re-checks its parent after arming, closing the race where the parent
   dies between fork and ``prctl``. Spawning happens on the main thread, which
   matters because the death signal follows the *thread* that forked.
3. Children run in their own session, so the terminal's Ctrl-C reaches only
   ``titan up`` (which decides what to stop), never the cluster directly.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import ctypes.util
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from rich.console import Console

from titan.config import ClientSettings
from titan.errors import TitanError, UsageError

from .output import stdout_console

__all__ = [
    "ChildSpec",
    "ClusterStartError",
    "LocalCluster",
    "RunningChild",
    "cluster_specs",
    "parent_death_signal",
    "run_up",
]

_PR_SET_PDEATHSIG: Final = 1
_MASTER_READY: Final = "titan master listening on"
_ADDRESS: Final = re.compile(r"listening on \[?([^\s\]]+?)\]?:(\d+)")


class ClusterStartError(TitanError):
    """A child of ``titan up`` failed to start."""

    code = "CLUSTER_START"


#: in a child's argv, the master's address as it reported it ready (with --port 0, its port is known only then)
MASTER_ADDRESS: Final = "{master}"


@dataclass(frozen=True)
class ChildSpec:
    """One process of the local cluster and how to know it is ready."""

    name: str
    argv: tuple[str, ...]
    ready_marker: str
    log_path: Path


def cluster_specs(
    *,
    workers: int,
    port: int,
    capacity: int,
    workspace: Path,
    host: str = "127.0.0.1",
    first_worker_port: int = 8081,
    python: str = sys.executable,
    master_args: Sequence[str] = (),
) -> list[ChildSpec]:
    """The master first (with ``master_args``, e.g. ``--autoscale``), then one worker per port from ``first_worker_port`` on."""
    logs = workspace / "logs"
    specs = [
        ChildSpec(
            "master",
            (
                python,
                "-m",
                "titan.master",
                "--host",
                host,
                "--port",
                str(port),
                "--workspace",
                str(workspace),
                *master_args,
            ),  # fmt: skip
            _MASTER_READY,
            logs / "master.log",
        )
    ]
    for worker_port in range(first_worker_port, first_worker_port + workers):
        argv = (
            python, "-m", "titan.worker", "--master", MASTER_ADDRESS,
            "--port", str(worker_port), "--capacity", str(capacity),
            "--workspace", str(workspace / f"worker-{worker_port}"),
        )  # fmt: skip
        specs.append(
            ChildSpec(
                f"worker-{worker_port}",
                argv,
                f"titan worker [{worker_port}] registered with",
                logs / f"worker-{worker_port}.log",
            )
        )
    return specs


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel send ``sig`` to the child when we die.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); None elsewhere, where layer 1 of the
    module docstring is the only protection.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        # runs in the child between fork and exec: resolved everything beforehand
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm


class RunningChild:
    """A started child: its process, its log copier and its readiness."""

    def __init__(self, spec: ChildSpec, process: asyncio.subprocess.Process, log: IO[bytes]) -> None:
        self.spec = spec
        self.process = process
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.ready_line: str | None = None
        self._log = log
        self._ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._copier = asyncio.create_task(self._copy(), name=f"titan-up-{spec.name}-log")

    async def _copy(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        try:
            while line := await stream.readline():
                self._log.write(line)
                self._log.flush()
                text = line.decode("utf-8", errors="replace").rstrip()
                if text:
                    self.tail.append(text)
                if not self._ready.done() and self.spec.ready_marker in text:
                    self.ready_line = text
                    self._ready.set_result(text)
        finally:
            if not self._ready.done():
                self._ready.set_exception(EOFError())

    async def wait_ready(self, timeout_s: float) -> str:
        """The readiness line.

        Raises:
            ClusterStartError: the child exited first or stayed silent too long.
        """
        name = self.spec.name
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(self._ready)
        except TimeoutError:
            raise ClusterStartError(
                f"{name} did not report ready within {timeout_s:g}s (see {self.spec.log_path})"
            ) from None
        except EOFError:
            code = await self.process.wait()
            last = self.tail[-1] if self.tail else "no output"
            raise ClusterStartError(f"{name} exited with code {code} before it was ready: {last}") from None

    def send_signal(self, sig: int) -> None:
        if self.process.returncode is not None:
            return
        try:
            os.killpg(self.process.pid, sig)  # its own session: the group is the child and its helpers
        except ProcessLookupError:
            pass
        except PermissionError:
            self.process.send_signal(sig)

    async def finish(self) -> None:
        """After the process is gone: drain the pipe and close the log."""
        try:
            await self._copier
        finally:
            if self._ready.done() and not self._ready.cancelled():
                self._ready.exception()  # mark it seen: an EOF after a normal stop is no error
            else:
                self._ready.cancel()
            self._log.close()


class LocalCluster:
    """The children of ``titan up``; ``async with`` starts them all and stops them all."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        ready_timeout_s: float = 20.0,
        grace_s: float = 5.0,
        env: Mapping[str, str] | None = None,
        on_ready: Callable[[ChildSpec, str], None] | None = None,
    ) -> None:
        self.specs = list(specs)
        self.ready_timeout_s = ready_timeout_s
        self.grace_s = grace_s
        self.env = dict(os.environ if env is None else env)
        # without this a child's readiness line could sit in its block buffer
        self.env["PYTHONUNBUFFERED"] = "1"
        self.on_ready = on_ready
        self.children: list[RunningChild] = []
        self.master_address: tuple[str, int] | None = None

    async def _spawn(self, spec: ChildSpec) -> RunningChild:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = spec.log_path.open("ab")
        address = self.master_address
        argv = [
            f"{address[0]}:{address[1]}" if arg == MASTER_ADDRESS and address is not None else arg for arg in spec.argv
        ]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=parent_death_signal(),
            )
        except OSError as exc:
            log.close()
            raise ClusterStartError(f"cannot start {spec.name}: {exc}") from exc
        child = RunningChild(spec, process, log)
        self.children.append(child)
        return child

    async def _start_ready(self, spec: ChildSpec) -> None:
        child = await self._spawn(spec)
        line = await child.wait_ready(self.ready_timeout_s)
        if self.on_ready is not None:
            self.on_ready(spec, line)
        match = _ADDRESS.search(line)
        if spec.ready_marker == _MASTER_READY and match:
            self.master_address = (match.group(1), int(match.group(2)))

    async def start(self) -> None:
        """Start the first spec (the master), then the rest together; all must report ready."""
        try:
            if self.specs:
                await self._start_ready(self.specs[0])
            async with asyncio.TaskGroup() as group:
                for spec in self.specs[1:]:
                    group.create_task(self._start_ready(spec))
        except BaseException as exc:
            await asyncio.shield(self.stop())
            if isinstance(exc, BaseExceptionGroup):
                failures = exc.subgroup(ClusterStartError)
                if failures is not None:
                    raise failures.exceptions[0] from None
            raise

    async def _stop_one(self, child: RunningChild) -> None:
        child.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.grace_s):
                await child.process.wait()
        except TimeoutError:
            child.send_signal(signal.SIGKILL)
            await child.process.wait()
        await child.finish()

    async def stop(self) -> None:
        """SIGTERM, wait up to the grace period, SIGKILL; workers before the master."""
        children, self.children = self.children, []
        if not children:
            return
        master, workers = children[0], children[1:]
        await asyncio.gather(*(self._stop_one(child) for child in workers))
        await self._stop_one(master)

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.shield(self.stop())


def perm_files_warning(here: Path) -> str:
    """What to say when ``here`` has no ``perm_files/``: the master would say it only in its log file."""
    if (here / "perm_files").is_dir():
        return ""
    return (
        f"no perm_files/ folder in {here}: RUN jobs that name a file are refused until it exists "
        "(start titan up from the project's folder to run its examples)"
    )


def _check_args(args: argparse.Namespace) -> None:
    if args.workers < 0:
        raise UsageError(f"--workers must not be negative, got {args.workers}")
    if args.capacity < 1:
        raise UsageError(f"--capacity must be at least 1, got {args.capacity}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535 (0: any free port), got {args.port}")
    if not 0 < args.first_worker_port <= 65535 - args.workers:
        raise UsageError(f"--first-worker-port must leave room for {args.workers} ports, got {args.first_worker_port}")
    if args.ready_timeout <= 0:
        raise UsageError(f"--ready-timeout must be positive, got {args.ready_timeout:g}")


async def _demo(settings: ClientSettings, args: argparse.Namespace, console: Console) -> None:
    """``titan up --demo``: render the Mandelbrot demo on the new cluster; a failure is one line."""
    from titan.client import TitanClient

    from .demo import render_mandelbrot

    try:
        async with await TitanClient.connect(settings) as client:
            await render_mandelbrot(client, args, console)
    except TitanError as exc:
        console.print(f"[bold red]demo failed:[/bold red] {exc}")


async def run_up(args: argparse.Namespace, *, token: str | None = None, console: Console | None = None) -> int:
    """``titan up``: start the cluster, run the REPL against it, stop the cluster."""
    from .repl import Repl  # the REPL pulls in prompt_toolkit; LocalCluster alone does not need it

    _check_args(args)
    console = console or stdout_console()
    specs = cluster_specs(
        workers=args.workers,
        port=args.port,
        capacity=args.capacity,
        workspace=args.workspace,
        host=args.host,
        first_worker_port=args.first_worker_port,
        master_args=["--autoscale"] if getattr(args, "autoscale", False) else [],
    )
    env = dict(os.environ)
    if token:
        env["TITAN_TOKEN"] = token
    # the local master runs without a certificate: its workers must not dial it over TLS
    env.pop("TITAN_TLS_CA", None)
    env.pop("TITAN_TLS", None)

    def announce(spec: ChildSpec, line: str) -> None:
        address = _ADDRESS.search(line) if _MASTER_READY in line else None
        where = f" on {address.group(1)}:{address.group(2)}" if address else ""  # --port 0: known only now
        console.print(f"[green]ready[/green] {spec.name}{where}  [dim](log: {spec.log_path})[/dim]")

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def terminate(sig: int) -> None:
        received.append(sig)
        task.cancel()

    # SIGTERM and SIGHUP (terminal closed) unwind like EXIT, so the children are stopped in order
    installed = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            loop.add_signal_handler(sig, terminate, sig)
            installed.append(sig)
        except (ValueError, RuntimeError, NotImplementedError):
            pass
    where = f"{args.host} (a free port)" if args.port == 0 else f"{args.host}:{args.port}"
    console.print(f"starting a master on {where} and {args.workers} worker(s)...")
    missing = perm_files_warning(Path.cwd())
    if missing:
        console.print(f"[yellow]warning:[/yellow] {missing}")
    try:
        cluster = LocalCluster(specs, ready_timeout_s=args.ready_timeout, env=env, on_ready=announce)
        async with cluster:
            host, port = cluster.master_address or (args.host, args.port)
            settings = ClientSettings(host=host, port=port, token=token)
            if getattr(args, "demo", False):
                await _demo(settings, args, console)
            status = await Repl(settings, debug=args.debug, title="Titan (local)").run()
            console.print("stopping the local cluster...")
            return status
    except asyncio.CancelledError:
        if not received:
            raise
        task.uncancel()
        return 128 + received[0]
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
