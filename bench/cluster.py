"""A local cluster of real processes for benchmarks and end-to-end tests: a master and N workers.

The master can be killed and started again on the same port and workspace
(:meth:`LocalCluster.kill_master`, :meth:`LocalCluster.start_master`); its
stderr goes to ``<workspace>/master.log`` (appended across restarts). A
workspace the cluster made itself is deleted when the process exits, unless
the cluster stopped on an exception (the path is printed, for the logs) or
``TITAN_KEEP_WORKSPACE`` is set.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READY_MASTER = re.compile(rb"listening on (\S+):(\d+)")
_TEMP_PREFIX = "titan-bench-"


@dataclass
class LocalCluster:
    """``async with LocalCluster(workers=2, capacity=2) as cluster: cluster.port``"""

    workers: int = 2
    capacity: int = 2
    master_args: list[str] = field(default_factory=list)
    worker_args: list[str] = field(default_factory=list)
    port: int = 0
    host: str = "127.0.0.1"
    workspace: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX)))
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    master: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> LocalCluster:
        await self.start_master()
        for i in range(self.workers):
            await self.start_worker(28081 + i)
        return self

    @property
    def master_log(self) -> Path:
        return self.workspace / "master.log"

    async def start_master(self) -> asyncio.subprocess.Process:
        """Start the master (again: same port once known, same workspace) and wait until it listens."""
        self.workspace.mkdir(parents=True, exist_ok=True)
        with open(self.master_log, "ab") as log:
            master = await self._spawn(
                ["titan.master",
                 "--host", self.host, "--port", str(self.port), "--workspace", str(self.workspace / "master"),
                 "--perm-files", str(REPO / "perm_files"), "--log-level", "INFO", *self.master_args],
                stderr=log,
            )  # fmt: skip
        line = await asyncio.wait_for(master.stdout.readline(), 60)  # type: ignore[union-attr]
        match = READY_MASTER.search(line)
        if not match:
            raise RuntimeError(f"master did not start: {line!r}; see {self.master_log}")
        self.port = int(match.group(2))
        self.master = master
        return master

    async def kill_master(self, signum: int = signal.SIGKILL) -> None:
        """Kill the master for real (``kill -9`` by default) and reap it."""
        assert self.master is not None
        self.master.send_signal(signum)
        await self.master.wait()

    async def start_worker(
        self, port: int, *, prefix: Sequence[str] = (), master_host: str | None = None
    ) -> asyncio.subprocess.Process:
        """Start a worker (``prefix`` wraps the command, e.g. ``ip netns exec NAME``) and wait for it to register."""
        worker = await self._spawn(
            ["titan.worker",
             "--master", f"{master_host or self.host}:{self.port}", "--port", str(port),
             "--capacity", str(self.capacity), "--workspace", str(self.workspace / f"worker-{port}"),
             "--log-level", "WARNING", *self.worker_args],
            prefix=prefix,
        )  # fmt: skip
        line = await asyncio.wait_for(worker.stdout.readline(), 30)  # type: ignore[union-attr]
        if b"registered" not in line:
            raise RuntimeError(f"worker did not register: {line!r}")
        return worker

    async def _spawn(
        self, args: list[str], *, prefix: Sequence[str] = (), stderr: int | object = asyncio.subprocess.DEVNULL
    ) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *prefix, sys.executable, "-m", *args,
            stdout=asyncio.subprocess.PIPE, stderr=stderr, cwd=REPO,  # type: ignore[arg-type]
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    async def __aexit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            if proc.returncode is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._clean_up(failed=exc[0] is not None)

    def _clean_up(self, *, failed: bool) -> None:
        if not self.workspace.name.startswith(_TEMP_PREFIX) or os.environ.get("TITAN_KEEP_WORKSPACE"):
            return  # not ours to delete, or asked to keep
        if failed:
            print(f"cluster workspace kept for inspection: {self.workspace}", file=sys.stderr)
            return
        if not _finished:
            atexit.register(_remove_finished)
        _finished.append(self.workspace)


# Deleted when the process exits, not when each cluster stops: ext4 skips the inodes it freed in
# the last minutes when it allocates new ones, which made the next run's master spend three times
# as much kernel time per job creating its attempt folders.
_finished: list[Path] = []


def _remove_finished() -> None:
    while _finished:
        shutil.rmtree(_finished.pop(), ignore_errors=True)
