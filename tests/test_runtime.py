"""The entry points' logging: one line per record, whatever a peer made it quote."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from titan.runtime import configure_logging


@pytest.fixture
def titan_log() -> Iterator[io.StringIO]:
    """configure_logging() into a buffer; the ``titan`` logger is put back as the other tests expect it."""
    logger = logging.getLogger("titan")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer)
    yield buffer
    logger.handlers[:], logger.level, logger.propagate = saved


def test_a_quoted_newline_cannot_forge_a_log_line(titan_log: io.StringIO) -> None:
    name = "w1\n06:00:00 ERROR   titan.master.server: forged"
    logging.getLogger("titan.master.server").info("%s registered (capacity %d)", name, 2)

    [line] = titan_log.getvalue().splitlines()
    assert line.endswith("w1\\n06:00:00 ERROR   titan.master.server: forged registered (capacity 2)")


def test_a_traceback_keeps_its_lines(titan_log: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("titan.test").exception("handler failed")

    lines = titan_log.getvalue().splitlines()
    assert lines[0].endswith("handler failed") and lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: boom"
