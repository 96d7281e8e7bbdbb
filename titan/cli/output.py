"""Where the commands print: a rich console on stdout, sized for what stdout is.

On a terminal rich follows its width. In a pipe or a file rich would assume 80
columns and fold table rows, which breaks ``grep`` and ``sort`` line by line;
there the console is made wide enough that a row stays one line, as ``ps`` and
``kubectl`` print. ``COLUMNS`` still wins when it is set.
"""

from __future__ import annotations

import os
import sys
from typing import Final

from rich.console import Console

__all__ = ["PIPE_WIDTH", "stdout_console"]

# wide enough for any row a table of jobs or workers prints; a panel sizes itself to its content
PIPE_WIDTH: Final = 1000


def stdout_console() -> Console:
    """A console on stdout: the terminal's width, or :data:`PIPE_WIDTH` when stdout is not a terminal."""
    if "COLUMNS" in os.environ or (sys.stdout is not None and sys.stdout.isatty()):
        return Console()
    return Console(width=PIPE_WIDTH)
