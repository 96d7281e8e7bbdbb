"""Retry policy: exponential backoff with jitter, or the dead-letter queue.

A pure function of the attempt count and a random source, so tests pass a
seeded :class:`random.Random` and get the same answers every time.
"""

from __future__ import annotations

import math
import random
from typing import Final

__all__ = ["DEFAULT_FACTOR", "backoff_s", "next_retry"]

DEFAULT_FACTOR: Final = 2.0


def backoff_s(attempt: int, *, base_s: float, factor: float, cap_s: float, rng: random.Random) -> float:
    """The wait before retrying after failed attempt number ``attempt`` (1-based).

    "Equal jitter": half the exponential step is fixed, half is random, so
    retries of many jobs that failed together spread out but never come back
    at once (no zero delay).
    """
    try:
        grown = base_s * factor ** max(0, attempt - 1)
    except OverflowError:  # a large factor (any float >= 1 is allowed) after a few attempts: past any cap
        grown = math.inf
    step = min(cap_s, grown)
    return step / 2 + rng.random() * step / 2


def next_retry(
    attempts: int,
    max_attempts: int,
    *,
    base_s: float,
    cap_s: float,
    rng: random.Random,
    factor: float = DEFAULT_FACTOR,
) -> float | None:
    """Seconds to wait before the next attempt, or None: out of attempts, dead letter.

    Args:
        attempts: attempts used so far in this round (the one that just failed included).
        max_attempts: the job's budget for the round.
    """
    if attempts >= max_attempts:
        return None
    return backoff_s(attempts, base_s=base_s, factor=factor, cap_s=cap_s, rng=rng)
