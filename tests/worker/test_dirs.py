"""Attempt directories: the spare pool and the fallback that makes them in place."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support import wait_until
from titan.worker.dirs import AttemptDirs, next_target


def _tree(directory: str) -> list[str]:
    return sorted(os.listdir(directory))


async def test_first_attempt_takes_a_spare_tree(tmp_path: Path) -> None:
    dirs = AttemptDirs(str(tmp_path), max_spares=4)
    try:
        assert dirs.spares_ready == 0  # the pool starts empty: a quiet worker builds none
        dirs.make("J0", 1)  # made in place; the miss starts the pool
        await wait_until(lambda: dirs.spares_ready == 4, what="pool filled")
        directory = dirs.make("J1", 1)
        assert directory == f"{tmp_path}/jobs/J1/attempt-1"
        assert _tree(directory) == ["outputs", "stderr", "stdout"]
        assert os.path.getsize(f"{directory}/stdout") == 0
        assert _tree(f"{tmp_path}/jobs/J1") == ["attempt-1"]
        assert dirs.spares_ready == 3
    finally:
        await dirs.aclose()


async def test_existing_job_directory_falls_back_and_keeps_the_spare(tmp_path: Path) -> None:
    dirs = AttemptDirs(str(tmp_path), max_spares=2)
    try:
        dirs.make("J0", 1)
        await wait_until(lambda: dirs.spares_ready == 2, what="pool filled")
        first = dirs.make("J1", 1)
        Path(first, "stdout").write_text("old run")
        again = dirs.make("J1", 1)  # a rerun of the same attempt on this worker
        assert again == first and Path(again, "stdout").read_text() == "old run"  # the spawn truncates it
        second = dirs.make("J1", 2)
        assert _tree(f"{tmp_path}/jobs/J1") == ["attempt-1", "attempt-2"]
        assert _tree(second) == ["outputs"]  # the spawn creates stdout/stderr
        assert dirs.spares_ready >= 1
    finally:
        await dirs.aclose()


async def test_without_a_pool_directories_are_made_in_place(tmp_path: Path) -> None:
    dirs = AttemptDirs(str(tmp_path), max_spares=0)
    assert dirs.make("J1", 3) == f"{tmp_path}/jobs/J1/attempt-3"
    assert _tree(f"{tmp_path}/jobs/J1/attempt-3") == ["outputs"]
    assert not os.path.exists(f"{tmp_path}/.spare")
    await dirs.aclose()


async def test_leftover_spares_are_reused_and_half_built_ones_removed(tmp_path: Path) -> None:
    first = AttemptDirs(str(tmp_path), max_spares=3)
    first.make("J0", 1)
    await wait_until(lambda: first.spares_ready == 3, what="pool filled")
    await first.aclose()
    half_built = tmp_path / ".spare" / ".building-dead-1"
    (half_built / "attempt-1").mkdir(parents=True)

    second = AttemptDirs(str(tmp_path), max_spares=3)
    try:
        assert not half_built.exists()
        assert second.spares_ready == 3
        assert len(os.listdir(tmp_path / ".spare")) == 3  # adopted, none built anew
        second.make("J9", 1)
        assert _tree(f"{tmp_path}/jobs/J9/attempt-1") == ["outputs", "stderr", "stdout"]
        assert second.spares_ready == 2
    finally:
        await second.aclose()


def test_pool_doubles_on_each_miss_up_to_its_limit() -> None:
    targets = [0]
    for _ in range(5):
        targets.append(next_target(targets[-1], 16))
    assert targets == [0, 4, 8, 16, 16, 16]
    assert next_target(0, 2) == 2


async def test_burst_of_new_jobs_all_get_complete_directories(tmp_path: Path) -> None:
    dirs = AttemptDirs(str(tmp_path), max_spares=16)
    try:
        for i in range(200):
            assert _tree(dirs.make(f"B{i}", 1)) in (["outputs"], ["outputs", "stderr", "stdout"])
            if i % 20 == 0:
                await wait_until(lambda: dirs._filling is None, what="batch done")
        assert len(os.listdir(tmp_path / "jobs")) == 200
    finally:
        await dirs.aclose()
