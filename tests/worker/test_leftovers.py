from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import wait_until
from tests.worker.test_agent import MakeWorker, registered
from titan.client.testing import FakeMaster
from titan.worker.leftovers import kill_leftovers, leftover_groups

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="found through /proc")


def _session_in(directory: Path, *, job: bool = True) -> subprocess.Popen[bytes]:
    """A job's shape: a shell in a session of its own, with a child, working in ``directory``.

    ``job=False``: the same without the environment a worker gives its jobs (a person's shell).
    """
    directory.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITAN_")}
    if job:
        env["TITAN_JOB_ID"] = directory.parent.name
    return subprocess.Popen(["/bin/sh", "-c", "sleep 60 & wait"], cwd=directory, start_new_session=True, env=env)


def _end(process: subprocess.Popen[bytes]) -> None:
    """Kill the shell and its sleep: the whole group, as a worker would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


async def test_only_process_groups_working_inside_jobs_are_killed(tmp_path: Path) -> None:
    left = _session_in(tmp_path / "jobs" / "JOB" / "attempt-1")
    child_worker = _session_in(tmp_path / "children" / "8090")
    try:
        assert leftover_groups(tmp_path / "jobs") == {left.pid}
        assert kill_leftovers(tmp_path / "jobs") == 1
        assert left.wait(timeout=10) == -9
        assert child_worker.poll() is None
        # the group's other member (the sleep) dies a moment after the shell: then nothing is left
        await wait_until(lambda: not leftover_groups(tmp_path / "jobs"), what="the whole group gone")
    finally:
        for process in (left, child_worker):
            _end(process)


def test_a_shell_that_only_looks_inside_an_attempt_folder_is_spared(tmp_path: Path) -> None:
    visitor = _session_in(tmp_path / "jobs" / "KEPT" / "attempt-1", job=False)
    try:
        assert leftover_groups(tmp_path / "jobs") == set()
        assert visitor.poll() is None
    finally:
        _end(visitor)


def test_no_proc_means_nothing_found(tmp_path: Path) -> None:
    assert leftover_groups(tmp_path / "jobs", proc=tmp_path / "no-proc") == set()


async def test_a_worker_restarted_on_its_workspace_kills_what_its_killed_run_left(
    tmp_path: Path, master: FakeMaster, make_worker: MakeWorker
) -> None:
    workspace = tmp_path / "restarted"
    orphan = _session_in(workspace / "jobs" / "SVC" / "attempt-1")
    try:
        await registered(await make_worker(workspace=workspace))
        assert orphan.wait(timeout=10) == -9
    finally:
        _end(orphan)
