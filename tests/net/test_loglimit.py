"""``LogLimit``: a bounded number of lines per period, and a count of what was left out."""

from __future__ import annotations

import logging

import pytest

from titan.net.loglimit import LogLimit


def test_at_most_burst_lines_per_period_then_the_count_of_those_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limit = LogLimit(logging.getLogger("test.loglimit"), burst=2, period_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        written = [limit.warning("line %d", i) for i in range(5)]
        assert written == [True, True, False, False, False]
        assert limit.left_out == 3
        now[0] = 10.0  # a new period
        assert limit.warning("line %d", 5)
        assert limit.warning("line %d", 6)
    assert [r.getMessage() for r in caplog.records] == [
        "line 0",
        "line 1",
        "line 5 (3 similar lines left out before this one)",
        "line 6",
    ]
    assert limit.left_out == 0
