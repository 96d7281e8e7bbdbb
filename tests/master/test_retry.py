"""Backoff with jitter, with a seeded random source."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from titan.master import backoff_s, next_retry


def test_backoff_grows_exponentially_within_jitter_bounds_and_caps() -> None:
    rng = random.Random(42)
    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        delay = backoff_s(attempt, base_s=1.0, factor=2.0, cap_s=10.0, rng=rng)
        assert step / 2 <= delay <= step


def test_same_seed_same_delays() -> None:
    first = [next_retry(1, 3, base_s=0.5, cap_s=5, rng=random.Random(3)) for _ in range(3)]
    again = [next_retry(1, 3, base_s=0.5, cap_s=5, rng=random.Random(3)) for _ in range(3)]
    assert first == again
    assert first[0] == pytest.approx(0.25 + random.Random(3).random() * 0.25)


def test_jitter_spreads_retries() -> None:
    rng = random.Random(1)
    delays = {backoff_s(2, base_s=1.0, factor=2.0, cap_s=60, rng=rng) for _ in range(20)}
    assert len(delays) == 20


def test_out_of_attempts_means_dead_letter() -> None:
    rng = random.Random(0)
    assert next_retry(2, 3, base_s=1, cap_s=10, rng=rng) is not None
    assert next_retry(3, 3, base_s=1, cap_s=10, rng=rng) is None
    assert next_retry(1, 1, base_s=1, cap_s=10, rng=rng) is None


@given(
    attempt=st.integers(1, 10_000),
    base_s=st.floats(min_value=5e-324, max_value=1e308),
    factor=st.floats(min_value=1.0, max_value=1e308),
    cap_s=st.floats(min_value=5e-324, max_value=1e308),
)
def test_any_policy_a_job_may_ask_for_gives_a_delay_within_its_cap(
    attempt: int, base_s: float, factor: float, cap_s: float
) -> None:
    # JobSpec takes any finite base and cap > 0 and any factor >= 1: powers of those overflow a float
    delay = backoff_s(attempt, base_s=base_s, factor=factor, cap_s=cap_s, rng=random.Random(0))
    assert 0 <= delay <= cap_s
