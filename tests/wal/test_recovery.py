"""Recovery after simulated crashes: torn tails, corruption, leftovers, and appending afterwards."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from titan.wal import WalWriter, encode_record, load, write_snapshot
from titan.wal.files import list_directory, segment_name, snapshot_name
from titan.wal.record import SEAL_BYTES, read_seal, scan_frames


def job(i: int) -> dict[str, object]:
    return {"t": "job", "id": f"TSK-{i:08x}", "type": "SHELL", "data": "true", "p": 1}


async def write_log(directory: Path, records: list[dict[str, object]], **options: object) -> None:
    async with WalWriter(directory, **options) as wal:  # type: ignore[arg-type]
        for record in records:
            await wal.append(record)


def last_segment(directory: Path) -> Path:
    return list_directory(directory).segments[-1][1]


def test_an_empty_or_missing_directory_recovers_to_nothing(tmp_path: Path) -> None:
    recovery = load(tmp_path / "nowhere")
    assert recovery.snapshot is None and list(recovery.records()) == []
    assert recovery.problem is None and recovery.next_segment == 1
    assert "no snapshot, 0 records" in recovery.summary()


@pytest.mark.parametrize("seed", range(8))
async def test_crash_mid_batch_recovers_exactly_the_acknowledged_prefix(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    acked = [job(i) for i in range(rng.randint(1, 40))]
    await write_log(tmp_path, acked)
    # The crash: a batch that was being written (never acknowledged) is cut
    # short at a random byte, and the disk shows junk or zeros after it.
    segment = last_segment(tmp_path)
    in_flight = b"".join(encode_record(job(1000 + i)) for i in range(rng.randint(1, 10)))
    cut = rng.randrange(len(in_flight))
    junk = rng.choice([b"", bytes(rng.randrange(1, 4096)), rng.randbytes(rng.randrange(1, 300))])
    with open(segment, "ab") as handle:
        handle.write(in_flight[:cut] + junk)
    acked_size = sum(len(encode_record(r)) for r in acked)
    whole_in_flight = []
    pos = 0
    for i in range(10):
        frame = encode_record(job(1000 + i))
        if pos + len(frame) > cut:
            break
        whole_in_flight.append(job(1000 + i))
        pos += len(frame)

    recovery = load(tmp_path)

    # Records that reached the disk whole may come back even if unacknowledged;
    # nothing torn ever does, and every acknowledged record does.
    assert list(recovery.records()) == acked + whole_in_flight
    if cut == pos and not junk:
        assert recovery.problem is None
    else:
        assert recovery.problem is not None and recovery.problem.kind == "torn tail"
        assert recovery.problem.path == segment and recovery.problem.offset == acked_size + pos
        assert str(recovery.problem).startswith(f"torn tail in {segment.name} at offset {acked_size + pos}")
    assert segment.stat().st_size == acked_size + pos  # truncated, so appends start clean

    await write_log(tmp_path, [job(2000)], first_segment=recovery.next_segment)
    again = load(tmp_path)
    assert again.problem is None
    assert list(again.records()) == acked + whole_in_flight + [job(2000)]


@settings(max_examples=60, deadline=None)
@given(count=st.integers(0, 12), cut_back=st.integers(0, 200), garbage=st.binary(max_size=80))
def test_any_truncation_plus_garbage_replays_a_prefix_and_repairs(count: int, cut_back: int, garbage: bytes) -> None:
    records = [job(i) for i in range(count)]
    frames = [encode_record(r) for r in records]
    blob = b"".join(frames)
    keep = max(0, len(blob) - cut_back)
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        (directory / segment_name(1)).write_bytes(blob[:keep] + garbage)
        recovery = load(directory)
        replayed = list(recovery.records())
        assert replayed == records[: len(replayed)]
        good = sum(len(f) for f in frames[: len(replayed)])
        if recovery.problem is not None:
            assert recovery.problem.kind == "torn tail" and recovery.problem.offset == good
        assert (directory / segment_name(1)).stat().st_size == good
        assert load(directory).problem is None


async def test_corruption_in_an_older_segment_stops_replay_and_sets_the_rest_aside(tmp_path: Path) -> None:
    size = len(encode_record(job(0)))
    records = [job(i) for i in range(12)]
    await write_log(tmp_path, records, segment_bytes=size * 4)
    segments = list_directory(tmp_path).segments
    assert len(segments) == 3
    first = segments[0][1]
    data = bytearray(first.read_bytes())
    data[size + 20] ^= 0x01  # inside the second record of the first segment
    first.write_bytes(bytes(data))

    recovery = load(tmp_path)

    assert list(recovery.records()) == records[:1]
    problem = recovery.problem
    assert problem is not None and problem.kind == "corrupt"
    assert problem.path == first and problem.offset == size
    assert "bad checksum" in problem.reason and f"resume at offset {size * 2}" in problem.reason
    assert problem.dropped_bytes == size * 11 + 2 * SEAL_BYTES  # two more segments were sealed
    # Nothing deleted: the damaged tail and the later segments are kept aside.
    assert [p.name for p in problem.set_aside] == [
        first.name + ".damaged",
        segments[1][1].name + ".damaged",
        segments[2][1].name + ".damaged",
    ]
    assert (tmp_path / (first.name + ".damaged")).read_bytes() == bytes(data[size:])
    assert [p for _, p in list_directory(tmp_path).segments] == [first]
    assert recovery.next_segment == segments[0][0] + 1

    await write_log(tmp_path, [job(99)], first_segment=recovery.next_segment)
    again = load(tmp_path)
    assert again.problem is None and list(again.records()) == [records[0], job(99)]


async def test_corruption_followed_by_good_records_in_the_last_segment_is_not_a_torn_tail(tmp_path: Path) -> None:
    records = [job(i) for i in range(5)]
    await write_log(tmp_path, records)
    segment = last_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[3] ^= 0x40  # the first record's length
    segment.write_bytes(bytes(data))
    recovery = load(tmp_path, repair=False)
    assert recovery.problem is not None and recovery.problem.kind == "corrupt"
    assert list(recovery.records()) == []
    assert segment.read_bytes() == bytes(data)  # repair=False touches nothing
    assert recovery.next_segment > list_directory(tmp_path).segments[-1][0]


async def test_a_missing_segment_is_a_hole(tmp_path: Path) -> None:
    size = len(encode_record(job(0)))
    await write_log(tmp_path, [job(i) for i in range(9)], segment_bytes=size * 3)
    segments = list_directory(tmp_path).segments
    segments[1][1].unlink()
    recovery = load(tmp_path)
    assert list(recovery.records()) == [job(i) for i in range(3)]
    assert recovery.problem is not None and recovery.problem.kind == "corrupt"
    assert "missing" in recovery.problem.reason and recovery.problem.path == segments[2][1]
    assert recovery.next_segment == segments[1][0]


async def test_snapshot_leftovers_are_ignored_and_cleaned(tmp_path: Path) -> None:
    async with WalWriter(tmp_path) as wal:
        await wal.append(job(1))
        upto = await wal.snapshot({"jobs": 1})
        await wal.append(job(2))
        later = wal.cut()
        await wal.append(job(3))
    # A crash while writing the next snapshot leaves its temp file behind, and
    # a snapshot that rotted on disk is no better than none.
    temp = tmp_path / (snapshot_name(later) + ".tmp")
    temp.write_bytes(b"half a snapshot")
    rotten = tmp_path / snapshot_name(later + 5)
    rotten.write_bytes(b"TITANSN1" + os.urandom(40))

    recovery = load(tmp_path)

    assert recovery.snapshot == {"jobs": 1} and recovery.snapshot_segment == upto
    assert list(recovery.records()) == [job(2), job(3)]
    assert recovery.problem is None
    assert set(recovery.ignored) == {temp, rotten}
    assert not temp.exists() and rotten.exists()  # temp files are debris; a bad snapshot is evidence


def test_stale_segments_below_the_snapshot_are_dropped(tmp_path: Path) -> None:
    # An interrupted prune: the snapshot landed, the old segments are still there.
    (tmp_path / segment_name(1)).write_bytes(encode_record(job(1)))
    (tmp_path / segment_name(2)).write_bytes(encode_record(job(2)))
    write_snapshot(tmp_path, {"n": 2}, 3)
    (tmp_path / segment_name(3)).write_bytes(encode_record(job(3)))
    recovery = load(tmp_path)
    assert recovery.snapshot == {"n": 2} and list(recovery.records()) == [job(3)]
    assert [seq for seq, _ in list_directory(tmp_path).segments] == [3]
    assert recovery.next_segment == 4


async def test_figures_and_summary(tmp_path: Path) -> None:
    size = len(encode_record(job(0)))
    await write_log(tmp_path, [job(i) for i in range(10)], segment_bytes=size * 4)
    recovery = load(tmp_path)
    assert recovery.records_count == 10 and recovery.bytes_count == size * 10
    assert len(recovery.spans) == 3
    assert recovery.summary() == f"no snapshot, 10 records in 3 segments ({size * 10} bytes)"


async def test_full_segments_are_sealed_and_recovered_without_a_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = len(encode_record(job(0)))
    records = [job(i) for i in range(10)]
    await write_log(tmp_path, records, segment_bytes=size * 4)
    segments = [path for _, path in list_directory(tmp_path).segments]
    assert len(segments) == 3
    for path in segments[:2]:
        seal = read_seal(path.read_bytes())
        assert seal is not None and (seal.covered, seal.records) == (size * 4, 4)
    assert read_seal(segments[2].read_bytes()) is None  # the open segment has no seal
    walked: list[int] = []

    def counting_scan(buf: bytes) -> object:
        walked.append(len(buf))
        return scan_frames(buf)

    monkeypatch.setattr("titan.wal.recovery.scan_frames", counting_scan)
    recovery = load(tmp_path)
    assert walked == [size * 2]  # only the unsealed last segment was walked frame by frame
    assert recovery.problem is None and recovery.records_count == 10
    assert list(recovery.records()) == records


async def test_a_damaged_seal_costs_nothing_but_the_shortcut(tmp_path: Path) -> None:
    size = len(encode_record(job(0)))
    records = [job(i) for i in range(10)]
    await write_log(tmp_path, records, segment_bytes=size * 4)
    first = list_directory(tmp_path).segments[0][1]
    data = bytearray(first.read_bytes())
    data[-3] ^= 0x10  # inside the seal's own body
    first.write_bytes(bytes(data))
    recovery = load(tmp_path)
    assert recovery.problem is None
    assert list(recovery.records()) == records


async def test_a_rotten_record_in_a_sealed_segment_is_still_found(tmp_path: Path) -> None:
    size = len(encode_record(job(0)))
    await write_log(tmp_path, [job(i) for i in range(10)], segment_bytes=size * 4)
    first = list_directory(tmp_path).segments[0][1]
    data = bytearray(first.read_bytes())
    data[size * 2 + 12] ^= 0x01  # the third record's body: the seal's checksum no longer matches
    first.write_bytes(bytes(data))
    recovery = load(tmp_path)
    assert recovery.problem is not None and recovery.problem.kind == "corrupt"
    assert recovery.problem.offset == size * 2 and "bad checksum" in recovery.problem.reason
    assert list(recovery.records()) == [job(0), job(1)]
