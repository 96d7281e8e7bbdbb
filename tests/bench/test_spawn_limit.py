"""Keep the spawn ceiling benchmark runnable: toy sizes, the shape of its answer, no timing asserts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.cluster import REPO
from bench.spawn_limit import bare_spawns, ceiling, raw_latency, raw_rate
from titan.worker.process import FORK_EXEC


async def test_one_at_a_time_spawns_give_one_sample_each() -> None:
    samples = await raw_latency(5)
    assert len(samples) == 5 and all(sample > 0 for sample in samples)
    assert len(await raw_latency(3, idle_s=0.001)) == 3
    assert await raw_rate(8, 2) > 0


def test_every_bare_spawn_really_runs_true() -> None:
    spawns = bare_spawns()
    assert set(spawns) == ({"posix_spawn", "fork_exec"} if FORK_EXEC is not None else {"posix_spawn"})
    for spawn in spawns.values():
        _, status = os.waitpid(spawn(), 0)
        assert os.waitstatus_to_exitcode(status) == 0


async def test_the_ceiling_is_the_best_method() -> None:
    reading = await ceiling(8, 2, 3)
    assert set(reading.per_method) == set(bare_spawns())
    assert reading.spawn_per_s == max(reading.per_method.values())
    assert reading.per_method[reading.method] == reading.spawn_per_s
    assert 0 < reading.latency_p50_ms and 0 < reading.idle_latency_p50_ms


def test_the_command_ends_with_one_json_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.spawn_limit", "--n", "20", "--runs", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["spawn_per_s"] > 0 and summary["runner_per_s"] > 0
    assert summary["spawn_per_s"] == summary[f"{summary['spawn_method']}_per_s"]  # one run: its best
    assert summary["spawn_latency_p50_ms"] > 0 and summary["spawn_latency_idle_p50_ms"] > 0
