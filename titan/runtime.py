"""Process-level plumbing shared by the entry points: the event loop and logging."""

from __future__ import annotations

import asyncio
import logging.config
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["configure_logging", "run"]

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


def configure_logging(level: str = "INFO", *, stream: Any = None) -> None:
    """One dictConfig for the whole ``titan`` logger tree, as the entry points want it."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "datefmt": "%H:%M:%S"}
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
