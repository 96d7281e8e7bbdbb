"""A cap on how many lines something outside our control can make us log.

Whoever can open a connection decides how often something goes wrong on it, so
what a listener writes about connections it has not admitted is bounded: a
flood costs ``burst`` lines per period, and the next line let through says how
many were left out meanwhile.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

__all__ = ["LogLimit"]


class LogLimit:
    """At most ``burst`` WARNING lines per ``period_s`` to ``logger``; the rest are counted."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        period_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.period_s = period_s
        self.left_out = 0  # lines dropped since the last one written
        self._clock = clock
        self._period_ends = -math.inf
        self._written = 0

    def warning(self, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless this period's lines are used up; True if it was written."""
        now = self._clock()
        if now >= self._period_ends:
            self._period_ends = now + self.period_s
            self._written = 0
        if self._written >= self.burst:
            self.left_out += 1
            return False
        self._written += 1
        if self.left_out:
            msg += " (%d similar lines left out before this one)"
            args = (*args, self.left_out)
            self.left_out = 0
        self.logger.warning(msg, *args)
        return True
