"""Ready queue order, the delay heap and least-connections choice, without a network."""

from __future__ import annotations

from protocol import JobSpec, Register
from titan.jobs import Job, JobState
from titan.master import DelayHeap, LeastConnections, ReadyQueue, WorkerRegistry


def job(
    job_id: str,
    *,
    seq: int,
    priority: int = 1,
    skills: tuple[str, ...] = ("GENERAL",),
    slots: int = 1,
    memory_mb: int | None = None,
) -> Job:
    spec = JobSpec(type="SHELL", data="true", priority=priority, skills=list(skills), slots=slots, memory_mb=memory_mb)
    return Job.from_spec(
        spec, job_id=job_id, seq=seq, now=0.0, state=JobState.PENDING, run_kind="SHELL", run_data="true", run_args=[]
    )


def workers(*specs: tuple[str, int, list[str]]) -> WorkerRegistry:
    registry = WorkerRegistry()
    for i, (worker_id, capacity, skills) in enumerate(specs):
        registry.register(
            Register(
                worker_id=worker_id, name=f"[{8081 + i}]", host="h", port=8081 + i, capacity=capacity, skills=skills
            ),
            now=0.0,
        )
    return registry


def drain_order(queue: ReadyQueue) -> list[str]:
    order = []
    while (head := queue.best()) is not None:
        order.append(queue.pop(head[0]).id)
    return order


def test_ready_queue_orders_by_priority_then_submission() -> None:
    queue = ReadyQueue()
    for j in [job("a", seq=1), job("b", seq=2, priority=5), job("c", seq=3), job("d", seq=4, priority=5)]:
        queue.push(j)
    assert [j.id for j in queue.jobs()] == ["b", "d", "a", "c"]
    assert drain_order(queue) == ["b", "d", "a", "c"]


def test_jobs_that_reserve_different_memory_are_classes_of_their_own() -> None:
    queue = ReadyQueue()
    queue.push(job("huge", seq=1, memory_mb=64_000))
    queue.push(job("plain", seq=2))
    head = queue.best()
    assert head is not None and head[1].id == "huge"
    # no worker has 64 000 MiB: that class is set aside and the job behind it still comes out
    head = queue.best(skip={head[0]})
    assert head is not None and head[1].id == "plain"


def test_ready_queue_orders_across_classes() -> None:
    queue = ReadyQueue()
    queue.push(job("gpu-old", seq=1, skills=("GPU",)))
    queue.push(job("plain", seq=2))
    queue.push(job("big", seq=3, slots=2, priority=3))
    assert drain_order(queue) == ["big", "gpu-old", "plain"]


def test_ready_queue_drops_stale_entries_lazily() -> None:
    queue = ReadyQueue()
    a, b = job("a", seq=1), job("b", seq=2)
    queue.push(a)
    queue.push(b)
    a.state = JobState.CANCELLED
    assert drain_order(queue) == ["b"]
    assert len(queue) == 0


def test_jobs_with_the_same_seq_never_compare_the_jobs_themselves() -> None:
    """A WAL two masters wrote at once holds equal seqs; entries then tied up to the Job (TypeError)."""
    queue = ReadyQueue()
    queue.extend([job("first", seq=1), job("second", seq=1), job("later", seq=2), job("third", seq=1)])
    queue.push(job("pushed", seq=1))
    queue.push(job("gpu", seq=1, skills=("GPU",)))  # the same tie across two classes
    assert [j.id for j in queue.jobs()] == ["first", "second", "third", "pushed", "gpu", "later"]
    assert drain_order(queue) == ["first", "second", "third", "pushed", "gpu", "later"]


def test_a_requeued_job_goes_behind_its_equal_seq_peers_and_its_stale_entry_is_dropped() -> None:
    queue = ReadyQueue()
    a, b = job("a", seq=1), job("b", seq=1)
    queue.extend([a, b])
    a.state = JobState.SCHEDULED  # dispatched, then back to PENDING (worker lost): a new entry
    a.state = JobState.PENDING
    queue.push(a)
    assert drain_order(queue) == ["b", "a"]  # the stale first entry of a is dropped, not compared


def test_ready_queue_skips_a_class_set_aside() -> None:
    queue = ReadyQueue()
    gpu = job("gpu", seq=1, skills=("GPU",), priority=9)
    plain = job("plain", seq=2)
    queue.push(gpu)
    queue.push(plain)
    head = queue.best()
    assert head is not None and head[1] is gpu
    head = queue.best(skip={head[0]})
    assert head is not None and head[1] is plain


def test_delay_heap_gives_earliest_first_and_drops_stale() -> None:
    heap = DelayHeap()
    a, b, c = job("a", seq=1), job("b", seq=2), job("c", seq=3)
    for j in (a, b, c):
        j.state = JobState.DELAYED
    heap.push(b, 5.0)
    heap.push(a, 2.0)
    heap.push(c, 3.0)
    c.state = JobState.CANCELLED
    assert heap.next_due() == 2.0
    assert heap.pop_due(4.0) == [a]
    assert heap.next_due() == 5.0
    assert heap.pop_due(4.9) == []
    assert heap.pop_due(5.0) == [b]
    assert heap.next_due() is None


def test_least_connections_prefers_the_least_loaded_relative_to_capacity() -> None:
    registry = workers(("w1", 4, ["GENERAL"]), ("w2", 2, ["GENERAL"]))
    w1, w2 = registry.get("w1"), registry.get("w2")
    assert w1 is not None and w2 is not None
    registry.assign("w1", job("x1", seq=1))
    registry.assign("w2", job("x2", seq=2))
    # w1 is 1/4 busy, w2 1/2: w1 wins
    assert LeastConnections().choose(registry.schedulable, job("n", seq=3)) is w1


def test_least_connections_needs_free_slots_and_skills() -> None:
    registry = workers(("w1", 1, ["GENERAL"]), ("w2", 4, ["GENERAL", "GPU"]))
    picker = LeastConnections()
    assert picker.choose(registry.schedulable, job("g", seq=1, skills=("GPU",))) is registry.get("w2")
    assert picker.choose(registry.schedulable, job("big", seq=2, slots=3)) is registry.get("w2")
    assert picker.choose(registry.schedulable, job("huge", seq=3, slots=5)) is None
    assert picker.choose(registry.schedulable, job("tpu", seq=4, skills=("TPU",))) is None
    assert not picker.could_ever_run(registry.schedulable, job("tpu", seq=4, skills=("TPU",)))
    assert picker.could_ever_run(registry.schedulable, job("g", seq=1, skills=("GPU",)))


def test_least_connections_needs_unreserved_memory_too() -> None:
    registry = WorkerRegistry()
    for i, memory in enumerate([1000, 8000]):
        registry.register(
            Register(worker_id=f"w{i + 1}", name="", host="h", port=8081 + i, capacity=4, skills=["GENERAL"],
                     memory_mb=memory),
            now=0.0,
        )  # fmt: skip
    picker = LeastConnections()
    w2 = registry.get("w2")
    assert picker.choose(registry.schedulable, job("a", seq=1, memory_mb=6000)) is w2
    registry.assign("w2", job("a", seq=1, memory_mb=6000))
    assert picker.choose(registry.schedulable, job("b", seq=2, memory_mb=3000)) is None  # 2 000 MiB left
    assert picker.could_ever_run(registry.schedulable, job("b", seq=2, memory_mb=3000))
    assert not picker.could_ever_run(registry.schedulable, job("c", seq=3, memory_mb=9000))


def test_ties_are_broken_round_robin() -> None:
    registry = workers(("w1", 100, ["GENERAL"]), ("w2", 100, ["GENERAL"]), ("w3", 100, ["GENERAL"]))
    picker = LeastConnections()
    picks = []
    for i in range(6):
        chosen = picker.choose(registry.schedulable, job(f"j{i}", seq=i))
        assert chosen is not None
        picks.append(chosen.id)
        # release at once: every choice is a three-way tie
    assert picks == ["w1", "w2", "w3", "w1", "w2", "w3"]


def test_equal_load_spreads_evenly_when_jobs_stay() -> None:
    registry = workers(("w1", 2, ["GENERAL"]), ("w2", 2, ["GENERAL"]))
    picker = LeastConnections()
    for i in range(4):
        j = job(f"j{i}", seq=i)
        chosen = picker.choose(registry.schedulable, j)
        assert chosen is not None
        registry.assign(chosen.id, j)
    assert [len(w.active) for w in registry] == [2, 2]
    assert picker.choose(registry.schedulable, job("extra", seq=9)) is None


def test_a_worker_expected_back_brings_its_reservations_into_its_hosts_pool() -> None:
    registry = WorkerRegistry()
    registry.expect("w1", "[8081]", now=0.0)  # after a master restart: its host is not known yet
    held = job("held", seq=1, memory_mb=300)
    registry.assign("w1", held)
    for worker_id in ("w1", "w2"):
        registry.register(
            Register(worker_id=worker_id, name="", host="a", port=8081, capacity=2, skills=["GENERAL"],
                     memory_mb=1000, host_memory_mb=1000),
            now=1.0,
        )  # fmt: skip
    w1, w2 = registry.get("w1"), registry.get("w2")
    assert w1 is not None and w2 is not None and w1.host_memory is w2.host_memory
    assert (w1.host_memory.used_mb, w1.used_memory_mb, w2.used_memory_mb) == (300, 300, 0)
    assert not w2.fits(job("big", seq=2, memory_mb=800))  # w2 offers 1 000, but its host has 700 left
    registry.release("w1", held)
    assert w2.fits(job("big", seq=2, memory_mb=800)) and w1.host_memory.used_mb == 0
