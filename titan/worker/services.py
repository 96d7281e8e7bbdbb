"""Services: long-running processes a worker keeps alive (DEPLOY, child workers).

Theory of operation
-------------------
A :class:`Service` is one supervised command. It is spawned like a task
(``spawn_in``, in a session of its own, so its pid is its process group and a
stop reaches everything it started; stdin ``/dev/null``; stdout and stderr
appended to files in its directory, so restarts add to one log) and its exit is
watched through a pidfd on the event loop.

It counts as *up* once it has stayed alive for ``settle_s``, or, when it has a
port, once that port accepts a TCP connection. Some services are declared up by
someone else (a child worker is up when the master has its REGISTER): those set
``probe=False`` and the owner calls :meth:`Service.mark_up`.

An exit nobody asked for is a crash unless the code is 0 (a service that
decides to end has ended): the service is started again after a backoff that
doubles from ``restart_backoff_s`` up to ``restart_backoff_cap_s``, at most
``max_restarts`` times in a row; then it ends as failed. A run that lasted
``stable_s`` (10 minutes) before its crash starts the count and the backoff
afresh: a service that crashes once a week is not given up on the sixth week. :meth:`Service.stop` ends it on
purpose: SIGTERM to the group (after ``patience_s``, which gives a draining child
worker time to leave on its own), SIGKILL after ``kill_grace_s``.

Every change is told to ``on_event`` (STARTED, UP, RESTARTING, ENDED); the
owner turns them into reports. :attr:`Service.ended` resolves with a
:class:`ServiceEnd` once the service will not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .process import reap, signal_group, spawn_in

__all__ = ["Service", "ServiceEnd", "ServiceEvent", "ServicePolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """How services are judged up and how crashes are handled."""

    settle_s: float = 1.0
    probe_interval_s: float = 0.05
    max_restarts: int = 5
    restart_backoff_s: float = 0.5
    restart_backoff_cap_s: float = 30.0
    kill_grace_s: float = 2.0
    # a process that ran this long before it crashed was healthy: its crash starts a new streak
    # (fresh backoff, max_restarts again), as a restart limit's window does in systemd
    stable_s: float = 600.0

    def backoff_s(self, restart: int) -> float:
        """The wait before restart number ``restart`` (from 1)."""
        return min(self.restart_backoff_cap_s, self.restart_backoff_s * 2.0 ** max(0, restart - 1))


class ServiceEvent(StrEnum):
    STARTED = "STARTED"  # the first process is running
    UP = "UP"  # alive past the settle time, or its port answers (again, after a restart)
    RESTARTING = "RESTARTING"  # it exited unexpectedly and will be started again
    ENDED = "ENDED"  # it will not run again: see Service.ended


@dataclass(frozen=True, slots=True)
class ServiceEnd:
    """How a service ended. ``exit_code`` is negative for a signal, None if it never ran."""

    exit_code: int | None
    error: str
    stopped: bool
    started_at: float
    finished_at: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.error


class Service:
    """One supervised process; see the module docstring.

    Args:
        name: for logs, e.g. ``START_DASH#1`` or ``child [8081]``.
        argv: the command; ``argv[0]`` is an absolute path.
        env: its whole environment.
        directory: its working directory, holding ``stdout`` and ``stderr``.
        on_event: called with the service and each :class:`ServiceEvent`.
        port: when set (and ``probe``), up once ``127.0.0.1:port`` accepts a connection.
        probe: False when the owner decides when it is up (:meth:`mark_up`).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        directory: str,
        *,
        policy: ServicePolicy,
        on_event: Callable[[Service, ServiceEvent], None],
        port: int | None = None,
        probe: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.directory = directory
        self.policy = policy
        self.port = port
        self.probe = probe
        self.pid: int | None = None
        self.restarts = 0  # every restart of this attempt (STATUS shows them)
        self._streak = 0  # restarts since the last run that lasted stable_s: what max_restarts bounds
        self._spawned_at = 0.0
        self.up = False
        self.last_error = ""
        self.next_restart_s = 0.0
        self.started_at = time.time()
        self._loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[ServiceEnd] = self._loop.create_future()
        self._on_event = on_event
        self._pidfd = -1
        self._stop_error = ""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._prober: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "ended" if self.ended.done() else f"pid={self.pid} up={self.up} restarts={self.restarts}"
        return f"<Service {self.name} {state}>"

    @property
    def running(self) -> bool:
        """Not ended (it may be between a crash and its restart)."""
        return not self.ended.done()

    # ------------------------------------------------------------------ owner side
    def start(self) -> None:
        """Spawn the first process. A command that cannot start ends the service at once."""
        if self._spawn():
            self._on_event(self, ServiceEvent.STARTED)

    def mark_up(self) -> None:
        """Declare the service up (for services started with ``probe=False``)."""
        if self.pid is not None and not self.up and not self.ended.done():
            self.up = True
            self._on_event(self, ServiceEvent.UP)

    def stop(self, reason: str, *, patience_s: float = 0.0) -> None:
        """End it on purpose: SIGTERM after ``patience_s`` (if still running), SIGKILL after the grace."""
        if self.ended.done():
            return
        if not self._stop_error:
            self._stop_error = f"stopped: {reason}" if reason else "stopped"
        if self.pid is None:  # waiting out a restart backoff: nothing to kill
            self._finish(None, self._stop_error, stopped=True)
            return
        if patience_s > 0:
            if "term" not in self._timers:
                self._timers["term"] = self._loop.call_later(patience_s, self._terminate)
        else:
            self._terminate()

    def kill(self) -> None:
        """SIGKILL the group now, without waiting (a crash stand-in, or the end of the grace)."""
        if self.pid is not None:
            signal_group(self.pid, signal.SIGKILL)

    async def aclose(self, reason: str) -> ServiceEnd:
        """Stop it and wait until it has ended."""
        self.stop(reason)
        return await asyncio.shield(self.ended)

    # ------------------------------------------------------------------ process
    def _spawn(self) -> bool:
        try:
            pid = _spawn(self.argv, self.env, self.directory)
        except OSError as exc:
            self._finish(None, f"cannot start {os.path.basename(self.argv[0])}: {exc.strerror or exc}", stopped=False)
            return False
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError as exc:
            signal_group(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self._finish(None, f"cannot watch the process: {exc.strerror or exc}", stopped=False)
            return False
        self.pid = pid
        self._spawned_at = self._loop.time()
        self._loop.add_reader(self._pidfd, self._on_exit)
        if self.probe:
            if self.port:
                self._prober = self._loop.create_task(self._probe(self.port), name=f"titan-probe-{self.name}")
            else:
                self._timers["settle"] = self._loop.call_later(self.policy.settle_s, self._settled)
        log.info(
            "service %s started as pid %d%s", self.name, pid, f" (restart {self.restarts})" if self.restarts else ""
        )
        return True

    def _settled(self) -> None:
        self._timers.pop("settle", None)
        self.mark_up()

    async def _probe(self, port: int) -> None:
        while self.pid is not None:
            try:
                async with asyncio.timeout(max(0.2, self.policy.probe_interval_s * 4)):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
            except (OSError, TimeoutError):
                await asyncio.sleep(self.policy.probe_interval_s)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.mark_up()
            return

    def _terminate(self) -> None:
        self._timers.pop("term", None)
        if self.pid is not None and "kill" not in self._timers:
            signal_group(self.pid, signal.SIGTERM)
            self._timers["kill"] = self._loop.call_later(self.policy.kill_grace_s, self.kill)

    def _on_exit(self) -> None:
        pid = self.pid
        assert pid is not None
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        code = reap(pid)  # also clears out what the leader left in its group
        self.pid = None
        self.up = False
        self._cancel_watchers()
        if self._stop_error:
            self._finish(code, self._stop_error, stopped=True)
        elif code == 0:
            self._finish(0, "", stopped=False)
        else:
            self._crashed(_describe_exit(code), code)

    def _crashed(self, reason: str, code: int | None) -> None:
        self.last_error = reason
        if self._loop.time() - self._spawned_at >= self.policy.stable_s:
            self._streak = 0  # it ran long enough to count as healthy: not part of a crash loop
        if self._streak >= self.policy.max_restarts:  # its last exit is the attempt's exit code
            in_a_row = " in a row" if self._streak < self.restarts else ""
            self._finish(code, f"{reason}; gave up after {self._streak} restart(s){in_a_row}", stopped=False)
            return
        self._streak += 1
        self.restarts += 1
        self.next_restart_s = self.policy.backoff_s(self._streak)
        log.warning("service %s %s; restart %d in %.2fs", self.name, reason, self.restarts, self.next_restart_s)
        self._timers["restart"] = self._loop.call_later(self.next_restart_s, self._restart)
        self._on_event(self, ServiceEvent.RESTARTING)

    def _restart(self) -> None:
        self._timers.pop("restart", None)
        if not self.ended.done():
            self._spawn()

    def _cancel_watchers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._prober is not None:
            self._prober.cancel()
            self._prober = None

    def _finish(self, exit_code: int | None, error: str, *, stopped: bool) -> None:
        self._cancel_watchers()
        if self.ended.done():
            return
        self.up = False
        end = ServiceEnd(exit_code, error, stopped, self.started_at, time.time())
        self.ended.set_result(end)
        log.info("service %s ended: %s", self.name, error or f"exit code {exit_code}")
        self._on_event(self, ServiceEvent.ENDED)


def _spawn(argv: Sequence[str], env: Mapping[str, str], directory: str) -> int:
    """Spawn in ``directory`` (a new session; logs appended there); the caller's cwd is kept."""
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return spawn_in(argv, env, directory, home_fd=home, append=True)
    finally:
        os.close(home)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status lost"
    if code > 0:
        return f"exited with code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"
