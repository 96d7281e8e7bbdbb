"""From a job's type and data to the argv that runs it.

``RUN`` payloads pick their interpreter by suffix: ``.py`` runs with this
worker's own ``sys.executable`` (a ``python3`` from PATH may be a pyenv shim
costing 120 ms a start), ``.sh`` with ``bash``, ``.jar`` with ``java -jar``,
anything else is executed directly and needs its exec bit.

``SHELL`` runs ``/bin/sh -c CMD``, except that a plain command -- no shell
metacharacters, no assignment, and a first word that is a program on PATH --
is split and exec'd directly: that saves a whole ``sh`` start per job, and the
result is the same because such a line means nothing special to the shell.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Sequence
from typing import Final

from titan.errors import TitanError

__all__ = ["SHELL", "CommandBuilder", "LaunchError"]

SHELL: Final = "/bin/sh"

# Any of these makes the line mean something to the shell (redirection, pipes,
# expansion, globbing, quoting with escapes, comments, history, grouping).
_SHELL_SYNTAX: Final = frozenset("|&;<>()$`\\*?[]#~{}!\n\t\r")

# Builtins and keywords: some also exist as programs (``cd``, ``command``),
# but only the shell's own version does what the line means.
_SHELL_WORDS: Final = frozenset(
    {
        ".", ":", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done", "elif", "else",
        "esac", "eval", "exec", "exit", "export", "fc", "fg", "fi", "for", "getopts", "hash", "if", "in",
        "jobs", "local", "read", "readonly", "return", "set", "shift", "source", "then", "times", "trap",
        "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
    }
)  # fmt: skip


class LaunchError(TitanError):
    """A job that cannot start here; the message is the attempt's one-line error."""

    code = "LAUNCH"


class CommandBuilder:
    """Builds argvs, caching ``shutil.which`` lookups (they stat every PATH entry)."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._which: dict[tuple[str, str | None], str | None] = {}

    def which(self, program: str, path: str | None = None) -> str | None:
        """Absolute path of ``program`` on ``path`` (default: the worker's PATH), or None."""
        search = self._path if path is None else path
        key = (program, search)
        try:
            return self._which[key]
        except KeyError:
            found = shutil.which(program, path=search)
            self._which[key] = found
            return found

    def for_file(self, file: str, args: Sequence[str]) -> list[str]:
        """The argv that runs a shipped script or binary (an absolute path).

        Raises:
            LaunchError: the interpreter it needs is not installed here.
        """
        name = file.rsplit("/", 1)[-1]
        suffix = name.rpartition(".")[2].lower() if "." in name else ""
        if suffix == "py":
            return [sys.executable, file, *args]
        if suffix == "sh":
            return [self._interpreter("bash", name), file, *args]
        if suffix == "jar":
            return [self._interpreter("java", name), "-jar", file, *args]
        return [file, *args]

    def for_shell(self, command: str, args: Sequence[str], path: str | None = None) -> list[str]:
        """The argv that runs an inline command line.

        Raises:
            LaunchError: the command is empty.
        """
        if not command.strip():
            raise LaunchError("empty shell command")
        direct = self._direct(command, path)
        if direct is not None:
            return [*direct, *args]
        if args:
            command = " ".join([command, *map(shlex.quote, args)])
        return [SHELL, "-c", command]

    def _direct(self, command: str, path: str | None) -> list[str] | None:
        if not _SHELL_SYNTAX.isdisjoint(command):
            return None
        # Without backslashes, ``$`` or backquotes, quotes mean the same to shlex
        # as to sh; without any quotes a plain split is shlex's answer, only faster.
        try:
            words = shlex.split(command) if ("'" in command or '"' in command) else command.split()
        except ValueError:
            return None  # an unclosed quote: the shell reports it in the job's stderr, exit 2
        first = words[0]
        if "=" in first or first in _SHELL_WORDS:
            return None
        if "/" in first and not first.startswith("/"):
            return None  # relative to the attempt directory, which is not our cwd yet
        program = self.which(first, path)
        if program is None or not program.startswith("/"):
            return None  # let the shell say "not found" in the job's stderr, exit 127
        return [program, *words[1:]]

    def _interpreter(self, program: str, script: str) -> str:
        found = self.which(program)
        if found is None:
            raise LaunchError(f"cannot run {script}: {program} is not installed on this worker")
        return found
