"""Process-level plumbing shared by the entry points: the event loop, logging, the GC."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging.config
import sys
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from protocol.text import one_line

__all__ = ["OneLineFormatter", "configure_logging", "paused_gc", "run", "tune_gc_for_service"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """Run ``main`` on uvloop where it is installed, else on stock asyncio.

    Subprocesses are never spawned through the loop's subprocess API (uvloop's
    forks and runs Python in the child), so uvloop is safe to use everywhere.
    """
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


# a log line may quote more than an ERROR does (what a worker reported), but not without bound
_LOG_LINE_CHARS = 8000


class OneLineFormatter(logging.Formatter):
    """Each record on one line, whatever its message quotes.

    Messages quote what peers sent: a worker's name, a job id from its report, a client's HELLO. With a
    newline in one, a peer could write lines of its own into the log that read like the master's.
    A traceback still follows on lines of its own: it is appended after the message is formatted.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record), _LOG_LINE_CHARS)


def configure_logging(level: str = "INFO", *, stream: Any = None) -> None:
    """One dictConfig for the whole ``titan`` logger tree, as the entry points want it."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "plain": {
                    "()": OneLineFormatter,
                    "format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                    "datefmt": "%H:%M:%S",
                }
            },
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "plain",
                    "stream": stream or sys.stderr,
                }
            },
            "loggers": {"titan": {"handlers": ["stderr"], "level": level.upper(), "propagate": False}},
        }
    )


# Young-generation threshold for the long-running processes (the default is 700).
SERVICE_GC_THRESHOLD = 50_000


def tune_gc_for_service() -> None:
    """Collect the young generation every 50 000 new containers instead of every 700.

    A master admits a job with a few dozen small containers (the job, its
    lists, the frame's dicts), nearly all of which live as long as the job.
    At the default threshold the collector ran every ~15 submissions and
    re-examined survivors again and again: about a quarter of the master's
    time per submission. Cycles are still collected, just in larger, rarer
    sweeps; the memory they hold meanwhile is a few megabytes at most.
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(SERVICE_GC_THRESHOLD, middle, old)


@contextlib.contextmanager
def paused_gc(when: bool = True, *, keep: bool = False) -> Iterator[None]:
    """Hold the cyclic garbage collector off for a bulk build (``when`` is false: do nothing).

    Building a 100 000-job DAG allocates about a million containers; the
    collector would rescan the growing heap again and again while they are made
    (more than half the time of admitting such a DAG). They are all kept anyway,
    so nothing is lost by collecting once, afterwards.

    ``keep``: what was built is long-lived (the master's job table), so instead
    of that one collection over a million young objects (a quarter of a second)
    everything alive is moved out of the collector's sight (``gc.freeze``).
    Frozen objects are still freed when their last reference goes; only cycles
    among them would never be found, and jobs form none.
    """
    if not when or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if keep:
            gc.freeze()
        gc.enable()
