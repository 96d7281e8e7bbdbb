"""The autoscaler's decisions. Pure: the master feeds it what it sees and the time.

Theory of operation
-------------------
Each :meth:`Autoscaler.decide` call gets the number of jobs ready to run and a
:class:`WorkerView` per worker, and answers with :class:`Spawn` and
:class:`Retire` decisions, each carrying the reason that is logged and shown in
STATS. The master carries them out (SPAWN_WORKER, DRAIN); nothing here touches
a socket or a clock.

*Growing.* There is pressure when the ready jobs outnumber the free slots,
counting the slots of children already asked for but not registered yet (so one
burst does not spawn a child per tick while the first ones boot). Only pressure
that lasts ``scale_up_after_s`` counts, and after a spawn the next one waits
``cooldown_s``. Then it asks for as many children as the backlog needs, at most
``max_step`` at a time, each from the least-loaded healthy worker that still has
room: fewer than ``max_children`` children (pending ones included) and a depth
below ``max_depth`` (a top-level worker has depth 0). The cluster never grows
past ``max_workers`` workers, pending ones included.

*Shrinking.* A child the autoscaler started, that has no children of its own
and has held no task for ``idle_retire_s`` while nothing waits in the queue, is
retired: drained, then it leaves. Workers it did not start (top-level ones,
children of a DEPLOY or of an explicit SPAWN) are never retired here.

The two delays are the hysteresis: a short burst does not grow the cluster, a
short lull does not shrink it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from titan.config import AutoscaleSettings

__all__ = ["AutoscaleSettings", "Autoscaler", "Decision", "Retire", "Spawn", "WorkerView"]


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One healthy worker as the autoscaler needs it."""

    id: str
    name: str
    capacity: int
    load: int  # slots in use
    depth: int  # 0 for a top-level worker
    children: int  # registered children
    autoscaled: bool = False  # started by the autoscaler: may be retired


@dataclass(frozen=True, slots=True)
class Spawn:
    """Ask ``parent`` to start a child worker."""

    parent: str
    reason: str
    capacity: int = 0  # 0: the parent's own


@dataclass(frozen=True, slots=True)
class Retire:
    """Drain ``worker`` and let it leave."""

    worker: str
    reason: str


Decision = Spawn | Retire


@dataclass(slots=True)
class _Pending:
    parent: str
    capacity: int
    since: float


@dataclass
class Autoscaler:
    """Decides when to grow and shrink the cluster; see the module docstring."""

    settings: AutoscaleSettings = field(default_factory=AutoscaleSettings)
    history_limit: int = 50
    pressure_since: float | None = None
    last_spawn_at: float = float("-inf")
    pending: list[_Pending] = field(default_factory=list)
    history: deque[dict[str, Any]] = field(init=False)
    _idle_since: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.history_limit)

    # ------------------------------------------------------------------ stimuli
    def refused(self, parent: str, reason: str, now: float) -> None:
        """The master did not send a spawn just decided on ``parent`` (its bounds, a lost connection):
        no child is on its way there, and the history says so."""
        for i in range(len(self.pending) - 1, -1, -1):
            if self.pending[i].parent == parent:
                del self.pending[i]
                break
        self.history.append({"t": now, "action": "refused", "worker": parent, "reason": reason})

    def registered(self, parent: str) -> None:
        """A child of ``parent`` registered: one pending spawn there is done."""
        for i, pending in enumerate(self.pending):
            if pending.parent == parent:
                del self.pending[i]
                return

    def decide(self, ready: int, workers: Sequence[WorkerView], now: float) -> list[Decision]:
        """What to do now, given ``ready`` jobs waiting for a slot and the healthy ``workers``."""
        timeout = self.settings.spawn_timeout_s
        self.pending = [p for p in self.pending if now - p.since < timeout]
        self._track_idle(workers, now)
        decisions: list[Decision] = list(self._grow(ready, workers, now))
        if ready == 0:
            decisions.extend(self._shrink(workers, now))
        for decision in decisions:
            self._remember(decision, now)
        return decisions

    def extra(self, recent: int = 10) -> dict[str, Any]:
        """What STATS shows: the limits, the spawns in flight and the latest decisions."""
        return {
            "enabled": True,
            "limits": asdict(self.settings),
            "pending_spawns": len(self.pending),
            "decisions": list(self.history)[-recent:],
        }

    # ------------------------------------------------------------------ internals
    def _track_idle(self, workers: Iterable[WorkerView], now: float) -> None:
        idle = self._idle_since
        seen: set[str] = set()
        for worker in workers:
            seen.add(worker.id)
            if worker.load:
                idle.pop(worker.id, None)
            else:
                idle.setdefault(worker.id, now)
        for gone in [worker_id for worker_id in idle if worker_id not in seen]:
            del idle[gone]

    def _grow(self, ready: int, workers: Sequence[WorkerView], now: float) -> list[Spawn]:
        settings = self.settings
        free = sum(max(0, w.capacity - w.load) for w in workers) + sum(p.capacity for p in self.pending)
        if ready <= free or not workers:
            self.pressure_since = None
            return []
        if self.pressure_since is None:
            self.pressure_since = now
        waited = now - self.pressure_since
        if waited < settings.scale_up_after_s or now - self.last_spawn_at < settings.cooldown_s:
            return []
        room = settings.max_workers - len(workers) - len(self.pending)
        mean_capacity = max(1, round(sum(w.capacity for w in workers) / len(workers)))
        wanted = min(settings.max_step, room, math.ceil((ready - free) / mean_capacity))
        spawns: list[Spawn] = []
        children = {w.id: w.children + sum(1 for p in self.pending if p.parent == w.id) for w in workers}
        for _ in range(max(0, wanted)):
            parent = self._parent(workers, children)
            if parent is None:
                break
            children[parent.id] += 1
            reason = f"{ready} job(s) ready, {free} free slot(s) for {waited:.1f}s"
            spawns.append(Spawn(parent.id, reason))
            self.pending.append(_Pending(parent.id, parent.capacity, now))
            free += parent.capacity
        if spawns:
            self.last_spawn_at = now
        return spawns

    def _parent(self, workers: Sequence[WorkerView], children: dict[str, int]) -> WorkerView | None:
        """The least-loaded worker with room for one more child under the limits."""
        settings = self.settings
        fits = [w for w in workers if children[w.id] < settings.max_children and w.depth + 1 <= settings.max_depth]
        if not fits:
            return None
        return min(fits, key=lambda w: (w.load / w.capacity, children[w.id], w.depth, w.id))

    def _shrink(self, workers: Sequence[WorkerView], now: float) -> list[Retire]:
        limit = self.settings.idle_retire_s
        retire: list[Retire] = []
        for worker in workers:
            since = self._idle_since.get(worker.id)
            if not worker.autoscaled or worker.children or worker.load or since is None:
                continue
            if now - since >= limit:
                retire.append(Retire(worker.id, f"idle for {now - since:.1f}s with nothing queued"))
                del self._idle_since[worker.id]
        return retire

    def _remember(self, decision: Decision, now: float) -> None:
        if isinstance(decision, Spawn):
            entry = {"t": now, "action": "spawn", "worker": decision.parent, "reason": decision.reason}
        else:
            entry = {"t": now, "action": "retire", "worker": decision.worker, "reason": decision.reason}
        self.history.append(entry)
