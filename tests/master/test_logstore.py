"""``LogStore``: ended attempts' logs and result.json at rest, written by one thread in turns."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from protocol import TaskStatus
from tests.support import wait_until
from titan.master.logstore import AttemptLogStats, LogStore


def ended(job_id: str, attempt: int = 1, stdout: bytes = b"", stderr: bytes = b"") -> TaskStatus:
    return TaskStatus(job_id=job_id, attempt=attempt, state="COMPLETED", exit_code=0, stdout=stdout, stderr=stderr)


async def test_a_burst_of_ended_attempts_is_written_whole_and_read_back(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    try:
        for i in range(300):
            store.store_ended(ended(f"J{i}", stdout=f"out {i}\n".encode()), None, AttemptLogStats())
        # until the thread has written them, reads answer from memory
        assert store.read("J7", 1, "stdout") == b"out 7\n"
        await wait_until(lambda: not store._unwritten, what="every attempt written")
        for i in (0, 150, 299):
            folder = tmp_path / "jobs" / f"J{i}" / "attempt-1"
            assert (folder / "stdout").read_bytes() == f"out {i}\n".encode()
            assert (folder / "stderr").read_bytes() == b""
            result = json.loads((folder / "result.json").read_text())
            assert (result["state"], result["stdout_bytes"], result["stderr_bytes"]) == (
                "COMPLETED",
                len(f"out {i}\n"),
                0,
            )
        assert store.read("J299", 1, "stdout") == b"out 299\n"  # now from the disk
    finally:
        store.close()


async def test_a_later_attempt_and_a_missing_jobs_folder_are_made_as_needed(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "not-yet")
    try:
        store.store_ended(ended("J", attempt=3, stderr=b"third\n"), None, AttemptLogStats(log_lost=2, truncated=True))
        store.flush()
        folder = tmp_path / "not-yet" / "jobs" / "J" / "attempt-3"
        assert (folder / "stderr").read_bytes() == b"third\n"
        result = json.loads((folder / "result.json").read_text())
        assert (result["log_lost"], result["truncated"]) == (2, True)
    finally:
        store.close()


async def test_close_writes_what_is_still_queued(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    for i in range(50):
        store.store_ended(ended(f"C{i}", stdout=b"x"), None, AttemptLogStats())
    store.close()
    assert all((tmp_path / "jobs" / f"C{i}" / "attempt-1" / "result.json").exists() for i in range(50))


async def test_a_turn_due_after_close_is_harmless(tmp_path: Path) -> None:
    store = LogStore(tmp_path, write_delay_s=0.01)
    store.store_ended(ended("LATE", stdout=b"x"), None, AttemptLogStats())
    store.close()  # before the turn was due: close writes it
    assert (tmp_path / "jobs" / "LATE" / "attempt-1" / "stdout").read_bytes() == b"x"
    await asyncio.sleep(0.05)  # the turn comes due on a closed store


async def test_a_completed_attempt_with_nothing_to_keep_gets_no_folder(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    try:
        store.store_ended(ended("QUIET"), None, AttemptLogStats())
        failed = TaskStatus(job_id="FAILED", attempt=1, state="FAILED", exit_code=3, stdout=b"", stderr=b"")
        store.store_ended(failed, None, AttemptLogStats())
        store.store_ended(ended("LOST"), None, AttemptLogStats(log_lost=1))
        store.flush()
        assert not (tmp_path / "jobs" / "QUIET").exists()
        assert store.read("QUIET", 1, "stdout") == b"" and store.stats("QUIET", 1) == AttemptLogStats()
        assert json.loads((tmp_path / "jobs" / "FAILED" / "attempt-1" / "result.json").read_text())["exit_code"] == 3
        assert json.loads((tmp_path / "jobs" / "LOST" / "attempt-1" / "result.json").read_text())["log_lost"] == 1
    finally:
        store.close()
