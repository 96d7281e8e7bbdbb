"""Attempt directories: made in place, recycled once reported, deleted when they cannot be."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from titan.worker.dirs import AttemptDirs, untouched_job_folders


@pytest.fixture
async def dirs(tmp_path: Path) -> AsyncIterator[AttemptDirs]:
    made = AttemptDirs(str(tmp_path), max_spares=4)
    yield made
    await made.aclose()


def _tree(directory: str | Path) -> list[str]:
    return sorted(os.listdir(directory))


def _run(directory: str, stdout: bytes = b"") -> None:
    """What a job's spawn and run leave: the two log files."""
    Path(directory, "stdout").write_bytes(stdout)
    Path(directory, "stderr").write_bytes(b"")


async def test_a_pristine_tree_is_recycled_for_the_next_new_job(dirs: AttemptDirs, tmp_path: Path) -> None:
    first = dirs.make("J1", 1)
    assert first == f"{tmp_path}/jobs/J1/attempt-1"
    assert _tree(first) == ["outputs"]  # made in place: the pool starts empty
    _run(first, b"hello\n")
    dirs.release(first)
    assert not (tmp_path / "jobs" / "J1").exists() and dirs.spares_ready == 1
    second = dirs.make("J2", 1)
    assert second == f"{tmp_path}/jobs/J2/attempt-1" and dirs.spares_ready == 0
    assert _tree(second) == ["outputs", "stderr", "stdout"]  # the spawn truncates what J1 wrote
    assert _tree(tmp_path / "jobs") == ["J2"]


async def test_a_tree_with_leftovers_is_deleted_not_reused(dirs: AttemptDirs, tmp_path: Path) -> None:
    for job_id, litter in (("OUT", "outputs/part.txt"), ("CWD", "scratch.tmp"), ("UP", "../note")):
        directory = dirs.make(job_id, 1)
        _run(directory)
        Path(directory, litter).write_text("mine")
        dirs.release(directory)
    assert dirs.spares_ready == 0
    assert _tree(tmp_path / "jobs") == []
    await dirs.aclose()  # waits for the trash to be emptied
    assert _tree(tmp_path / ".trash") == []
    fresh = dirs.make("NEXT", 1)
    assert _tree(fresh) == ["outputs"]


async def test_later_attempts_are_deleted_and_the_job_folder_with_the_last(dirs: AttemptDirs, tmp_path: Path) -> None:
    kept = dirs.make("J1", 1)
    second = dirs.make("J1", 2)
    assert _tree(tmp_path / "jobs" / "J1") == ["attempt-1", "attempt-2"]
    dirs.release(second)
    assert _tree(tmp_path / "jobs" / "J1") == ["attempt-1"]
    dirs.release(kept)  # pristine: attempt-1 alone, with an empty outputs/
    assert not (tmp_path / "jobs" / "J1").exists()
    assert dirs.spares_ready == 1


async def test_keep_leaves_the_directory_for_inspection(dirs: AttemptDirs) -> None:
    directory = dirs.make("BIG", 1)
    _run(directory, b"x" * 1000)
    dirs.release(directory, keep=True)
    assert Path(directory, "stdout").read_bytes() == b"x" * 1000
    assert dirs.spares_ready == 0


async def test_existing_job_directory_falls_back_and_keeps_the_spare(tmp_path: Path) -> None:
    dirs = AttemptDirs(str(tmp_path), max_spares=2)
    try:
        dirs.release(dirs.make("J0", 1))
        assert dirs.spares_ready == 1
        first = dirs.make("J1", 1)
        dirs.release(dirs.make("J2", 1))  # back to one spare
        Path(first, "stdout").write_text("old run")
        again = dirs.make("J1", 1)  # a rerun of the same attempt on this worker
        assert again == first and Path(again, "stdout").read_text() == "old run"  # the spawn truncates it
        assert dirs.spares_ready == 1
    finally:
        await dirs.aclose()


async def test_the_pool_is_bounded_and_the_rest_deleted(tmp_path: Path) -> None:
    dirs = AttemptDirs(str(tmp_path), max_spares=2)
    try:
        made = [dirs.make(f"J{i}", 1) for i in range(5)]
        for directory in made:
            dirs.release(directory)
        assert dirs.spares_ready == 2
        await dirs.aclose()
        assert len(os.listdir(tmp_path / ".spare")) == 2
        assert _tree(tmp_path / "jobs") == [] and _tree(tmp_path / ".trash") == []
    finally:
        await dirs.aclose()


async def test_without_a_pool_directories_are_made_in_place_and_deleted(tmp_path: Path) -> None:
    dirs = AttemptDirs(str(tmp_path), max_spares=0)
    directory = dirs.make("J1", 3)
    assert directory == f"{tmp_path}/jobs/J1/attempt-3"
    assert _tree(directory) == ["outputs"]
    dirs.release(directory)
    await dirs.aclose()
    assert _tree(tmp_path / "jobs") == [] and dirs.spares_ready == 0


async def test_leftover_spares_are_reused_and_broken_ones_removed(tmp_path: Path) -> None:
    first = AttemptDirs(str(tmp_path), max_spares=3)
    for directory in [first.make(f"J{i}", 1) for i in range(3)]:
        first.release(directory)
    await first.aclose()
    broken = tmp_path / ".spare" / "broken"
    (broken / "attempt-1").mkdir(parents=True)  # no outputs/: not a whole tree

    second = AttemptDirs(str(tmp_path), max_spares=3)
    try:
        assert second.spares_ready == 3
        second.make("J9", 1)
        assert _tree(f"{tmp_path}/jobs/J9/attempt-1") == ["outputs"]
        assert second.spares_ready == 2
        await second.aclose()
        assert not broken.exists() and _tree(tmp_path / ".trash") == []
    finally:
        await second.aclose()


async def test_many_jobs_back_to_back_create_no_new_trees(tmp_path: Path) -> None:
    dirs = AttemptDirs(str(tmp_path), max_spares=8)
    try:
        running = [dirs.make(f"W{i}", 1) for i in range(4)]  # four slots' worth, made in place
        for directory in running:
            dirs.release(directory)
        spares = set(os.listdir(tmp_path / ".spare"))
        for i in range(200):
            directory = dirs.make(f"B{i}", 1)
            _run(directory, b"line\n")
            dirs.release(directory)
            assert dirs.spares_ready == 4
        assert _tree(tmp_path / "jobs") == []
        assert len(os.listdir(tmp_path / ".spare")) == 4 and set(os.listdir(tmp_path / ".spare")) != spares
    finally:
        await dirs.aclose()


async def test_a_log_still_held_open_is_not_handed_to_the_next_job(dirs: AttemptDirs, tmp_path: Path) -> None:
    directory = dirs.make("J1", 1)
    _run(directory)
    # a process of J1 that escaped the group kill still writes to its stdout
    with open(f"{directory}/stdout", "ab") as escaped:
        dirs.release(directory)
        assert dirs.spares_ready == 0 and not (tmp_path / "jobs" / "J1").exists()
        escaped.write(b"late\n")  # lands in the trashed file, never in a later job's log
    await dirs.aclose()
    assert _tree(tmp_path / ".trash") == []


async def test_a_spare_removed_by_hand_is_forgotten(dirs: AttemptDirs, tmp_path: Path) -> None:
    dirs.release(dirs.make("J0", 1))
    (spare,) = os.listdir(tmp_path / ".spare")
    os.rename(tmp_path / ".spare" / spare, tmp_path / "elsewhere")
    assert _tree(dirs.make("J1", 1)) == ["outputs"]  # made in place instead
    assert dirs.spares_ready == 0


async def test_aclose_lets_a_finished_emptying_report_before_it_returns(dirs: AttemptDirs) -> None:
    # the helper thread is done, but the loop has not yet run the callback that says so
    emptying = asyncio.get_running_loop().create_future()
    emptying.add_done_callback(dirs._emptied)
    dirs._emptying = emptying
    emptying.set_result(None)
    await dirs.aclose()  # awaited in this very step: nothing has yielded to the loop yet
    assert dirs._emptying is None


def _age(path: Path, seconds: float) -> None:
    """Date every entry under ``path`` (and it) ``seconds`` back."""
    then = time.time() - seconds
    for folder, names, files in os.walk(path):
        for name in [*names, *files]:
            os.utime(Path(folder, name), (then, then))
    os.utime(path, (then, then))


async def test_only_job_folders_untouched_for_long_enough_are_found(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    for name in ("OLD", "YOUNG_LOG", "YOUNG"):
        (jobs / name / "attempt-1").mkdir(parents=True)
        (jobs / name / "attempt-1" / "stdout").write_bytes(b"x")
        _age(jobs / name, 3600)
    os.utime(jobs / "YOUNG_LOG" / "attempt-1" / "stdout")  # its log is still being written
    (jobs / "YOUNG" / "attempt-2").mkdir()  # a retry ran here since
    (jobs / "stray-file").write_bytes(b"")
    assert untouched_job_folders(str(jobs), time.time() - 600) == [str(jobs / "OLD")]
    assert untouched_job_folders(str(tmp_path / "nowhere"), time.time()) == []


async def test_a_discarded_folder_goes_to_the_trash_and_is_deleted(dirs: AttemptDirs, tmp_path: Path) -> None:
    kept = dirs.make("KEPT", 1)
    _run(kept, b"too long to report\n")
    dirs.release(kept, keep=True)
    assert dirs.discard(f"{tmp_path}/jobs/KEPT")
    await dirs.aclose()
    assert _tree(tmp_path / "jobs") == [] and _tree(tmp_path / ".trash") == []
    assert not dirs.discard(f"{tmp_path}/jobs/KEPT")  # gone already: nothing to do, no error
