"""Every SPAWN is held to --max-workers (spawns on their way included) and --max-depth."""

from __future__ import annotations

import dataclasses

import pytest

from protocol import JobSpec, Message, Register
from titan.config import AutoscaleSettings
from titan.errors import UsageError
from titan.master.scaling import Scaling

from .helpers import make_state, register


def test_spawns_stop_at_max_workers_counting_those_on_the_way_and_at_max_depth() -> None:
    state = make_state()
    register(state, "w1", port=8081)
    now = [100.0]
    asked: list[tuple[str, Message]] = []
    scaling = Scaling(
        state,
        send=lambda worker_id, message: asked.append((worker_id, message)) is None,
        apply=lambda effects: None,
        clock=lambda: now[0],
        max_workers=2,
        max_depth=1,
    )
    first = scaling.spawn("w1", port=9001, capacity=1)
    with pytest.raises(UsageError, match=r"^the cluster has 1 worker and 1 on the way, as many as --max-workers 2"):
        scaling.spawn("w1", port=9002, capacity=1)
    # a spawn that never registers stops counting after spawn_timeout_s (30 s by default)
    now[0] += 31
    scaling.spawn("w1", port=9002, capacity=1)
    assert [worker_id for worker_id, _ in asked] == ["w1", "w1"]
    # the first child registers at last: two workers, one on the way
    child = Register(
        worker_id="w1/9001", name="[9001]", host="h", port=9001, capacity=1, skills=["GENERAL"], parent="w1",
        spawn_id=first.spawn_id,
    )  # fmt: skip
    state.worker_registered(child, now[0])
    scaling.registered(child)
    with pytest.raises(UsageError, match="the cluster has 2 workers and 1 on the way"):
        scaling.spawn("w1", port=9003, capacity=1)
    # and a child of a child would be deeper than --max-depth allows, whatever the count
    scaling.max_workers = 10
    with pytest.raises(UsageError, match=r"^a child of \[9001\] would be at depth 2, past --max-depth 1$"):
        scaling.spawn("w1/9001", port=9004, capacity=1)


def test_a_deployed_child_worker_is_held_to_the_same_bounds_and_counted_on_its_way() -> None:
    state = make_state()
    register(state, "w1", port=8081)
    scaling = Scaling(
        state, send=lambda worker_id, message: True, apply=lambda effects: None, clock=lambda: 100.0,
        max_workers=2, max_depth=1,
    )  # fmt: skip
    scaling.admit_deployed_child("w1", "CHILD")
    with pytest.raises(UsageError, match="the cluster has 1 worker and 1 on the way"):
        scaling.admit_deployed_child("w1", "OTHER")
    child = Register(
        worker_id="w1/9001", name="[9001]", host="h", port=9001, capacity=1, skills=["GENERAL"], parent="w1",
        spawn_id="CHILD",
    )  # fmt: skip
    state.worker_registered(child, 100.0)
    scaling.registered(child)
    scaling.max_workers = 10
    scaling.admit_deployed_child("w1", "THIRD")
    with pytest.raises(UsageError, match=r"^a child of \[9001\] would be at depth 2, past --max-depth 1$"):
        scaling.admit_deployed_child("w1/9001", "DEEP")


def test_the_autoscaler_plans_within_the_masters_bounds_and_forgets_a_refused_spawn() -> None:
    state = make_state()
    register(state, "w1", port=8081)
    now = [100.0]
    asked: list[str] = []
    scaling = Scaling(
        state,
        send=lambda worker_id, message: asked.append(worker_id) is None,
        apply=lambda effects: None,
        clock=lambda: now[0],
        settings=AutoscaleSettings(max_workers=8, max_depth=2, scale_up_after_s=0, cooldown_s=0, max_step=4),
        max_workers=2,
        max_depth=1,
    )
    autoscaler = scaling.autoscaler
    assert autoscaler is not None
    assert (autoscaler.settings.max_workers, autoscaler.settings.max_depth) == (2, 1)
    for _ in range(6):
        state.submit(JobSpec(type="SHELL", data="sleep 1"), now[0])
    scaling.check()
    assert asked == ["w1"]  # one child: two workers in all, as --max-workers 2 allows
    # a person's spawn takes the last place before the autoscaler's next look: that spawn is refused,
    # and the autoscaler does not count a child that was never asked for
    scaling.max_workers = 3
    scaling.spawn("w1", port=0, capacity=1)
    autoscaler.settings = dataclasses.replace(autoscaler.settings, max_workers=3)
    now[0] += 1
    scaling.check()
    assert asked == ["w1", "w1"]
    assert len(autoscaler.pending) == 1
    assert autoscaler.history[-1]["action"] == "refused"
    assert (
        autoscaler.history[-1]["reason"]
        == "the cluster has 1 worker and 2 on the way, as many as --max-workers 3 allows"
    )
