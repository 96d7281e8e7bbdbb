"""The process primitives the worker's attempts and services share.

A process is spawned in a session of its own (so its pid is also its process
group id), with stdin on /dev/null, stdout and stderr on files in its
directory, and the signals Python ignores put back to their defaults. Its exit
is watched with a pidfd on the event loop; once that pidfd is readable the
leader is a zombie that still pins the group id, which is the moment to clear
out whatever it left in its group and then reap it.

The spawn itself goes through CPython's own primitive, the one ``subprocess``
and stock asyncio use (``_posixsubprocess.fork_exec``: vfork, then a few
syscalls and exec in C; no Python runs in the child). glibc's
``posix_spawn``, the fallback, costs more while the parent waits: its child
reads and resets the disposition of every signal, some 130 syscalls before
the exec against some 70 (64 of them reading a disposition). Side by side on
the same machine, spawn-to-exit of ``/bin/true`` took 0.66-0.77 ms against
0.75-0.85 ms, and 4 spawns in flight reaped from as many to 20 % more per
second (the children's own start-up is most of that cost, and the same for
both). ``fork_exec`` is not a public interface, so it is used only in the
shapes we know (Python 3.11 to 3.14), checked once by a call that fails its
argument checks before any fork; anything else falls back to
``os.posix_spawn``.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

__all__ = [
    "FORK_EXEC",
    "RESET_SIGNALS",
    "SPAWN_METHOD",
    "Environment",
    "fork_exec_spawn",
    "reap",
    "signal_group",
    "spawn_in",
]

# Python ignores SIGPIPE (and SIGXFSZ); a job must get the default back, or
# `yes | head` in it would spin on EPIPE instead of ending.
RESET_SIGNALS: Final = (signal.SIGPIPE, signal.SIGXFSZ)
_TRUNCATE: Final = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
_APPEND: Final = os.O_WRONLY | os.O_CREAT | os.O_APPEND
# how much of a child's report on a failed exec we read ("OSError:<hex errno>:<note>")
_ERROR_REPORT_BYTES: Final = 1024
_FS_ENCODING: Final = sys.getfilesystemencoding()
_FS_ERRORS: Final = sys.getfilesystemencodeerrors()


def _find_fork_exec() -> Callable[..., int] | None:
    """``_posixsubprocess.fork_exec`` if its arguments are the ones :func:`fork_exec_spawn` passes, else None."""
    try:
        import _posixsubprocess
    except ImportError:
        return None
    fork_exec: Callable[..., int] = _posixsubprocess.fork_exec
    # 3.11-3.13 end with allow_vfork; 3.14 dropped it (vfork is always allowed there)
    tail: tuple[bool, ...] = () if sys.version_info >= (3, 14) else (True,)

    def call(*args: Any) -> int:
        return fork_exec(*args, *tail)

    # the shape fork_exec_spawn uses, but with no error pipe: with close_fds=True that stops at the
    # precondition "errpipe_write must be >= 3", before any fork
    probe = _fork_exec_arguments([b"/"], None, None, stdin=-1, stdout=-1, stderr=-1, pipe=(-1, -1), close_fds=True)
    try:
        pid = call(*probe)
    except ValueError as exc:
        return call if "errpipe_write" in str(exc) else None
    except Exception:  # a TypeError for another arity, or anything new: not an interface we know
        return None
    _reap_quietly(pid)  # an interface that forked anyway is not one we know
    return None


def _fork_exec_arguments(
    arguments: list[bytes],
    cwd: str | None,
    environment: list[bytes] | None,
    *,
    stdin: int,
    stdout: int,
    stderr: int,
    pipe: tuple[int, int],
    close_fds: bool,
) -> tuple[Any, ...]:
    """The positional arguments of ``fork_exec`` up to ``preexec_fn``: the one place that knows their order."""
    report_end, error_end = pipe
    # restore_signals and call_setsid on; no process group, gid, groups, uid, umask or preexec_fn
    pass_fds = (error_end,) if error_end >= 0 else ()
    return (arguments, [arguments[0]], close_fds, pass_fds, cwd, environment,
            stdin, -1, -1, stdout, -1, stderr, report_end, error_end,
            True, True, -1, None, None, None, -1, None)  # fmt: skip


def _reap_quietly(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# called with the 22 arguments ``fork_exec`` takes in 3.14 (args ... preexec_fn); None where unknown
FORK_EXEC: Final = _find_fork_exec()
SPAWN_METHOD: Final = "fork_exec" if FORK_EXEC is not None else "posix_spawn"


class Environment(Mapping[str, str]):
    """An environment checked and encoded once, for many spawns: each encodes only what it adds.

    A worker's base environment is the same for every job, and encoding it
    (some 40 variables on a plain machine, hundreds under some CI systems) cost
    more than everything else the worker does in Python before a spawn.

    Raises:
        ValueError: a variable's name is empty or holds "=".
    """

    __slots__ = ("_variables", "_encoded")

    def __init__(self, variables: Mapping[str, str]) -> None:
        self._variables = dict(variables)
        self._encoded = {name: _encode_variable(name, value) for name, value in self._variables.items()}

    def __getitem__(self, name: str) -> str:
        return self._variables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._variables)

    def __len__(self) -> int:
        return len(self._variables)

    def encoded(self, extra: Mapping[str, str] | None = None) -> list[bytes]:
        """``NAME=value`` entries for exec: these variables, with ``extra``'s added or replacing them."""
        if not extra:
            return list(self._encoded.values())
        merged = self._encoded.copy()
        for name, value in extra.items():
            merged[name] = _encode_variable(name, value)
        return list(merged.values())


def _encode_variable(name: str, value: str) -> bytes:
    if not name or "=" in name:
        raise ValueError(f"illegal environment variable name {name!r}")
    # os.fsencode, spelled out: five times faster over a whole environment
    return f"{name}={value}".encode(_FS_ENCODING, _FS_ERRORS)


def spawn_in(
    argv: Sequence[str],
    env: Mapping[str, str],
    directory: str,
    *,
    home_fd: int,
    append: bool = False,
    extra_env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` in ``directory`` as the leader of a new session; returns its pid.

    The child's environment is ``env`` with ``extra_env`` added (an
    :class:`Environment` is encoded once for all spawns; a plain mapping at each).
    ``home_fd`` is the caller's working directory, which the ``posix_spawn``
    fallback leaves and returns to (see :func:`_posix_spawn_in`).

    Raises:
        OSError: the program could not be started (a NUL in ``argv`` or the
            environment, or "=" in a variable's name, is EINVAL).
    """
    try:
        if FORK_EXEC is not None:
            base = env if isinstance(env, Environment) else Environment(env)
            return _fork_exec_in(argv, base.encoded(extra_env), directory, append)
        return _posix_spawn_in(argv, {**env, **(extra_env or {})}, directory, home_fd, append)
    except ValueError as exc:  # an embedded NUL, or "=" in a variable's name
        raise OSError(errno.EINVAL, str(exc)) from exc


def _fork_exec_in(argv: Sequence[str], environment: list[bytes], directory: str, append: bool) -> int:
    flags = (_APPEND if append else _TRUNCATE) | os.O_CLOEXEC
    arguments = [arg.encode(_FS_ENCODING, _FS_ERRORS) for arg in argv]
    stdout = os.open(f"{directory}/stdout", flags, 0o644)
    try:
        stderr = os.open(f"{directory}/stderr", flags, 0o644)
        try:
            return fork_exec_spawn(
                arguments, environment, cwd=directory, stdin=_dev_null(), stdout=stdout, stderr=stderr
            )
        finally:
            os.close(stderr)
    finally:
        os.close(stdout)


def fork_exec_spawn(
    arguments: list[bytes],
    environment: list[bytes],
    *,
    cwd: str | None = None,
    stdin: int = -1,
    stdout: int = -1,
    stderr: int = -1,
    close_fds: bool = True,
) -> int:
    """vfork+exec ``arguments`` in a new session through :data:`FORK_EXEC`; returns the pid.

    ``stdin``/``stdout``/``stderr`` of -1 are inherited. ``close_fds=False``
    leaves the caller's inheritable descriptors to the child (the least a spawn
    can do, as ``bench.spawn_limit`` measures it).

    Raises:
        OSError: the child could not exec (its errno, as ``subprocess`` reports it).
        RuntimeError: this Python has no ``fork_exec`` of a shape we know.
    """
    fork_exec = FORK_EXEC
    if fork_exec is None:
        raise RuntimeError("no fork_exec of a known shape in this Python: use os.posix_spawn")
    report_end, error_end = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            pid = fork_exec(
                *_fork_exec_arguments(
                    arguments, cwd, environment, stdin=stdin, stdout=stdout, stderr=stderr,
                    pipe=(report_end, error_end), close_fds=close_fds,
                )
            )  # fmt: skip
        finally:
            os.close(error_end)
        # EOF once the child has exec'd (its copy is close-on-exec); a report if it could not
        report = os.read(report_end, _ERROR_REPORT_BYTES)
    finally:
        os.close(report_end)
    if report:
        _reap_quietly(pid)  # it wrote why and exited
        raise _child_error(report, os.fsdecode(arguments[0]), cwd or os.getcwd())
    return pid


def _child_error(report: bytes, program: str, directory: str) -> OSError:
    """The OSError a child described on its error pipe, as ``subprocess`` decodes it."""
    kind, _, rest = report.partition(b":")
    hex_errno, _, note = rest.partition(b":")
    try:
        number = int(hex_errno, 16)
    except ValueError:
        number = 0
    if kind != b"OSError" or not number:
        return OSError(errno.EIO, f"the child failed before exec: {report.decode(errors='replace')}")
    # "noexec": it failed before the exec, in the chdir to its directory
    return OSError(number, os.strerror(number), directory if note == b"noexec" else program)


def _posix_spawn_in(argv: Sequence[str], env: Mapping[str, str], directory: str, home_fd: int, append: bool) -> int:
    """``os.posix_spawn`` in ``directory``.

    Python 3.11's ``posix_spawn`` cannot set the child's working directory, so
    this changes the caller's around the (synchronous) call and returns to
    ``home_fd``: safe on a single-threaded event loop, which is why the worker
    only ever uses absolute paths.
    """
    flags = _APPEND if append else _TRUNCATE
    # The child starts in ``directory``: short relative names, and stdin from a /dev/null kept
    # open, spare it path lookups while the vfork'ed parent waits.
    actions = [
        (os.POSIX_SPAWN_DUP2, _dev_null(), 0),
        (os.POSIX_SPAWN_OPEN, 1, "stdout", flags, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, "stderr", flags, 0o644),
    ]
    os.chdir(directory)
    try:
        return os.posix_spawn(
            argv[0], list(argv), dict(env), file_actions=actions, setsid=True, setsigdef=RESET_SIGNALS
        )
    finally:
        os.fchdir(home_fd)


@functools.cache
def _dev_null() -> int:
    """A read-only descriptor of /dev/null, opened once per process (close-on-exec: no job inherits it)."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def signal_group(pgid: int, signum: int) -> None:
    """Signal a whole process group; a group that is already gone is not an error."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def reap(pid: int) -> int | None:
    """Clear out the group of a leader whose pidfd turned readable, then reap it.

    Returns its exit code (negative for a signal), or None if something else
    reaped it first.
    """
    signal_group(pid, signal.SIGKILL)
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped == 0:  # cannot happen after a readable pidfd; the SIGKILL above bounds the wait
            reaped, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)
