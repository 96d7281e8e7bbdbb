"""The pure layer: framing, checksums, torn tails, snapshots. No event loop, no files."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from titan.wal import MAX_RECORD_BYTES, Damage, WalCorrupt, decode_records, encode_record
from titan.wal.record import (
    HEADER_BYTES,
    decode_snapshot,
    find_next_frame,
    iter_records,
    pack_snapshot_body,
    scan_frames,
    snapshot_header,
)

JOB = {"t": "job", "id": "TSK-1a2b3c4d", "type": "SHELL", "data": "true", "p": 1}
RECORDS: list[dict[str, Any]] = [
    JOB,
    {},
    {"t": "state", "id": "TSK-2", "to": "RUNNING", "worker": 8081, "at": 1.5},
    {"nested": {"deps": ["a", "b"], "blob": b"\x00\xff" * 40}, "none": None, "neg": -7},
    {"big": "x" * 70_000},
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
records_strategy = st.lists(st.dictionaries(st.text(max_size=10), json_values, max_size=6), min_size=1, max_size=8)


def stream(records: Sequence[Mapping[str, Any]]) -> bytes:
    return b"".join(encode_record(r) for r in records)


def frame_ends(records: Sequence[Mapping[str, Any]]) -> list[int]:
    ends, total = [], 0
    for r in records:
        total += len(encode_record(r))
        ends.append(total)
    return ends


def test_round_trip() -> None:
    buf = stream(RECORDS)
    assert decode_records(buf) == (RECORDS, len(buf), None)
    assert scan_frames(buf) == (len(RECORDS), len(buf), None)
    assert list(iter_records(buf)) == RECORDS


def test_frame_layout_is_length_crc_body() -> None:
    frame = encode_record(JOB)
    length, crc = struct.unpack(">II", frame[:8])
    body = frame[8:]
    assert length == len(body) and crc == zlib.crc32(body)
    assert msgpack.unpackb(body) == JOB


def test_empty_buffer_is_clean() -> None:
    assert decode_records(b"") == ([], 0, None)


def test_every_cut_decodes_the_complete_prefix_and_reports_the_torn_tail() -> None:
    buf = stream(RECORDS)
    ends = frame_ends(RECORDS)
    for cut in range(len(buf) + 1):
        records, good, problem = decode_records(buf[:cut])
        whole = sum(1 for end in ends if end <= cut)
        assert records == RECORDS[:whole]
        assert good == (ends[whole - 1] if whole else 0)
        if cut == good:
            assert problem is None
        else:
            assert problem is not None and problem.is_torn, (cut, problem)
        assert scan_frames(buf[:cut]) == (whole, good, problem)


@settings(max_examples=150, deadline=None)
@given(records=records_strategy, data=st.data())
def test_any_flipped_bit_is_detected(records: list[dict[str, object]], data: st.DataObject) -> None:
    buf = bytearray(stream(records))
    ends = frame_ends(records)
    bit = data.draw(st.integers(0, len(buf) * 8 - 1))
    buf[bit // 8] ^= 1 << (bit % 8)
    hit = next(i for i, end in enumerate(ends) if bit // 8 < end)
    got, good, problem = decode_records(buf)
    # Everything before the damaged frame survives; nothing from it or after it is returned.
    assert got == records[:hit]
    assert good == (ends[hit - 1] if hit else 0)
    assert problem is not None


@settings(max_examples=100, deadline=None)
@given(records=records_strategy, garbage=st.binary(max_size=64))
def test_garbage_never_raises_and_never_yields_a_bad_record(records: list[dict[str, object]], garbage: bytes) -> None:
    buf = stream(records) + garbage
    got, good, problem = decode_records(buf)
    assert got[: len(records)] == records
    assert (problem is None) == (good == len(buf))
    assert decode_records(garbage).good_length <= len(garbage)


@pytest.mark.parametrize(
    ("buf", "damage"),
    [
        (b"\x00" * 5, Damage.TORN_HEADER),
        (b"\x00" * 64, Damage.ZERO_LENGTH),
        (struct.pack(">II", MAX_RECORD_BYTES + 1, 0) + b"x" * 16, Damage.ABSURD_LENGTH),
        (struct.pack(">II", 10, 0) + b"x" * 4, Damage.TORN_BODY),
        (struct.pack(">II", 3, 0) + b"abc", Damage.BAD_CHECKSUM),
        (struct.pack(">II", 1, zlib.crc32(b"\xc1")) + b"\xc1", Damage.BAD_MSGPACK),  # 0xc1 is never used
        (struct.pack(">II", 2, zlib.crc32(b"\x01\x02")) + b"\x01\x02", Damage.BAD_MSGPACK),  # extra data
        (struct.pack(">II", 1, zlib.crc32(b"\x05")) + b"\x05", Damage.NOT_A_MAP),
    ],
)
def test_each_kind_of_damage_is_named(buf: bytes, damage: Damage) -> None:
    prefix = encode_record(JOB)
    assert decode_records(prefix + buf) == ([JOB], len(prefix), damage)
    assert damage.is_torn == (damage in (Damage.TORN_HEADER, Damage.TORN_BODY))


def test_iter_records_refuses_what_it_was_promised_was_valid() -> None:
    bad = struct.pack(">II", 1, zlib.crc32(b"\x05")) + b"\x05"
    with pytest.raises(WalCorrupt) as info:
        list(iter_records(encode_record(JOB) + bad))
    assert info.value.offset == len(encode_record(JOB))
    with pytest.raises(WalCorrupt):
        list(iter_records(encode_record(JOB)[:-1]))


def test_oversized_record_is_refused_at_encode() -> None:
    with pytest.raises(ValueError, match="limit"):
        encode_record({"x": b"\x00" * (MAX_RECORD_BYTES + 1)})


def test_find_next_frame_skips_garbage_and_zero_runs() -> None:
    good = encode_record(JOB)
    for junk in (b"\xff" * 37, b"\x00" * 5000, b"\x00\x00\x00\x01\x02" * 30):
        buf = good + junk + good
        assert find_next_frame(buf, len(good) + 1) == len(good) + len(junk)
        assert find_next_frame(good + junk, len(good) + 1) is None


def test_snapshot_round_trip_and_refusals() -> None:
    body = pack_snapshot_body({"jobs": {"a": 1}}, 7)
    blob = snapshot_header(body) + body
    snap = decode_snapshot(blob)
    assert snap is not None and snap.upto_segment == 7 and snap.state == {"jobs": {"a": 1}}
    assert decode_snapshot(blob[:-1]) is None
    assert decode_snapshot(blob + b"\x00") is None
    assert decode_snapshot(b"") is None
    flipped = bytearray(blob)
    flipped[-3] ^= 0x10
    assert decode_snapshot(bytes(flipped)) is None
    wrong = msgpack.packb({"upto": "7", "state": {}})
    assert decode_snapshot(snapshot_header(wrong) + wrong) is None


def test_header_size() -> None:
    assert HEADER_BYTES == 8
