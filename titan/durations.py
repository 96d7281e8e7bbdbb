"""Durations as people type them on a command line: ``90``, ``45s``, ``30m``, ``12h``, ``7d``, ``2w``."""

from __future__ import annotations

import re
from typing import Final

from .errors import UsageError

__all__ = ["parse_duration"]

_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)
_UNIT_S: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """``90``, ``45s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds.

    Raises:
        UsageError: anything else.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise UsageError(f"bad duration '{text}': expected a number with an optional unit s, m, h, d or w (e.g. 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2).lower()]
