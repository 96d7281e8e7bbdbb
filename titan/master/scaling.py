"""Growing and shrinking the cluster: SPAWN and RETIRE requests, and the autoscaler's loop.

The decisions are made elsewhere (a person's request, or the pure
:class:`~titan.master.autoscaler.Autoscaler`); this module turns them into
frames: ``SPAWN_WORKER`` to the parent that starts the child, and ``DRAIN``
(through the core, so the registry stops giving the worker tasks at once) to the
workers that leave. It holds no job state.

Spawn requests are named (``SPAWN-<n>``, ``AUTO-<n>`` for the autoscaler's); the
child sends the name back in its REGISTER, which is how STATS tells the
autoscaler's children (the only ones it ever retires) from the others.
"""

from __future__ import annotations

import asyncio
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
    ) -> None:
        self.state = state
        self.autoscaler = Autoscaler(settings) if settings is not None else None
        self._send = send
        self._apply = apply
        self._clock = clock
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifetime
    def start(self) -> None:
        if self.autoscaler is not None:
            log.info("autoscaler on: %s", self.autoscaler.settings)
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

    def retire(self, worker: str) -> tuple[list[str], list[Effect]]:
        """Drain ``worker`` and every worker below it; returns their ids and the effects.

        Raises:
            UsageError: no such worker.
        """
        registry = self.state.registry
        record = registry.find(worker)
        if record is None:
            raise UsageError(f"no worker '{worker}'")
        subtree: list[WorkerRecord] = []
        todo = [record]
        while todo:
            current = todo.pop()
            subtree.append(current)
            todo.extend(child for child in registry.children(current.id) if child not in subtree)
        effects: list[Effect] = []
        for member in subtree:
            effects.extend(self._drain(member, f"retired with {record.name}" if member is not record else "retired"))
        return [member.id for member in subtree], effects

    def registered(self, msg: Register) -> None:
        """A worker registered: one of its parent's pending spawns has arrived."""
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
                except UsageError as exc:  # it lost its connection since the views were taken
                    log.warning("autoscaler: cannot spawn on %s: %s", parent.name, exc)
            elif isinstance(decision, Retire):
                log.info("autoscaler: retiring %s: %s", parent.name, decision.reason)
                self._apply(self._drain(parent, f"autoscaler: {decision.reason}"))

    # ------------------------------------------------------------------ internals
    def _request(self, parent: WorkerRecord, port: int, capacity: int, prefix: str, why: str) -> str:
        spawn_id = f"{prefix}{next(self._ids)}"
        message = SpawnWorker(port=port, capacity=capacity, spawn_id=spawn_id)
        if not self._send(parent.id, message):
            raise UsageError(f"worker {parent.name} has no connection")
        log.info("%s: %s asked to start a child worker (%s)", spawn_id, parent.name, why)
        return spawn_id

    def _drain(self, record: WorkerRecord, reason: str) -> list[Effect]:
        effects = self.state.drain(record.id, self._clock())
        if record.connected:
            effects.append(DrainWorker(record.id, reason))
        return effects
