"""The autoscaler's decisions: pure, driven with explicit times."""

from __future__ import annotations

import pytest

from titan.config import AutoscaleSettings
from titan.master.autoscaler import Autoscaler, Retire, Spawn, WorkerView

SETTINGS = AutoscaleSettings(
    max_workers=4, max_children=2, max_depth=2, scale_up_after_s=1.0, cooldown_s=1.0, idle_retire_s=5.0, max_step=2
)


def view(worker_id: str, load: int = 0, capacity: int = 1, depth: int = 0, children: int = 0, auto: bool = False):
    return WorkerView(worker_id, f"[{worker_id}]", capacity, load, depth, children, auto)


def test_no_pressure_no_decision() -> None:
    scaler = Autoscaler(SETTINGS)
    assert scaler.decide(0, [view("a")], now=0.0) == []
    assert scaler.decide(1, [view("a")], now=10.0) == []  # one job, one free slot


def test_pressure_must_last_before_a_spawn() -> None:
    scaler = Autoscaler(SETTINGS)
    busy = [view("a", load=1)]
    assert scaler.decide(5, busy, now=0.0) == []
    assert scaler.decide(5, busy, now=0.5) == []
    decisions = scaler.decide(5, busy, now=1.0)
    assert [type(d) for d in decisions] == [Spawn, Spawn]  # max_step
    assert all(d.parent == "a" for d in decisions if isinstance(d, Spawn))
    assert "5 job(s) ready, 0 free slot(s)" in decisions[0].reason


def test_a_short_burst_does_not_grow_the_cluster() -> None:
    scaler = Autoscaler(SETTINGS)
    assert scaler.decide(5, [view("a", load=1)], now=0.0) == []
    assert scaler.decide(0, [view("a", load=1)], now=0.6) == []  # the pressure went away
    assert scaler.decide(5, [view("a", load=1)], now=1.2) == []  # and started again: the clock restarts


def test_pending_spawns_count_as_free_slots_until_they_register_or_time_out() -> None:
    scaler = Autoscaler(SETTINGS)
    busy = [view("a", load=1)]
    scaler.decide(2, busy, now=0.0)
    assert len(scaler.decide(2, busy, now=1.0)) == 2
    assert scaler.decide(2, busy, now=5.0) == []  # two children on their way cover two jobs
    scaler.registered("a")
    assert len(scaler.pending) == 1
    # the one that never registered stops counting after spawn_timeout_s
    assert len(scaler.decide(2, busy, now=1.0 + SETTINGS.spawn_timeout_s + 1)) == 0  # pressure clock restarts
    assert len(scaler.decide(2, busy, now=1.0 + SETTINGS.spawn_timeout_s + 2.5)) == 2


def test_cooldown_between_spawns() -> None:
    settings = AutoscaleSettings(max_workers=10, max_children=10, scale_up_after_s=0, cooldown_s=2, max_step=1)
    scaler = Autoscaler(settings)
    busy = [view("a", load=1)]
    assert len(scaler.decide(9, busy, now=0.0)) == 1
    assert scaler.decide(9, busy, now=1.0) == []
    assert len(scaler.decide(9, busy, now=2.0)) == 1


def test_limits_on_total_workers_children_and_depth() -> None:
    settings = AutoscaleSettings(max_workers=3, max_children=1, max_depth=1, scale_up_after_s=0, cooldown_s=0)
    scaler = Autoscaler(settings)
    workers = [view("a", load=1), view("b", load=1, depth=1, auto=True), view("c", load=1)]
    assert scaler.decide(9, workers, now=0.0) == []  # three workers already: the cap
    workers = [view("a", load=1, children=1), view("b", load=1, depth=1)]
    assert scaler.decide(9, workers, now=1.0) == []  # a has its one child, b is at the depth limit
    workers = [view("a", load=1), view("b", load=1, depth=1)]
    decisions = scaler.decide(9, workers, now=2.0)
    assert [d.parent for d in decisions if isinstance(d, Spawn)] == ["a"]


def test_the_least_loaded_worker_with_room_is_the_parent() -> None:
    settings = AutoscaleSettings(max_workers=10, scale_up_after_s=0, cooldown_s=0, max_step=1)
    scaler = Autoscaler(settings)
    workers = [view("a", load=4, capacity=4), view("b", load=1, capacity=4), view("c", load=3, capacity=4)]
    (decision,) = scaler.decide(20, workers, now=0.0)
    assert isinstance(decision, Spawn) and decision.parent == "b"


def test_idle_autoscaled_children_are_retired_others_never() -> None:
    scaler = Autoscaler(SETTINGS)
    workers = [view("root"), view("auto", depth=1, auto=True), view("deployed", depth=1), view("busy", 1, 1, 1)]
    assert scaler.decide(0, workers, now=0.0) == []
    assert scaler.decide(0, workers, now=4.9) == []
    decisions = scaler.decide(0, workers, now=5.0)
    assert decisions == [Retire("auto", "idle for 5.0s with nothing queued")]
    assert scaler.history[-1]["action"] == "retire" and scaler.history[-1]["worker"] == "auto"


def test_work_resets_the_idle_clock_and_a_queue_blocks_retiring() -> None:
    scaler = Autoscaler(SETTINGS)
    scaler.decide(0, [view("auto", depth=1, auto=True)], now=0.0)
    scaler.decide(0, [view("auto", load=1, depth=1, auto=True)], now=3.0)
    assert scaler.decide(0, [view("auto", depth=1, auto=True)], now=6.0) == []
    assert scaler.decide(1, [view("auto", depth=1, auto=True)], now=20.0) == []  # a job waits: keep it
    assert scaler.decide(0, [view("auto", depth=1, auto=True, children=1)], now=30.0) == []  # has a child


def test_extra_names_limits_and_decisions() -> None:
    scaler = Autoscaler(SETTINGS)
    scaler.decide(3, [view("a", load=1)], now=0.0)
    scaler.decide(3, [view("a", load=1)], now=1.0)
    extra = scaler.extra()
    assert extra["enabled"] is True
    assert extra["limits"]["max_workers"] == 4
    assert extra["pending_spawns"] == 2
    assert [d["action"] for d in extra["decisions"]] == ["spawn", "spawn"]


@pytest.mark.parametrize(
    "changes",
    [{"max_workers": 0}, {"max_children": 0}, {"max_depth": 0}, {"cooldown_s": -1}, {"interval_s": 0}],
)
def test_bad_settings_are_refused_with_one_line(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="autoscale") as info:
        AutoscaleSettings(**changes)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
