"""Growing and shrinking the cluster: SPAWN and RETIRE requests, and the autoscaler's loop.

The decisions are made elsewhere (a person's request, or the pure
:class:`~titan.master.autoscaler.Autoscaler`); this module turns them into
frames: ``SPAWN_WORKER`` to the parent that starts the child, and ``DRAIN``
(through the core, so the registry stops giving the worker tasks at once) to the
workers that leave. It holds no job state.

Spawn requests are named (``SPAWN-<n>``, ``AUTO-<n>`` for the autoscaler's); the
child sends the name back in its REGISTER, which is how STATS tells the
autoscaler's children (the only ones it ever retires) from the others.

Every request, a person's or the autoscaler's, and every DEPLOY of the worker
artifact (checked as its attempt is sent: :meth:`Scaling.admit_deployed_child`), is held to two bounds
(``max_workers``, ``max_depth``: DESIGN §7): the workers there are, counting the
spawns asked for but not registered yet (for ``spawn_timeout_s``), and the depth
the child would have. A request past either is refused in one line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import Callable
from typing import Any

from protocol import Message, Register, SpawnReply, SpawnWorker
from titan.config import AutoscaleSettings
from titan.errors import UsageError
from titan.jobs import DrainWorker, Effect, JobState

from .autoscaler import Autoscaler, Retire, Spawn, WorkerView
from .core import MasterState
from .registry import Health, WorkerRecord

__all__ = ["AUTOSCALED", "Scaling"]

log = logging.getLogger(__name__)

#: prefix of the spawn ids the autoscaler uses
AUTOSCALED = "AUTO-"


class Scaling:
    """SPAWN, RETIRE and (with ``settings``) the autoscaler loop of one master.

    Args:
        state: the master's core.
        send: sends a message to a worker by id; False if it has no connection.
        apply: carries out effects (the master's ``_apply``).
        clock: epoch seconds.
        settings: the autoscaler's; None keeps it off.
    """

    def __init__(
        self,
        state: MasterState,
        *,
        send: Callable[[str, Message], bool],
        apply: Callable[[list[Effect]], None],
        clock: Callable[[], float],
        settings: AutoscaleSettings | None = None,
        max_workers: int = 64,
        max_depth: int = 4,
    ) -> None:
        self.state = state
        self._capped = ""  # what the master's bounds cut from the autoscaler's own, for the log
        if settings is not None:
            cuts = []
            if settings.max_workers > max_workers:
                cuts.append(f"--autoscale-max-workers {settings.max_workers} to --max-workers {max_workers}")
            if settings.max_depth > max_depth:
                cuts.append(f"--autoscale-max-depth {settings.max_depth} to --max-depth {max_depth}")
            self._capped = "; ".join(cuts)
            # the autoscaler plans within the master's bounds, so it does not decide on spawns they refuse
            settings = dataclasses.replace(
                settings,
                max_workers=min(settings.max_workers, max_workers),
                max_depth=min(settings.max_depth, max_depth),
            )
        self.autoscaler = Autoscaler(settings) if settings is not None else None
        self.max_workers = max_workers
        self.max_depth = max_depth
        self._spawn_timeout_s = (settings or AutoscaleSettings()).spawn_timeout_s
        self._in_flight: dict[str, float] = {}  # spawn id -> when it was asked for, until its child registers
        self._send = send
        self._apply = apply
        self._clock = clock
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifetime
    def start(self) -> None:
        if self.autoscaler is not None:
            limits = self.autoscaler.settings
            log.info(
                "autoscaler on: at most %d workers, %d children each, depth %d; grows after %gs of backlog, "
                "retires children idle for %gs%s",
                limits.max_workers,
                limits.max_children,
                limits.max_depth,
                limits.scale_up_after_s,
                limits.idle_retire_s,
                f" (the master's bounds cut {self._capped})" if self._capped else "",
            )
            self._arm()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------------ requests
    def spawn(self, worker: str | None, port: int, capacity: int) -> SpawnReply:
        """Ask ``worker`` (or the least-loaded healthy top-level worker) to start a child.

        Raises:
            UsageError: no such worker, it cannot take the request, or none is healthy.
        """
        registry = self.state.registry
        if worker is not None:
            record = registry.find(worker)
            if record is None:
                raise UsageError(f"no worker '{worker}'")
            if record.health is not Health.HEALTHY:
                raise UsageError(f"worker {record.name} is {record.health.value}: it cannot start a child")
        else:
            healthy = registry.schedulable
            if not healthy:
                raise UsageError("no healthy worker to start a child worker")
            record = min(healthy, key=lambda r: (registry.depth(r), r.used_slots / r.capacity, r.id))
        spawn_id = self._request(record, port, capacity, "SPAWN-", "spawn request")
        return SpawnReply(parent=record.id, spawn_id=spawn_id, port=port)

    def admit_deployed_child(self, parent_id: str, job_id: str) -> None:
        """A DEPLOY of the worker artifact is about to start a child on ``parent_id``: hold it to the
        same bounds as a SPAWN, and count it as on its way until the child registers (its spawn id is
        the job's id).

        Raises:
            UsageError: past ``max_workers`` or ``max_depth`` (the attempt fails with this line).
        """
        parent = self.state.registry.get(parent_id)
        if parent is None:
            raise UsageError(f"worker '{parent_id}' is gone")
        self._check_bounds(parent)
        self._in_flight[job_id] = self._clock()

    def retire(self, worker: str) -> tuple[list[str], list[Effect]]:
        """Drain ``worker`` and every worker below it; returns their ids and the effects.

        Raises:
            UsageError: no such worker.
        """
        registry = self.state.registry
        record = registry.find(worker)
        if record is None:
            raise UsageError(f"no worker '{worker}'")
        if record.health in (Health.RETIRED, Health.LOST):
            raise UsageError(f"worker {record.name} is {record.health.value} already: nothing to drain")
        subtree = registry.subtree(record)
        effects: list[Effect] = []
        for member in subtree:
            effects.extend(self._drain(member, f"retired with {record.name}" if member is not record else "retired"))
        return [member.id for member in subtree], effects

    def registered(self, msg: Register) -> None:
        """A worker registered: one of its parent's pending spawns has arrived."""
        self._in_flight.pop(msg.spawn_id, None)
        if self.autoscaler is not None and msg.parent and msg.spawn_id.startswith(AUTOSCALED):
            self.autoscaler.registered(msg.parent)

    def extra(self) -> dict[str, Any]:
        """For ``StatsReply.extra["autoscaler"]``."""
        return self.autoscaler.extra() if self.autoscaler is not None else {"enabled": False}

    # ------------------------------------------------------------------ the loop
    def _arm(self) -> None:
        if self._closed or self.autoscaler is None:
            return
        self._timer = asyncio.get_running_loop().call_later(self.autoscaler.settings.interval_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        try:
            self.check()
        except Exception:  # a bug here must not stop future checks
            log.exception("autoscaler check failed")
        self._arm()

    def check(self) -> None:
        """One autoscaler round: decide and carry out."""
        assert self.autoscaler is not None
        registry = self.state.registry
        views = [
            WorkerView(
                id=record.id,
                name=record.name,
                capacity=record.capacity,
                load=record.used_slots,
                depth=registry.depth(record),
                children=len(registry.children(record.id)),
                autoscaled=record.spawn_id.startswith(AUTOSCALED),
            )
            for record in registry.schedulable
        ]
        ready = self.state.counts[JobState.PENDING]
        for decision in self.autoscaler.decide(ready, views, self._clock()):
            parent = registry.get(decision.parent if isinstance(decision, Spawn) else decision.worker)
            if parent is None:
                continue
            if isinstance(decision, Spawn):
                try:
                    self._request(parent, 0, decision.capacity, AUTOSCALED, f"autoscaler: {decision.reason}")
                except UsageError as exc:  # past the bounds (spawns of others), or it lost its connection
                    log.warning("autoscaler: cannot spawn on %s: %s", parent.name, exc)
                    self.autoscaler.refused(parent.id, str(exc), self._clock())
            elif isinstance(decision, Retire):
                log.info("autoscaler: retiring %s: %s", parent.name, decision.reason)
                self._apply(self._drain(parent, f"autoscaler: {decision.reason}"))

    # ------------------------------------------------------------------ internals
    def _request(self, parent: WorkerRecord, port: int, capacity: int, prefix: str, why: str) -> str:
        self._check_bounds(parent)
        spawn_id = f"{prefix}{next(self._ids)}"
        message = SpawnWorker(port=port, capacity=capacity, spawn_id=spawn_id)
        if not self._send(parent.id, message):
            raise UsageError(f"worker {parent.name} has no connection")
        self._in_flight[spawn_id] = self._clock()
        log.info("%s: %s asked to start a child worker (%s)", spawn_id, parent.name, why)
        return spawn_id

    def _check_bounds(self, parent: WorkerRecord) -> None:
        """Refuse a child past ``max_workers`` or ``max_depth``.

        Raises:
            UsageError: naming the bound and its flag.
        """
        registry = self.state.registry
        depth = registry.depth(parent) + 1
        if depth > self.max_depth:
            raise UsageError(f"a child of {parent.name} would be at depth {depth}, past --max-depth {self.max_depth}")
        now = self._clock()
        self._in_flight = {i: t for i, t in self._in_flight.items() if now - t < self._spawn_timeout_s}
        workers = sum(1 for record in registry if record.health not in (Health.LOST, Health.RETIRED))
        if workers + len(self._in_flight) >= self.max_workers:
            on_the_way = f" and {len(self._in_flight)} on the way" if self._in_flight else ""
            raise UsageError(
                f"the cluster has {workers} worker{'s' if workers != 1 else ''}{on_the_way}, "
                f"as many as --max-workers {self.max_workers} allows"
            )

    def _drain(self, record: WorkerRecord, reason: str) -> list[Effect]:
        effects = self.state.drain(record.id, self._clock())
        if record.connected:
            effects.append(DrainWorker(record.id, reason))
        return effects
