"""DEPLOY attempts on a worker: services and child workers, reported as TASK_STATUS.

Theory of operation
-------------------
A ``TASK_START`` of kind ``DEPLOY`` becomes a :class:`~titan.worker.services.Service`
instead of a task: a script from ``perm_files/`` (shipped like a RUN) kept
running, or, for the built-in worker artifact (``data == "worker"``, the port in
``args[0]``), a child worker (:mod:`titan.worker.children`). Its slots stay
taken until it has ended.

What the master hears, all as ``TASK_STATUS`` of the attempt:

* ``RUNNING`` when the first process started;
* ``RUNNING`` with ``up`` once it is up (settled, or its port answers). A child
  worker is never reported up from here: the master sees its REGISTER;
* ``RUNNING`` with ``restarts`` and ``error`` when it crashed and will be
  started again;
* a final ``COMPLETED`` (it ended with exit code 0 on its own) or ``FAILED``
  (stopped, or out of restarts) with its logs, like a task.

A service gets ``TITAN_MASTER`` (and ``TITAN_TOKEN``, and ``TITAN_TLS_CA`` or
``TITAN_TLS`` when this worker dials over TLS) in its environment, so a
service that is itself a client of the cluster, such as the dashboard, finds it;
``TITAN_SERVICE_PORT`` when the job names a port.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from protocol import TaskRef, TaskStart, TaskStatus
from titan.config import WorkerSettings, tls_into_env
from titan.net.tls import TlsClient

from .artifacts import collect_artifacts, write_inputs
from .children import ChildDefaults, ChildWorkers, PortTaken
from .command import CommandBuilder, LaunchError
from .payloads import PayloadCache
from .services import Service, ServiceEnd, ServiceEvent, ServicePolicy

__all__ = ["WORKER_ARTIFACT", "Deployed", "Deployments", "service_host"]

log = logging.getLogger(__name__)

#: ``TaskStart.data`` of a DEPLOY of the built-in worker artifact (the master resolves the aliases)
WORKER_ARTIFACT: Final = "worker"
_ARTIFACT_ALIASES: Final = frozenset({WORKER_ARTIFACT, "Worker.jar"})


@dataclass(eq=False)
class Deployed:
    """One DEPLOY attempt running here."""

    ref: TaskRef
    service: Service
    slots: int
    child_port: int | None = None  # set for a child worker

    @property
    def is_child(self) -> bool:
        return self.child_port is not None


class Deployments:
    """The DEPLOY attempts of one worker.

    Args:
        workspace: the worker's workspace (attempt folders under ``jobs/``).
        payloads, commands: the task engine's payload cache and command builder.
        children: where child workers get their command and port.
        base_env: the environment services start from.
        master, token: what services are told about the cluster.
        report: sends a non-final TASK_STATUS (RUNNING, up, restarting).
        finished: takes a final TASK_STATUS with the attempt folder (the worker adds the logs).
        child_patience_s: how long a stopped child worker may take to drain before SIGTERM.
        max_output_bytes: as for tasks.
    """

    def __init__(
        self,
        *,
        workspace: Path,
        payloads: PayloadCache,
        commands: CommandBuilder,
        children: ChildWorkers,
        base_env: Mapping[str, str],
        worker_id: str,
        master: str,
        token: str | None,
        policy: ServicePolicy,
        tls: TlsClient | None = None,
        report: Callable[[TaskStatus], None],
        finished: Callable[[TaskRef, str, TaskStatus], None],
        child_patience_s: float = 10.0,
        max_output_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.workspace = workspace.absolute()
        self.payloads = payloads
        self.commands = commands
        self.children = children
        self.policy = policy
        self.child_patience_s = child_patience_s
        self.max_output_bytes = max_output_bytes
        env = dict(base_env)
        env["TITAN_WORKER"] = worker_id
        env["TITAN_MASTER"] = master
        if token:
            env["TITAN_TOKEN"] = token
        tls_into_env(env, tls)  # a service that is a client of the cluster dials it as this worker does
        self._env = env
        self._report = report
        self._finished = finished
        self._running: dict[TaskRef, Deployed] = {}
        self._handing_back = False  # set by aclose on the worker's shutdown

    def __contains__(self, ref: object) -> bool:
        return ref in self._running

    def __iter__(self) -> Iterator[TaskRef]:
        return iter(self._running)

    def __len__(self) -> int:
        return len(self._running)

    def get(self, ref: TaskRef) -> Deployed | None:
        return self._running.get(ref)

    @property
    def slots(self) -> int:
        return sum(deployed.slots for deployed in self._running.values())

    def up_reports(self) -> list[TaskStatus]:
        """``RUNNING`` with ``up`` for every service up now: sent again after each REGISTER,
        since a master that restarted keeps no service's live status."""
        return [
            TaskStatus(
                ref.job_id,
                ref.attempt,
                "RUNNING",
                started_at=d.service.started_at,
                up=True,
                restarts=d.service.restarts,
            )
            for ref, d in self._running.items()
            if d.service.up
        ]

    # ------------------------------------------------------------------ start / stop
    def start(self, task: TaskStart) -> None:
        """Run a DEPLOY attempt; one that cannot start is reported FAILED at once."""
        ref = TaskRef(task.job_id, task.attempt)
        if ref in self._running:
            return
        try:
            deployed = self._build(ref, task)
        except (LaunchError, PortTaken, OSError) as exc:
            message = (
                str(exc) if not isinstance(exc, OSError) else f"cannot prepare {task.job_id}: {exc.strerror or exc}"
            )
            self._finished(ref, "", TaskStatus(ref.job_id, ref.attempt, "FAILED", error=message))
            return
        self._running[ref] = deployed
        deployed.service.start()

    def stop(self, ref: TaskRef, reason: str) -> bool:
        """Stop one DEPLOY attempt (a child worker gets time to drain); False if not here."""
        deployed = self._running.get(ref)
        if deployed is None:
            return False
        deployed.service.stop(reason, patience_s=self.child_patience_s if deployed.is_child else 0.0)
        return True

    def stop_all(self, reason: str) -> None:
        for ref in list(self._running):
            self.stop(ref, reason)

    def kill_all(self) -> None:
        for deployed in list(self._running.values()):
            deployed.service.kill()

    async def aclose(self, reason: str, *, patience_s: float = 0.0, hand_back: bool = False) -> None:
        """Stop everything (children after ``patience_s``) and wait for the ends to be reported.

        ``hand_back``: the worker is shutting down; the final reports of its services and child
        workers (which stop with it) say so, and the master deploys them again elsewhere without
        counting the attempt.
        """
        self._handing_back = hand_back
        running = list(self._running.values())
        for deployed in running:
            deployed.service.stop(reason, patience_s=patience_s if deployed.is_child else 0.0)
        for deployed in running:
            await deployed.service.ended

    # ------------------------------------------------------------------ internals
    def _build(self, ref: TaskRef, task: TaskStart) -> Deployed:
        if task.data in _ARTIFACT_ALIASES and task.payload is None and not task.payload_hash:
            return self._child(ref, task)
        directory = self._directory(ref)
        file = self._payload_file(task)
        argv = self.commands.for_file(file, task.args)
        env = dict(self._env)
        env.update(
            TITAN_JOB_ID=ref.job_id,
            TITAN_ATTEMPT=str(ref.attempt),
            TITAN_OUTPUT_DIR=f"{directory}/outputs",
            TITAN_INPUT_DIR=f"{directory}/inputs",
        )
        if task.port:
            env["TITAN_SERVICE_PORT"] = str(task.port)
        env.update(task.env)
        os.makedirs(f"{directory}/outputs", exist_ok=True)
        if task.inputs:
            write_inputs(directory, task.inputs)
        service = Service(
            f"{ref.job_id}#{ref.attempt}",
            argv,
            env,
            directory,
            policy=self.policy,
            on_event=lambda service, event: self._on_event(ref, event),
            port=task.port,
        )
        return Deployed(ref, service, task.slots)

    def _child(self, ref: TaskRef, task: TaskStart) -> Deployed:
        try:
            port = int(task.args[0]) if task.args else 0
        except ValueError:
            raise LaunchError(f"DEPLOY of the worker artifact needs a port, got {task.args[0]!r}") from None
        cmd = self.children.command(port, spawn_id=ref.job_id)
        service = Service(
            f"{ref.job_id}#{ref.attempt} child [{cmd.port}]",
            cmd.argv,
            cmd.env,
            cmd.directory,
            policy=self.policy,
            on_event=lambda service, event: self._on_event(ref, event),
            probe=False,
        )
        log.info("starting child worker %s for %s", cmd.worker_id, ref.job_id)
        return Deployed(ref, service, task.slots, child_port=cmd.port)

    def _directory(self, ref: TaskRef) -> str:
        if not ref.job_id or ref.job_id in (".", "..") or "/" in ref.job_id or "\0" in ref.job_id:
            raise LaunchError(f"job id {ref.job_id!r} cannot name a directory")
        return str(self.workspace / "jobs" / ref.job_id / f"attempt-{ref.attempt}")

    def _payload_file(self, task: TaskStart) -> str:
        name = task.payload_name or task.data.rsplit("/", 1)[-1]
        if task.payload is not None:
            return self.payloads.store(task.payload, name, task.payload_hash, task.payload_mode)
        if task.payload_hash:
            cached = self.payloads.lookup(task.payload_hash, name)
            if cached is not None:
                return cached
            raise LaunchError(f"{name} was neither shipped nor found in this worker's cache")
        raise LaunchError(f"no file was shipped with DEPLOY {task.data!r}")

    def _on_event(self, ref: TaskRef, event: ServiceEvent) -> None:
        deployed = self._running.get(ref)
        if deployed is None:
            return
        service = deployed.service
        job_id, attempt = ref.job_id, ref.attempt
        if event is ServiceEvent.STARTED:
            self._report(TaskStatus(job_id, attempt, "RUNNING", started_at=service.started_at))
        elif event is ServiceEvent.UP:
            self._report(
                TaskStatus(
                    job_id, attempt, "RUNNING", started_at=service.started_at, up=True, restarts=service.restarts
                )
            )
        elif event is ServiceEvent.RESTARTING:
            note = f"{service.last_error}; restart {service.restarts} in {service.next_restart_s:.2g}s"
            self._report(
                TaskStatus(
                    job_id, attempt, "RUNNING", started_at=service.started_at, restarts=service.restarts, error=note
                )
            )
        elif event is ServiceEvent.ENDED:
            del self._running[ref]
            if deployed.child_port is not None:
                self.children.release(deployed.child_port)
            end = service.ended.result()
            self._finished(ref, service.directory, self._final(ref, service, end, self._handing_back))

    def _final(self, ref: TaskRef, service: Service, end: ServiceEnd, hand_back: bool) -> TaskStatus:
        outputs: dict[str, bytes] = {}
        error = end.error
        if service.probe and service.directory:
            artifacts = collect_artifacts(service.directory, max_output_bytes=self.max_output_bytes)
            outputs = artifacts.outputs
            error = error or artifacts.error
        return TaskStatus(
            ref.job_id,
            ref.attempt,
            "COMPLETED" if end.exit_code == 0 and not error else "FAILED",
            handed_back=hand_back,
            exit_code=end.exit_code,
            error=error,
            started_at=end.started_at,
            finished_at=end.finished_at,
            outputs=outputs,
            restarts=service.restarts,
        )


def service_host(
    settings: WorkerSettings,
    worker_id: str,
    *,
    base_env: Mapping[str, str],
    payloads: PayloadCache,
    commands: CommandBuilder,
    skills: list[str],
    report: Callable[[TaskStatus], None],
    finished: Callable[[TaskRef, str, TaskStatus], None],
) -> tuple[ChildWorkers, Deployments]:
    """A worker's child-worker table and DEPLOY attempts, configured from its settings."""
    policy = ServicePolicy(
        settle_s=settings.service_settle_s,
        max_restarts=settings.service_max_restarts,
        restart_backoff_s=settings.service_restart_backoff_s,
        restart_backoff_cap_s=settings.service_restart_backoff_cap_s,
        kill_grace_s=settings.kill_grace_s,
    )
    master = f"{settings.master_host}:{settings.master_port}"
    defaults = ChildDefaults(
        master=master,
        capacity=settings.capacity,
        skills=tuple(skills),
        heartbeat_interval_s=settings.heartbeat_interval_s,
        token=settings.token,
        tls=settings.tls,
        live_logs_in_clear=settings.live_logs_in_clear,
        memory_mb=settings.memory_mb,
        keep_attempts_s=settings.keep_attempts_s,
    )
    children = ChildWorkers(worker_id, settings.workspace, defaults, base_env=base_env, policy=policy)
    deployments = Deployments(
        workspace=settings.workspace,
        payloads=payloads,
        commands=commands,
        children=children,
        base_env=base_env,
        worker_id=worker_id,
        master=master,
        token=settings.token,
        tls=settings.tls,
        policy=policy,
        report=report,
        finished=finished,
        child_patience_s=settings.child_drain_timeout_s,
        max_output_bytes=settings.max_output_bytes,
    )
    return children, deployments
