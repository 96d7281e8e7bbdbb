"""The group-commit writer against real files, with the sync function injected to count fsyncs."""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from titan.wal import WalClosed, WalWriteFailed, WalWriter, decode_records, encode_record, load
from titan.wal.files import list_directory, segment_name
from titan.wal.record import SEAL_BYTES, read_seal


class SyncSpy:
    """Stands in for ``os.fdatasync``: really syncs, and remembers how far each sync reached."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.synced: dict[int, int] = {}  # st_ino -> file size covered by the last sync
        self.fail_after = fail_after

    def __call__(self, fd: int) -> None:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise OSError(5, "Input/output error")
        os.fdatasync(fd)
        self.calls += 1
        info = os.fstat(fd)
        self.synced[info.st_ino] = info.st_size


def records_on_disk(directory: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for _, path in list_directory(directory).segments:
        data = path.read_bytes()
        seal = read_seal(data)
        records, good, problem = decode_records(data if seal is None else data[: seal.covered])
        assert problem is None, (path, good, problem)
        out += records
    return out


async def test_group_commit_shares_fsyncs_and_acknowledges_only_durable_records(tmp_path: Path) -> None:
    spy = SyncSpy()
    async with WalWriter(tmp_path, sync=spy) as wal:
        segment = tmp_path / segment_name(wal.segment)
        inode = segment.stat().st_ino

        async def appender(i: int) -> None:
            await wal.append({"i": i})
            # Re-read the file: the record is there, and a sync covered it.
            data = segment.read_bytes()
            records, good, _ = decode_records(data)
            index = records.index({"i": i})
            end = len(b"".join(_frame(r) for r in records[: index + 1]))
            assert spy.synced[inode] >= end

        await asyncio.gather(*(appender(i) for i in range(64)))
    assert 1 <= spy.calls <= 4, spy.calls
    assert wal.stats.records == 64
    assert wal.stats.max_batch_records >= 16
    assert sorted(r["i"] for r in records_on_disk(tmp_path)) == list(range(64))  # type: ignore[type-var]


def _frame(record: Mapping[str, object]) -> bytes:
    return encode_record(record)


async def test_appends_keep_call_order_including_nowait(tmp_path: Path) -> None:
    async with WalWriter(tmp_path, sync=SyncSpy()) as wal:
        pending = []
        for i in range(300):
            if i % 3:
                wal.append_nowait({"i": i})
            else:
                pending.append(asyncio.ensure_future(wal.append({"i": i})))
        await asyncio.gather(*pending)
        wal.append_nowait({"i": 300})
        await wal.flush()
        assert [r["i"] for r in records_on_disk(tmp_path)] == list(range(301))


@pytest.mark.parametrize("seed", range(6))
async def test_any_mix_of_waited_and_unwaited_appends_cuts_and_turns_keeps_order(tmp_path: Path, seed: int) -> None:
    """The end-of-turn writer, the lingering task, its helper thread and rotation, interleaved at random."""
    rng = random.Random(seed)
    durable: list[int] = []
    async with WalWriter(
        tmp_path,
        sync=SyncSpy(),
        segment_bytes=400,
        commit_delay_s=rng.choice([0.0, 0.0005, 0.002]),
        on_durable=lambda n, failure: durable.append(n) if failure is None else None,
    ) as wal:
        waiters: list[tuple[int, asyncio.Future[None]]] = []
        for i in range(400):
            step = rng.random()
            if step < 0.3:
                waiters.append((i, wal.append({"i": i})))
            else:
                wal.append_nowait({"i": i})
            if step > 0.97:
                wal.cut()
            elif step > 0.9:
                wal.hurry()
            if rng.random() < 0.3:
                await asyncio.sleep(rng.choice([0, 0, 0.0003]))
            # whatever an acknowledged append covers is durable: every earlier record, in order
            for index, waiter in waiters:
                if waiter.done():
                    assert durable and durable[-1] >= index + 1
            waiters = [(index, waiter) for index, waiter in waiters if not waiter.done()]
        await asyncio.gather(*(waiter for _, waiter in waiters))
        await wal.flush()
    assert durable == sorted(durable) and durable[-1] == 400
    assert [r["i"] for r in records_on_disk(tmp_path)] == list(range(400))


async def test_rotation_at_the_size_threshold(tmp_path: Path) -> None:
    record = {"pad": "x" * 40}
    size = len(_frame(record))
    async with WalWriter(tmp_path, segment_bytes=size * 3, sync=SyncSpy()) as wal:
        first = wal.segment
        for _ in range(10):
            await wal.append(record)
        wal.append_nowait({"pad": "y" * 500})  # larger than a segment: gets one of its own
        await wal.append(record)
    segments = list_directory(tmp_path).segments
    assert [seq for seq, _ in segments] == list(range(first, first + len(segments)))
    sizes = [path.stat().st_size for _, path in segments]
    sealed = SEAL_BYTES  # every segment but the open one ends with its seal
    assert sizes[:4] == [size * 3 + sealed, size * 3 + sealed, size * 3 + sealed, size + sealed]
    assert sizes[4] > size * 3 + sealed and sizes[5] == size
    assert len(records_on_disk(tmp_path)) == 12


async def test_fsync_off_writes_without_syncing(tmp_path: Path) -> None:
    spy = SyncSpy()
    async with WalWriter(tmp_path, fsync=False, sync=spy, segment_bytes=100) as wal:
        await asyncio.gather(*(wal.append({"i": i}) for i in range(50)))
        # Acknowledged means written to the OS: another reader sees it now.
        assert len(records_on_disk(tmp_path)) == 50
        await wal.snapshot({"n": 50})
    assert spy.calls == 0 and wal.stats.syncs == 0
    recovery = load(tmp_path)
    assert recovery.snapshot == {"n": 50} and list(recovery.records()) == []


async def test_a_cancelled_appender_does_not_withdraw_its_record(tmp_path: Path) -> None:
    async with WalWriter(tmp_path, sync=SyncSpy()) as wal:
        waiter = wal.append({"i": 1})  # the record is in the batch from here on
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await wal.append({"i": 2})
    assert records_on_disk(tmp_path) == [{"i": 1}, {"i": 2}]


async def test_cancelling_the_writer_fails_what_it_never_wrote_and_keeps_what_it_did(tmp_path: Path) -> None:
    wal = WalWriter(tmp_path, sync=SyncSpy())
    await wal.start()
    await wal.append({"i": 1})
    never_written = wal.append({"i": 2})  # the writer task has not run since
    assert wal._task is not None
    wal._task.cancel()
    with pytest.raises(WalClosed):
        await never_written
    with pytest.raises(asyncio.CancelledError):
        await wal.aclose()
    assert records_on_disk(tmp_path) == [{"i": 1}]
    with pytest.raises(WalClosed):
        wal.append_nowait({"i": 3})


async def test_a_failed_fsync_poisons_the_writer(tmp_path: Path) -> None:
    wal = WalWriter(tmp_path, sync=SyncSpy(fail_after=1))
    await wal.start()
    await wal.append({"i": 1})
    with pytest.raises(WalWriteFailed):
        await wal.append({"i": 2})
    with pytest.raises(WalWriteFailed):
        await wal.append({"i": 3})
    with pytest.raises(WalWriteFailed):
        wal.append_nowait({"i": 4})
    assert isinstance(wal.failure, WalWriteFailed)
    with pytest.raises(WalWriteFailed):
        await wal.aclose()


async def test_closed_and_unstarted_writers_refuse_appends(tmp_path: Path) -> None:
    wal = WalWriter(tmp_path)
    with pytest.raises(WalClosed):
        wal.append_nowait({"i": 1})
    async with wal:
        wal.append_nowait({"i": 1})
    with pytest.raises(WalClosed):
        await wal.append({"i": 2})
    await wal.aclose()  # idempotent
    assert records_on_disk(tmp_path) == [{"i": 1}]


async def test_unencodable_records_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    async with WalWriter(tmp_path) as wal:
        with pytest.raises(TypeError):
            await wal.append({"bad": object()})
        await wal.append({"ok": True})
    assert records_on_disk(tmp_path) == [{"ok": True}]


async def test_snapshot_cuts_a_new_segment_and_drops_the_covered_ones(tmp_path: Path) -> None:
    state: dict[str, int] = {}
    async with WalWriter(tmp_path, segment_bytes=64, sync=SyncSpy()) as wal:
        for i in range(20):
            await wal.append({"k": f"j{i}", "v": i})
            state[f"j{i}"] = i
        before = [seq for seq, _ in list_directory(tmp_path).segments]
        wal.append_nowait({"k": "j20", "v": 20})
        state["j20"] = 20
        upto = await wal.snapshot(dict(state))
        assert upto == wal.segment
        await wal.append({"k": "j21", "v": 21})
        with pytest.raises(ValueError, match="not been cut"):
            await wal.write_snapshot({}, wal.segment + 1)
    listing = list_directory(tmp_path)
    assert [seq for seq, _ in listing.snapshots] == [upto]
    assert [seq for seq, _ in listing.segments] == [upto]
    assert all(seq < upto for seq in before)
    recovery = load(tmp_path)
    assert recovery.snapshot == state and recovery.snapshot_segment == upto
    assert list(recovery.records()) == [{"k": "j21", "v": 21}]
    assert wal.stats.snapshots == 1


async def test_a_second_snapshot_replaces_the_first(tmp_path: Path) -> None:
    async with WalWriter(tmp_path, sync=SyncSpy()) as wal:
        await wal.append({"i": 1})
        first = await wal.snapshot({"n": 1})
        await wal.append({"i": 2})
        second = await wal.snapshot({"n": 2})
        await wal.append({"i": 3})
    assert second > first
    assert [seq for seq, _ in list_directory(tmp_path).snapshots] == [second]
    recovery = load(tmp_path)
    assert recovery.snapshot == {"n": 2} and list(recovery.records()) == [{"i": 3}]


async def test_a_new_writer_never_reuses_a_segment_number(tmp_path: Path) -> None:
    async with WalWriter(tmp_path) as wal:
        first = wal.segment
        await wal.append({"i": 1})
    async with WalWriter(tmp_path) as wal:
        assert wal.segment == first + 1
        await wal.append({"i": 2})
    assert records_on_disk(tmp_path) == [{"i": 1}, {"i": 2}]


async def test_a_batch_nobody_waits_on_lingers_for_company_and_a_waiter_hurries_it(tmp_path: Path) -> None:
    durable: list[int] = []
    settled = asyncio.Event()

    def on_durable(records: int, failure: object) -> None:
        durable.append(records)
        settled.set()

    async with WalWriter(tmp_path, sync=SyncSpy(), commit_delay_s=30.0, on_durable=on_durable) as wal:
        for i in range(3):
            wal.append_nowait({"i": i})
        for _ in range(5):
            await asyncio.sleep(0)
        assert durable == [] and records_on_disk(tmp_path) == []  # lingering: nobody asked yet
        await wal.append({"i": 3})  # a waiter: written at once, the lingering records with it
        await settled.wait()
        assert durable == [4] and wal.stats.commits == 1
        wal.append_nowait({"i": 4})
        wal.hurry()  # as the master does when an answer waits on the open batch
        settled.clear()
        await settled.wait()
        assert durable == [4, 5]
    assert [r["i"] for r in records_on_disk(tmp_path)] == [0, 1, 2, 3, 4]


async def test_what_a_loop_turn_waits_on_is_written_by_the_end_of_that_turn_in_one_fsync(tmp_path: Path) -> None:
    spy = SyncSpy()
    async with WalWriter(tmp_path, sync=spy, commit_delay_s=30.0) as wal:
        wal.append_nowait({"i": 0})
        waiters = [wal.append({"i": i}) for i in (1, 2)]
        await asyncio.sleep(0)  # one turn: the writer's end-of-turn callback ran before this task resumed
        assert all(waiter.done() for waiter in waiters)
        assert spy.calls == 1 and wal.stats.commits == 1
        # a batch nobody waits on still lingers for company
        wal.append_nowait({"i": 3})
        for _ in range(5):
            await asyncio.sleep(0)
        assert spy.calls == 1
        await wal.flush()
        assert spy.calls == 2
    assert [r["i"] for r in records_on_disk(tmp_path)] == [0, 1, 2, 3]


class BlockingSync(SyncSpy):
    """A sync that records its thread and, when told to, blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, fd: int) -> None:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        self.release.wait(10)
        super().__call__(fd)


async def test_a_batch_nobody_waits_on_is_synced_off_the_loop_and_one_awaited_on_it(tmp_path: Path) -> None:
    sync = BlockingSync()
    durable: list[int] = []
    async with WalWriter(tmp_path, sync=sync, commit_delay_s=0.001, on_durable=lambda n, _: durable.append(n)) as wal:
        sync.release.clear()
        wal.append_nowait({"i": 0})
        await asyncio.to_thread(sync.entered.wait, 10)
        # the helper thread is in the fsync and the loop still serves: appends queue behind it
        assert durable == []
        awaited = wal.append({"i": 1})
        sync.release.set()
        await awaited
        assert durable == [1, 2]
    main = threading.current_thread().name
    assert sync.threads[0] != main and sync.threads[1] == main
    assert [r["i"] for r in records_on_disk(tmp_path)] == [0, 1]


async def test_cancelling_the_writer_during_a_threaded_commit_lets_it_finish(tmp_path: Path) -> None:
    sync = BlockingSync()
    durable: list[int] = []
    wal = WalWriter(tmp_path, sync=sync, commit_delay_s=0.001, on_durable=lambda n, _: durable.append(n))
    await wal.start()
    sync.release.clear()
    wal.append_nowait({"i": 0})
    await asyncio.to_thread(sync.entered.wait, 10)
    assert wal._task is not None
    wal._task.cancel()
    await asyncio.sleep(0)
    threading.Timer(0.05, sync.release.set).start()  # the commit ends after the cancellation
    with pytest.raises(asyncio.CancelledError):
        await wal.aclose()
    assert durable == [1]  # settled as written, then the segment closed
    assert records_on_disk(tmp_path) == [{"i": 0}]
