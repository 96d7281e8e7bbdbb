"""Child workers: Titan workers this worker starts (DESIGN §7).

Theory of operation
-------------------
A child is ``python -m titan.worker --parent <this id> --port PORT ...`` run as
a :class:`~titan.worker.services.Service`: its own session, its log in
``<workspace>/children/<port>/``, restarted with backoff if it crashes. It dials
the master itself and registers with ``parent`` set and ``spawn_id`` naming why
it exists (the DEPLOY job, or the master's spawn request), so the master, not
this worker, knows when it is up.

A child is deliberately *not* tied to its parent's life (no parent-death
signal, a session of its own): if this worker is killed, its children keep
running and serving; they are workers of the cluster like any other. Only an
orderly shutdown of this worker stops them, and then after ``patience_s``: a
child the master is draining gets that long to finish its tasks and leave.

Ids: a child's worker id is ``<parent id>/<port>``, so a child's display port
may repeat a port used elsewhere in the cluster without the ids colliding.
Port 0 asks for any free display port; it is chosen here, once, so a restarted
child comes back under the same id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from titan.config import tls_into_env
from titan.net.tls import TlsClient

from .services import Service, ServiceEvent, ServicePolicy

__all__ = ["ChildCommand", "ChildDefaults", "ChildWorkers", "PortTaken"]

log = logging.getLogger(__name__)

# from this file, not titan.__file__: a folder named titan in the current directory turns the
# package into a namespace package whose __file__ is None
_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parents[2])
_FREE_PORTS: Final = (20000, 60999)


class PortTaken(Exception):
    """A child of this worker already uses the port."""


@dataclass(frozen=True, slots=True)
class ChildCommand:
    """How to start one child worker."""

    port: int
    worker_id: str
    argv: list[str]
    env: dict[str, str]
    directory: str


@dataclass(frozen=True, slots=True)
class ChildDefaults:
    """What a child inherits from its parent."""

    master: str  # HOST:PORT
    capacity: int
    skills: tuple[str, ...]
    heartbeat_interval_s: float
    token: str | None
    tls: TlsClient | None = None
    live_logs_in_clear: bool = False
    memory_mb: int | None = None  # None: the child works out its machine's, as its parent did
    log_level: str = "INFO"
    keep_attempts_s: float | None = 7 * 86400.0  # None: for ever


class ChildWorkers:
    """The child workers this worker started for SPAWN_WORKER, plus the ports of all its children.

    Args:
        parent_id: this worker's id.
        workspace: this worker's workspace; children live under ``children/<port>/``.
        defaults: what children inherit.
        base_env: the environment children start from.
        policy: restart policy.
        python: the interpreter that runs them (this one).
    """

    def __init__(
        self,
        parent_id: str,
        workspace: Path,
        defaults: ChildDefaults,
        *,
        base_env: Mapping[str, str],
        policy: ServicePolicy,
        python: str = sys.executable,
        rng: random.Random | None = None,
    ) -> None:
        self.parent_id = parent_id
        self.root = workspace.absolute() / "children"
        self.defaults = defaults
        self.policy = policy
        self.python = python
        self._base_env = dict(base_env)
        self._rng = rng or random.Random()
        self._ports: set[int] = set()  # every child port in use here (spawned and deployed)
        self.spawned: dict[int, Service] = {}  # port -> child started by SPAWN_WORKER

    def __len__(self) -> int:
        return len(self._ports)

    # ------------------------------------------------------------------ commands
    def command(self, port: int, *, spawn_id: str, capacity: int = 0) -> ChildCommand:
        """Reserve ``port`` (0: any free one) and build the command for a child there.

        Raises:
            PortTaken: another child of this worker uses that port.
            OSError: its directory cannot be made.
        """
        if port == 0:
            port = self._free_port()
        elif port in self._ports:
            raise PortTaken(f"port {port} is already used by a child of this worker")
        directory = self.root / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        defaults = self.defaults
        worker_id = f"{self.parent_id}/{port}"
        argv = [
            self.python, "-m", "titan.worker",
            "--master", defaults.master,
            "--port", str(port),
            "--id", worker_id,
            "--parent", self.parent_id,
            "--spawn-id", spawn_id,
            "--capacity", str(capacity or defaults.capacity),
            "--skills", ",".join(defaults.skills),
            "--workspace", str(directory),
            "--heartbeat-interval", repr(defaults.heartbeat_interval_s),
            "--log-level", defaults.log_level,
        ]  # fmt: skip
        if defaults.live_logs_in_clear:
            argv.append("--live-logs-in-clear")
        if defaults.memory_mb is not None:
            argv += ["--memory", str(defaults.memory_mb)]
        keep = defaults.keep_attempts_s
        argv += ["--keep-attempts", "forever" if keep is None else repr(keep)]
        env = dict(self._base_env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        if defaults.token:
            env["TITAN_TOKEN"] = defaults.token  # in the environment, not on the command line
        tls_into_env(env, defaults.tls)  # dials the master as its parent does
        self._ports.add(port)
        return ChildCommand(port, worker_id, argv, env, str(directory))

    def release(self, port: int) -> None:
        """The child on ``port`` has ended for good."""
        self._ports.discard(port)

    def _free_port(self) -> int:
        low, high = _FREE_PORTS
        while True:
            port = self._rng.randint(low, high)
            if port not in self._ports:
                return port

    # ------------------------------------------------------------------ SPAWN_WORKER children
    def spawn(self, port: int, *, spawn_id: str, capacity: int = 0) -> Service:
        """Start a child worker for a spawn request (no job: it takes no slot here).

        Raises:
            PortTaken, OSError: as :meth:`command`.
        """
        cmd = self.command(port, spawn_id=spawn_id, capacity=capacity)

        def on_event(service: Service, event: ServiceEvent) -> None:
            if event is ServiceEvent.ENDED:
                self.spawned.pop(cmd.port, None)
                self.release(cmd.port)

        service = Service(
            f"child [{cmd.port}]",
            cmd.argv,
            cmd.env,
            cmd.directory,
            policy=self.policy,
            on_event=on_event,
            probe=False,
        )
        self.spawned[cmd.port] = service
        log.info("starting child worker %s (%s)", cmd.worker_id, spawn_id or "spawn request")
        service.start()
        return service

    def kill_all(self) -> None:
        for service in list(self.spawned.values()):
            service.kill()

    async def aclose(self, reason: str, *, patience_s: float = 0.0) -> None:
        """Stop every spawned child (after ``patience_s`` for those leaving on their own) and wait."""
        services = list(self.spawned.values())
        for service in services:
            service.stop(reason, patience_s=patience_s)
        if services:
            await asyncio.gather(*(asyncio.shield(service.ended) for service in services))
