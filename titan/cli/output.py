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
from typing import IO, Any, BinaryIO, Final, cast

from rich.console import Console, RenderableType
from rich.measure import Measurement

__all__ = ["PIPE_WIDTH", "PipeAwareConsole", "TrimmedStdout", "print_table", "stdout_console", "write_all"]

# wide enough for any row a table of jobs or workers prints; a panel sizes itself to its content
PIPE_WIDTH: Final = 1000


def write_all(stream: BinaryIO, data: bytes) -> None:
    """Write every byte of ``data``: a buffered writer returns short, without an error, when the
    reader of a pipe leaves in the middle of a large write; the next write raises BrokenPipeError."""
    view = memoryview(data)
    while view:
        view = view[stream.write(view) :]


class PipeAwareConsole(Console):
    """A console whose reader going away (``| head``) is a BrokenPipeError for ``main`` to end on
    with SIGPIPE's status, as every other write's is; rich would exit 1 on its own."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(32, "the reader of the output went away")


def stdout_console() -> Console:
    """A console on stdout: the terminal's width, or :data:`PIPE_WIDTH` when stdout is not a terminal."""
    if sys.stdout is not None and sys.stdout.isatty():
        return PipeAwareConsole()
    trimmed = cast(IO[str], TrimmedStdout())  # it writes as a text file does
    if "COLUMNS" in os.environ:
        return PipeAwareConsole(file=trimmed)  # rich takes the width from COLUMNS
    return PipeAwareConsole(width=PIPE_WIDTH, file=trimmed)


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


def print_table(console: Console, table: RenderableType) -> None:
    """Print ``table``; one that cannot fit the console's width whole is printed wider, not squeezed.

    rich fits a table to the width by cutting its columns, so a 52-character job id on an
    80-column terminal left 'STAT' and 'TRIE' of the headers and no DATA at all. A row longer
    than the screen that the terminal wraps loses nothing.
    """
    needed = Measurement.get(console, console.options.update_width(PIPE_WIDTH), table).minimum
    if needed <= console.width:
        console.print(table)
        return
    wide = Console(
        file=console.file,
        width=needed,
        color_system=console.color_system,  # type: ignore[arg-type]
        force_terminal=console.is_terminal,
        highlight=False,
    )
    wide.print(table)
