"""Where the commands print: a rich console on stdout, sized for what stdout is.

On a terminal rich follows its width. In a pipe or a file rich would assume 80
columns and fold table rows, which breaks ``grep`` and ``sort`` line by line;
there the console is made wide enough that a row stays one line, as ``ps`` and
``kubectl`` print, and the spaces rich pads each line with up to the table's
width are trimmed off. ``COLUMNS`` still wins when it is set.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any, Final, cast

from rich.console import Console

__all__ = ["PIPE_WIDTH", "TrimmedStdout", "stdout_console"]

# wide enough for any row a table of jobs or workers prints; a panel sizes itself to its content
PIPE_WIDTH: Final = 1000


def stdout_console() -> Console:
    """A console on stdout: the terminal's width, or :data:`PIPE_WIDTH` when stdout is not a terminal."""
    if "COLUMNS" in os.environ or (sys.stdout is not None and sys.stdout.isatty()):
        return Console()
    return Console(width=PIPE_WIDTH, file=cast(IO[str], TrimmedStdout()))  # it writes as a text file does


class TrimmedStdout:
    """``sys.stdout`` (whatever it is at the time of each write) with trailing spaces cut off every line."""

    def __init__(self) -> None:
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        if lines:
            sys.stdout.write("".join(f"{line.rstrip(' ')}\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self._partial:
            sys.stdout.write(self._partial)
            self._partial = ""
        sys.stdout.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.stdout, name)
