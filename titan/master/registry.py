"""The workers the master knows, their slots and their health. Pure: time is passed in.

Health
------
``HEALTHY``: registered, connected, heard from within the heartbeat timeout.
``DRAINING``: connected but takes no new tasks. ``DISCONNECTED``: its connection
dropped; its tasks stay assigned, because a worker keeps running them and
reports on reconnect. ``LOST``: disconnected (or silent while connected) for
``heartbeat_timeout_s``; the core requeues its tasks. ``RETIRED``: it was
draining and left with nothing assigned (a RETIRE, or a drained child), which
is no loss. A lost or retired record is kept for one more timeout so STATS can
show it, then forgotten.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from protocol import Register, WorkerInfo
from titan.errors import TitanError
from titan.jobs import Job

__all__ = ["DuplicateWorker", "Health", "WorkerRecord", "WorkerRegistry"]


class DuplicateWorker(TitanError):
    """A worker id registered again while its first connection is still up."""

    code = "DUPLICATE_WORKER"

    def __init__(self, worker_id: str, name: str) -> None:
        super().__init__(f"worker '{worker_id}' {name} is already connected; refusing a second registration")
        self.worker_id = worker_id


class Health(StrEnum):
    """A worker's standing; see the module docstring."""

    HEALTHY = "HEALTHY"
    DRAINING = "DRAINING"
    DISCONNECTED = "DISCONNECTED"
    LOST = "LOST"
    RETIRED = "RETIRED"


@dataclass(slots=True, eq=False)
class HostMemory:
    """One machine's memory, shared by every worker on it (a parent and its children, say).

    Each worker offers its own share (``WorkerRecord.memory_mb``: the machine's whole memory unless
    ``--memory`` says less), so the workers of one host together could offer it several times; the
    reservations of all of them together are held to what the machine has.
    """

    total_mb: int | None = None  # as its workers report it; None: not reported (no limit)
    used_mb: int = 0  # reserved by the active jobs of all its workers


@dataclass(slots=True, eq=False)
class WorkerRecord:
    """One worker: what it offers and what it holds."""

    id: str
    name: str
    host: str
    port: int
    capacity: int
    skills: frozenset[str]
    parent: str | None
    pid: int
    last_seen: float
    health: Health = Health.HEALTHY
    connected: bool = True
    since: float = 0.0  # when the current health began
    active: dict[str, Job] = field(default_factory=dict)  # job id -> job, in assignment order
    used_slots: int = 0
    spawn_id: str = ""  # a child worker: the DEPLOY job or spawn request it was started for
    memory_mb: int | None = None  # what its jobs may reserve in all; None: no limit
    # known only from the tasks a master before this one gave it: it has not registered since the restart
    inherited: bool = False
    used_memory_mb: int = 0  # reserved by its active jobs
    # its machine's memory, shared with the other workers there (one per host name)
    host_memory: HostMemory = field(default_factory=HostMemory)

    @property
    def free_slots(self) -> int:
        return self.capacity - self.used_slots

    def fits(self, job: Job) -> bool:
        """Whether ``job`` could start here now: skills, free slots and unreserved memory.

        (The scheduler's loop inlines the same test: it runs for every candidate of every dispatch.)
        """
        memory = job.memory_mb
        host = self.host_memory
        return (
            self.capacity - self.used_slots >= job.slots
            and job.skills <= self.skills
            and (memory is None or self.memory_mb is None or self.memory_mb - self.used_memory_mb >= memory)
            and (memory is None or host.total_mb is None or host.total_mb - host.used_mb >= memory)
        )

    def could_fit(self, job: Job) -> bool:
        """Whether ``job`` could ever start here, once the worker is idle."""
        memory = job.memory_mb
        total = self.host_memory.total_mb
        return (
            job.slots <= self.capacity
            and job.skills <= self.skills
            and (memory is None or self.memory_mb is None or memory <= self.memory_mb)
            and (memory is None or total is None or memory <= total)
        )

    def info(self, now: float) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            name=self.name,
            host=self.host,
            port=self.port,
            load=len(self.active),
            capacity=self.capacity,
            skills=sorted(self.skills),
            health=self.health.value,
            parent=self.parent,
            services=[job_id for job_id, job in self.active.items() if job.is_service],
            tasks=[job_id for job_id, job in self.active.items() if not job.is_service],
            last_seen_s=max(0.0, now - self.last_seen),
            pid=self.pid,
            spawn_id=self.spawn_id,
            memory_mb=self.memory_mb,
            memory_used_mb=self.used_memory_mb,
        )


class WorkerRegistry:
    """Workers by id, plus the list the scheduler may pick from.

    ``schedulable`` is rebuilt only when a worker's health changes (rare), so
    dispatch never filters the whole table.
    """

    def __init__(self) -> None:
        self._workers: dict[str, WorkerRecord] = {}
        self.schedulable: list[WorkerRecord] = []
        self._hosts: dict[str, HostMemory] = {}  # host name -> the memory its workers share

    def __len__(self) -> int:
        return len(self._workers)

    def __iter__(self) -> Iterator[WorkerRecord]:
        return iter(self._workers.values())

    def get(self, worker_id: str) -> WorkerRecord | None:
        return self._workers.get(worker_id)

    def register(self, msg: Register, now: float) -> WorkerRecord:
        """Add a worker or take back a known one; the tasks it held stay assigned.

        Raises:
            DuplicateWorker: the id is registered on a connection that is still up.
        """
        skills = frozenset(s.strip().upper() for s in msg.skills if s.strip())
        record = self._workers.get(msg.worker_id)
        if record is None:
            record = WorkerRecord(
                id=msg.worker_id,
                name=msg.name or f"[{msg.port}]",
                host=msg.host,
                port=msg.port,
                capacity=msg.capacity,
                skills=skills,
                parent=msg.parent,
                pid=msg.pid,
                last_seen=now,
                since=now,
                spawn_id=msg.spawn_id,
                memory_mb=msg.memory_mb,
            )
            self._workers[record.id] = record
        elif record.connected:
            raise DuplicateWorker(record.id, record.name)
        else:
            record.name = msg.name or record.name
            record.host, record.port, record.pid = msg.host, msg.port, msg.pid
            record.inherited = False
            record.capacity, record.skills, record.parent = msg.capacity, skills, msg.parent
            record.spawn_id, record.memory_mb = msg.spawn_id, msg.memory_mb
        self._join_host(record, msg.host_memory_mb)
        self._set(record, Health.HEALTHY, now, connected=True)
        record.last_seen = now
        return record

    def expect(self, worker_id: str, name: str, now: float) -> WorkerRecord:
        """A worker that held tasks before the master restarted: DISCONNECTED from ``now``.

        Its tasks can be assigned to it at once; it gets one heartbeat timeout to
        register (which takes this record back) before it is declared lost.
        """
        record = WorkerRecord(
            id=worker_id,
            name=name,
            host="",
            port=0,
            capacity=0,
            skills=frozenset(),
            parent=None,
            pid=0,
            last_seen=now,
            connected=False,
            health=Health.DISCONNECTED,
            since=now,
            inherited=True,
        )
        self._workers[worker_id] = record
        return record

    def touch(self, worker_id: str, now: float) -> None:
        record = self._workers.get(worker_id)
        if record is not None:
            record.last_seen = now

    def disconnected(self, worker_id: str, now: float) -> WorkerRecord | None:
        record = self._workers.get(worker_id)
        if record is not None and record.connected:
            # a drained worker with nothing left leaves on purpose: nothing to wait for or requeue
            gone = Health.RETIRED if record.health is Health.DRAINING and not record.active else Health.DISCONNECTED
            self._set(record, gone, now, connected=False)
        return record

    def drain(self, worker_id: str, now: float) -> None:
        record = self._workers.get(worker_id)
        if record is not None and record.health is Health.HEALTHY:
            self._set(record, Health.DRAINING, now, connected=True)

    def expired(self, now: float, timeout_s: float) -> list[WorkerRecord]:
        """Workers to declare lost now: disconnected, or silent while connected, for ``timeout_s``.

        Records lost for another ``timeout_s`` are forgotten here as well.
        """
        due: list[WorkerRecord] = []
        for record in list(self._workers.values()):
            if record.health is Health.LOST or record.health is Health.RETIRED:
                if now - record.since >= timeout_s and not record.active:
                    del self._workers[record.id]
            elif record.connected:
                if now - record.last_seen >= timeout_s:
                    due.append(record)
            elif now - record.since >= timeout_s:
                due.append(record)
        return due

    def mark_lost(self, record: WorkerRecord, now: float) -> None:
        self._set(record, Health.LOST, now, connected=False)

    def assign(self, worker_id: str, job: Job) -> None:
        record = self._workers[worker_id]
        record.active[job.id] = job
        record.used_slots += job.slots
        if job.memory_mb:
            record.used_memory_mb += job.memory_mb
            record.host_memory.used_mb += job.memory_mb

    def release(self, worker_id: str, job: Job) -> None:
        record = self._workers.get(worker_id)
        if record is not None and record.active.pop(job.id, None) is not None:
            record.used_slots -= job.slots
            if job.memory_mb:
                record.used_memory_mb -= job.memory_mb
                record.host_memory.used_mb -= job.memory_mb

    def _join_host(self, record: WorkerRecord, host_memory_mb: int | None) -> None:
        """Share the memory of ``record``'s host with the other workers there, bringing its reservations."""
        pool = self._hosts.get(record.host)
        if pool is None:
            pool = self._hosts[record.host] = HostMemory()
        if host_memory_mb is not None:
            pool.total_mb = max(pool.total_mb or 0, host_memory_mb)
        if pool is not record.host_memory:
            record.host_memory.used_mb -= record.used_memory_mb  # a record made before we knew its host
            pool.used_mb += record.used_memory_mb
            record.host_memory = pool

    def find(self, ref: str) -> WorkerRecord | None:
        """A worker by id, by display name (``[8081]``) or by port; ids win, then the first match."""
        record = self._workers.get(ref)
        if record is not None:
            return record
        bare = ref.strip().strip("[]")
        for record in self._workers.values():
            if record.name.strip("[]") == bare or str(record.port) == bare:
                return record
        return None

    def children(self, worker_id: str) -> list[WorkerRecord]:
        """The workers that name ``worker_id`` as their parent and are not lost."""
        return [
            r
            for r in self._workers.values()
            if r.parent == worker_id and r.health is not Health.LOST and r.health is not Health.RETIRED
        ]

    def subtree(self, record: WorkerRecord) -> list[WorkerRecord]:
        """``record`` and every worker below it that is not lost or retired, parents first."""
        found: list[WorkerRecord] = []
        seen: set[str] = set()
        todo = [record]
        while todo:
            current = todo.pop()
            if current.id in seen:
                continue
            seen.add(current.id)
            found.append(current)
            todo.extend(self.children(current.id))
        return found

    def depth(self, record: WorkerRecord) -> int:
        """0 for a top-level worker, 1 for its children, ... (a parent we do not know ends the chain)."""
        depth, seen = 0, {record.id}
        parent = self._workers.get(record.parent) if record.parent else None
        while parent is not None and parent.id not in seen:
            depth += 1
            seen.add(parent.id)
            parent = self._workers.get(parent.parent) if parent.parent else None
        return depth

    def infos(self, now: float) -> list[WorkerInfo]:
        return [record.info(now) for record in self._workers.values()]

    def _set(self, record: WorkerRecord, health: Health, now: float, *, connected: bool) -> None:
        record.health = health
        record.connected = connected
        record.since = now
        self.schedulable = [r for r in self._workers.values() if r.health is Health.HEALTHY]
