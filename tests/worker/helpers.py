"""Task builders and small waits shared by the worker's tests."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from protocol import TaskStart
from titan.worker.engine import AttemptResult, ProcessRunner

#: worker settings for tests: quick reconnects; heartbeats only where a test asks for them
FAST_WORKER: dict[str, Any] = {
    "heartbeat_interval_s": 10.0,
    "reconnect_initial_s": 0.02,
    "reconnect_max_s": 0.2,
    "connect_timeout_s": 2.0,
    "kill_grace_s": 0.5,
}


def task(**fields: Any) -> TaskStart:
    """A TaskStart with test defaults (job J1, attempt 1, SHELL ``true``)."""
    return TaskStart(**{"job_id": "J1", "attempt": 1, "kind": "SHELL", "data": "true", **fields})


def shell(command: str, job_id: str = "J1", attempt: int = 1, **fields: Any) -> TaskStart:
    return task(job_id=job_id, attempt=attempt, data=command, **fields)


def shipped(name: str, data: bytes, *, mode: int = 0o644, job_id: str = "J1", **fields: Any) -> TaskStart:
    """A RUN task carrying its file, as the master ships it."""
    return TaskStart(
        job_id=job_id,
        attempt=1,
        kind="RUN",
        data=name,
        payload=data,
        payload_name=name,
        payload_hash=hashlib.sha256(data).hexdigest(),
        payload_mode=mode,
        **fields,
    )


async def run(runner: ProcessRunner, task: TaskStart) -> AttemptResult:
    return await runner.start(task).wait()


def outputs(runner: ProcessRunner, job_id: str = "J1", attempt: int = 1) -> tuple[bytes, bytes]:
    directory = runner.workspace / "jobs" / job_id / f"attempt-{attempt}"
    return (directory / "stdout").read_bytes(), (directory / "stderr").read_bytes()


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found
