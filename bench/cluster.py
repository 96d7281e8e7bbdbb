"""A local cluster of real processes for benchmarks: a master and N workers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
READY_MASTER = re.compile(rb"listening on (\S+):(\d+)")


@dataclass
class LocalCluster:
    """``async with LocalCluster(workers=2, capacity=2) as cluster: cluster.port``"""

    workers: int = 2
    capacity: int = 2
    master_args: list[str] = field(default_factory=list)
    worker_args: list[str] = field(default_factory=list)
    port: int = 0
    workspace: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="titan-bench-")))
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def __aenter__(self) -> LocalCluster:
        master = await self._spawn(
            "titan.master",
            "--port", "0", "--workspace", str(self.workspace / "master"),
            "--perm-files", str(REPO / "perm_files"), "--log-level", "WARNING", *self.master_args,
        )  # fmt: skip
        line = await asyncio.wait_for(master.stdout.readline(), 30)  # type: ignore[union-attr]
        match = READY_MASTER.search(line)
        if not match:
            raise RuntimeError(f"master did not start: {line!r}")
        self.port = int(match.group(2))
        for i in range(self.workers):
            worker = await self._spawn(
                "titan.worker",
                "--master", f"127.0.0.1:{self.port}", "--port", str(28081 + i),
                "--capacity", str(self.capacity), "--workspace", str(self.workspace / f"worker-{i}"),
                "--log-level", "WARNING", *self.worker_args,
            )  # fmt: skip
            line = await asyncio.wait_for(worker.stdout.readline(), 30)  # type: ignore[union-attr]
            if b"registered" not in line:
                raise RuntimeError(f"worker did not register: {line!r}")
        return self

    async def _spawn(self, module: str, *args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    async def __aexit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
