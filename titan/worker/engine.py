"""Running attempts as OS processes, fast.

Theory of operation
-------------------
Each attempt gets ``<workspace>/jobs/<job_id>/attempt-<n>/`` with ``stdout``,
``stderr`` and an ``outputs/`` directory (a recycled one where possible, see
``dirs.py``: whoever reports an ended attempt hands its directory back with
:meth:`ProcessRunner.release`). The process is started by
:func:`~titan.worker.process.spawn_in` (vfork and exec from C; no Python runs
in the child) in a new session, so its pid is also its process group id and a
kill reaches everything it started. stdin is ``/dev/null``; stdout and stderr
are files in the attempt directory, which is the job's working directory.

Exits are watched with a pidfd registered as a reader on the event loop, which
works on uvloop and stock loops alike (never through a loop's subprocess API:
uvloop's forks and runs Python in the child, five times slower). When the
pidfd turns readable the leader is a zombie, which still pins its process
group id, so the runner first SIGKILLs whatever the job left behind in its
group and only then reaps the leader: nothing outlives an attempt, and no
signal can reach a recycled pid.

Timeouts and stops send SIGTERM to the group, then SIGKILL after
``kill_grace_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from protocol import TaskRef, TaskStart, TaskStatus

from .artifacts import collect_artifacts, write_inputs
from .command import CommandBuilder, LaunchError
from .dirs import AttemptDirs, untouched_job_folders
from .payloads import PayloadCache
from .process import Environment, reap, signal_group, spawn_in

__all__ = ["Attempt", "AttemptResult", "ProcessRunner"]

log = logging.getLogger(__name__)

_PAYLOAD_KINDS: Final = frozenset({"RUN", "DEPLOY"})
# DEPLOY names of the built-in worker artifact (DESIGN §3): a child worker, not a file
_WORKER_ARTIFACTS: Final = frozenset({"worker", "Worker.jar"})


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How an attempt ended. ``exit_code`` is negative for a signal, None if it never ran."""

    job_id: str
    attempt: int
    exit_code: int | None
    error: str
    started_at: float
    finished_at: float
    outputs: dict[str, bytes] = field(default_factory=dict)
    # stopped because the worker is shutting down: the master requeues it, the attempt not counted
    handed_back: bool = False

    @property
    def state(self) -> Literal["COMPLETED", "FAILED"]:
        return "COMPLETED" if self.exit_code == 0 and not self.error else "FAILED"

    def to_status(self) -> TaskStatus:
        return TaskStatus(
            job_id=self.job_id,
            attempt=self.attempt,
            state=self.state,
            exit_code=self.exit_code,
            error=self.error,
            started_at=self.started_at,
            finished_at=self.finished_at,
            outputs=self.outputs,
            handed_back=self.handed_back,
        )


class Attempt:
    """One attempt in flight: its pid (= process group), its directory and its result."""

    __slots__ = (
        "_grace_s",
        "_handed_back",
        "_kill_timer",
        "_loop",
        "_pidfd",
        "_runner",
        "_stop_error",
        "_timeout_timer",
        "directory",
        "keep_directory",
        "on_done",
        "outputs_empty",
        "pid",
        "ref",
        "result",
        "started_at",
        "timeout_s",
    )

    def __init__(self, runner: ProcessRunner, ref: TaskRef, timeout_s: float | None, grace_s: float) -> None:
        self._runner = runner
        self._loop = runner.loop
        self._grace_s = grace_s
        self.ref = ref
        self.timeout_s = timeout_s
        self.directory = ""
        # set when the result could not carry the output files: the directory is kept for a person to look at
        self.keep_directory = False
        # outputs/ was read once the group was gone and held nothing: recycling need not read it again
        self.outputs_empty = False
        self.pid: int | None = None
        self.started_at = time.time()
        self.result: asyncio.Future[AttemptResult] = self._loop.create_future()
        # called as soon as the result is set, in the same step: a report need not wait a loop turn
        self.on_done: Callable[[Attempt], None] | None = None
        self._pidfd = -1
        self._stop_error = ""
        self._handed_back = False
        self._timeout_timer: asyncio.TimerHandle | None = None
        self._kill_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        state = "done" if self.result.done() else f"pid={self.pid}"
        return f"<Attempt {self.ref.job_id}#{self.ref.attempt} {state}>"

    @property
    def running(self) -> bool:
        return self.pid is not None and not self.result.done()

    def stop(self, reason: str, *, hand_back: bool = False) -> None:
        """SIGTERM the group, SIGKILL after the grace period; the result says ``stopped: <reason>``.

        ``hand_back``: the worker is shutting down, and the result says so (unless the attempt
        was already being stopped for another reason, a cancel say, which stands).
        """
        if not self.running:
            return
        if not self._stop_error:
            self._stop_error = f"stopped: {reason}" if reason else "stopped"
            self._handed_back = hand_back
        self._terminate()

    def kill(self) -> None:
        """SIGKILL the whole group now."""
        if self.running:
            assert self.pid is not None
            signal_group(self.pid, signal.SIGKILL)

    async def wait(self) -> AttemptResult:
        """The result, once the process has ended (cancelling the wait does not kill it)."""
        return await asyncio.shield(self.result)

    # ------------------------------------------------------------------ runner side
    def _started(self, pid: int) -> None:
        self.pid = pid
        self.started_at = time.time()
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError as exc:
            # Without a pidfd we cannot wait for it without blocking: end it now.
            signal_group(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self._finish(None, f"cannot watch the process: {exc.strerror or exc}")
            return
        self._loop.add_reader(self._pidfd, self._on_exit)
        if self.timeout_s is not None:
            self._timeout_timer = self._loop.call_later(self.timeout_s, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timeout_timer = None
        if self.running and not self._stop_error:
            self._stop_error = f"timed out after {self.timeout_s:g}s"
            self._terminate()

    def _terminate(self) -> None:
        assert self.pid is not None
        if self._kill_timer is None:
            signal_group(self.pid, signal.SIGTERM)
            self._kill_timer = self._loop.call_later(self._grace_s, self.kill)

    def _on_exit(self) -> None:
        pid = self.pid
        assert pid is not None
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        code = reap(pid)  # also clears out what the leader left in its group
        if code is None:
            self._finish(None, "exit status lost: the process was reaped elsewhere")
            return
        self._finish(code, "")

    def _finish(self, exit_code: int | None, error: str) -> None:
        for timer in (self._timeout_timer, self._kill_timer):
            if timer is not None:
                timer.cancel()
        self._timeout_timer = self._kill_timer = None
        if self._stop_error:
            error = self._stop_error
        elif not error and exit_code:
            error = _describe_exit(exit_code)
        self._runner._forget(self)
        outputs: dict[str, bytes] = {}
        if self.directory:
            artifacts = collect_artifacts(self.directory, max_output_bytes=self._runner.max_output_bytes)
            outputs = artifacts.outputs
            error = error or artifacts.error
            self.keep_directory = bool(artifacts.error)
            self.outputs_empty = not outputs and not artifacts.error
        result = AttemptResult(
            self.ref.job_id,
            self.ref.attempt,
            exit_code,
            error,
            self.started_at,
            time.time(),
            outputs,
            self._handed_back,
        )
        self.result.set_result(result)
        if self.on_done is not None:
            self.on_done(self)


class ProcessRunner:
    """Spawns attempts, watches them and kills their process groups.

    Args:
        workspace: the worker's workspace; made absolute (see the module docstring).
        worker_id: exported to jobs as ``TITAN_WORKER``.
        base_env: the environment every job starts from (default: this process's).
        kill_grace_s: seconds between SIGTERM and SIGKILL.
        spare_dirs: the most ended attempts' directories to keep for reuse (see ``dirs.py``).
        max_output_bytes: the output files one attempt may send back (see ``artifacts.py``).
        keep_attempts_s: how long a job folder left in ``jobs/`` (an attempt kept for a person to
            look at, or one a killed run never reported) stays after its last change; None: for ever.
    """

    def __init__(
        self,
        workspace: Path,
        *,
        worker_id: str = "",
        base_env: Mapping[str, str] | None = None,
        kill_grace_s: float = 2.0,
        spare_dirs: int = 64,
        max_output_bytes: int = 8 * 1024 * 1024,
        keep_attempts_s: float | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.workspace = workspace.absolute()
        self.kill_grace_s = kill_grace_s
        self.max_output_bytes = max_output_bytes
        self._dirs = AttemptDirs(str(self.workspace), max_spares=spare_dirs)
        self.payloads = PayloadCache(self.workspace / "cache")
        env = dict(os.environ if base_env is None else base_env)
        env["TITAN_WORKER"] = worker_id
        # a name exec cannot carry (only a hand-made environment has one) is left out, not a failure of every job
        self._base_env = Environment({name: value for name, value in env.items() if name and "=" not in name})
        self.commands = CommandBuilder(env.get("PATH", os.defpath))
        self._running: dict[TaskRef, Attempt] = {}
        self._home_fd: int | None = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.keep_attempts_s = keep_attempts_s
        self._sweeper: asyncio.Task[None] | None = None
        if keep_attempts_s is not None:
            self._sweeper = self.loop.create_task(self._sweep_now_and_then(keep_attempts_s), name="attempt-sweeper")

    @property
    def running(self) -> Mapping[TaskRef, Attempt]:
        """Attempts whose process has not been reaped yet."""
        return self._running

    def start(self, task: TaskStart) -> Attempt:
        """Spawn ``task`` and return at once; never raises for a job that cannot start.

        A job that cannot start (unknown type, missing interpreter, no exec bit,
        ENOENT, a bad payload) comes back as an attempt whose result is already a
        FAILED one-line error. Starting an attempt that is already running
        returns the running one.
        """
        ref = TaskRef(task.job_id, task.attempt)
        existing = self._running.get(ref)
        if existing is not None:
            return existing
        if self._home_fd is None:
            raise RuntimeError("the process runner is closed")
        attempt = Attempt(self, ref, task.timeout_s, self.kill_grace_s)
        try:
            argv, env = self._prepare(task)
            attempt.directory = directory = self._make_directory(task.job_id, task.attempt)
            env["TITAN_OUTPUT_DIR"] = f"{directory}/outputs"
            env["TITAN_INPUT_DIR"] = f"{directory}/inputs"
            if task.inputs:
                write_inputs(directory, task.inputs)
            pid = self._spawn(argv, env, directory)
        except LaunchError as exc:
            attempt._finish(None, str(exc))
            return attempt
        self._running[ref] = attempt
        attempt._started(pid)
        return attempt

    def release(self, attempt: Attempt, *, keep: bool = False) -> None:
        """``attempt`` has ended and its report holds its logs and outputs: its directory may be reused.

        ``keep`` (say, its logs were too long to report whole) leaves the directory as it is.
        """
        if attempt.directory and attempt.result.done():
            self._dirs.release(
                attempt.directory, keep=keep or attempt.keep_directory, outputs_empty=attempt.outputs_empty
            )

    def stop(self, job_id: str, attempt: int, reason: str) -> bool:
        """Stop one attempt; False if it is not running here."""
        found = self._running.get(TaskRef(job_id, attempt))
        if found is None:
            return False
        found.stop(reason)
        return True

    def kill_all(self) -> None:
        """SIGKILL every running attempt's group at once (no grace)."""
        for attempt in list(self._running.values()):
            attempt.kill()

    async def aclose(self, reason: str = "worker shutting down", *, hand_back: bool = False) -> None:
        """Stop every attempt (SIGTERM, then SIGKILL after the grace period) and wait for them.

        ``hand_back``: their results say the worker stopped them on shutting down (see ``Attempt.stop``).
        """
        attempts = list(self._running.values())
        for attempt in attempts:
            attempt.stop(reason, hand_back=hand_back)
        if attempts:
            await asyncio.gather(*(asyncio.shield(a.result) for a in attempts))
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self._dirs.aclose()
        if self._home_fd is not None:
            os.close(self._home_fd)
            self._home_fd = None

    def stop_sweeping(self) -> None:
        """No more sweeps (the worker is going down without :meth:`aclose`)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def sweep(self, older_than_s: float) -> int:
        """Trash the job folders in ``jobs/`` untouched for ``older_than_s`` and not in use; returns how many.

        The folders are looked at in a helper thread (many kept attempts mean many stats); whether
        one is in use is decided here on the loop, at the rename, so that an attempt starting
        meanwhile in an old job's folder keeps it.
        """
        since = time.time() - older_than_s
        candidates = await self.loop.run_in_executor(None, untouched_job_folders, self._dirs.jobs_dir, since)
        in_use = {ref.job_id for ref in self._running}
        return sum(
            1 for job_dir in candidates if job_dir.rpartition("/")[2] not in in_use and self._dirs.discard(job_dir)
        )

    async def _sweep_now_and_then(self, older_than_s: float) -> None:
        # often enough that nothing overstays by more than a quarter of its time (or an hour)
        pause_s = min(max(older_than_s / 4, 1.0), 3600.0)
        while True:
            try:
                swept = await self.sweep(older_than_s)
            except OSError as exc:
                log.warning("cannot sweep %s: %s", self._dirs.jobs_dir, exc)
            else:
                if swept:
                    log.info(
                        "removed %d job folder(s) left in %s for more than %s",
                        swept,
                        self._dirs.jobs_dir,
                        _age(older_than_s),
                    )
            await asyncio.sleep(pause_s)

    # ------------------------------------------------------------------ internals
    def _prepare(self, task: TaskStart) -> tuple[list[str], dict[str, str]]:
        """The command line, and the variables this attempt adds to the base environment."""
        env = {"TITAN_JOB_ID": task.job_id, "TITAN_ATTEMPT": str(task.attempt)}
        path: str | None = None
        if task.env:
            env.update(task.env)
            path = task.env.get("PATH")
        if task.kind == "SHELL":
            return self.commands.for_shell(task.data, task.args, path), env
        if task.kind in _PAYLOAD_KINDS and (task.payload is not None or task.payload_hash):
            return self.commands.for_file(self._payload_file(task), task.args), env
        if task.kind == "DEPLOY" and task.data in _WORKER_ARTIFACTS:
            raise LaunchError(f"DEPLOY of the worker artifact {task.data!r} is not supported by this worker")
        if task.kind in _PAYLOAD_KINDS:
            raise LaunchError(f"no file was shipped with {task.kind} {task.data!r}")
        raise LaunchError(f"job type {task.kind} cannot run on this worker")

    def _payload_file(self, task: TaskStart) -> str:
        name = task.payload_name or task.data.rsplit("/", 1)[-1]
        if task.payload is None:
            cached = self.payloads.lookup(task.payload_hash, name)
            if cached is None:
                raise LaunchError(f"{name} was neither shipped nor found in this worker's cache")
            return cached
        return self.payloads.store(task.payload, name, task.payload_hash, task.payload_mode)

    def _make_directory(self, job_id: str, attempt: int) -> str:
        if not job_id or job_id in (".", "..") or "/" in job_id or "\0" in job_id:
            raise LaunchError(f"job id {job_id!r} cannot name a directory")
        try:
            return self._dirs.make(job_id, attempt)
        except OSError as exc:
            raise LaunchError(f"cannot create the directory of {job_id}#{attempt}: {exc.strerror or exc}") from exc

    def _spawn(self, argv: list[str], env: dict[str, str], directory: str) -> int:
        assert self._home_fd is not None
        try:
            return spawn_in(argv, self._base_env, directory, home_fd=self._home_fd, extra_env=env)
        except OSError as exc:
            raise LaunchError(_describe_spawn_error(argv[0], exc)) from exc

    def _forget(self, attempt: Attempt) -> None:
        if self._running.get(attempt.ref) is attempt:
            del self._running[attempt.ref]


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _describe_exit(exit_code: int) -> str:
    if exit_code > 0:
        return f"exit code {exit_code}"
    try:
        return f"killed by {signal.Signals(-exit_code).name}"
    except ValueError:
        return f"killed by signal {-exit_code}"


def _describe_spawn_error(program: str, exc: OSError) -> str:
    name = program.rsplit("/", 1)[-1]
    if exc.errno == 8:  # ENOEXEC
        return f"cannot execute {name}: not a program and no #! line"
    if isinstance(exc, PermissionError):
        return f"cannot execute {name}: permission denied (is it executable?)"
    if isinstance(exc, FileNotFoundError):
        return f"cannot execute {name}: no such file or directory"
    return f"cannot execute {name}: {exc.strerror or exc}"
