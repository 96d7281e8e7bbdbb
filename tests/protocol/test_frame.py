"""The sans-IO codec: header, encoder, incremental decoder and datagrams (no event loop)."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    DEFAULT_MAX_BODY,
    FLAG_ERROR,
    FLAG_REPLY,
    HEADER_SIZE,
    NEED_DATA,
    VERSION,
    BadHeader,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    MalformedBody,
    NeedData,
    ProtocolError,
    TruncatedFrame,
    UnsupportedVersion,
    decode_datagram,
    encode_frame,
    pack_header,
    unpack_header,
)

ALL_FLAGS = [0, FLAG_REPLY, FLAG_ERROR, FLAG_REPLY | FLAG_ERROR]
MAX_WIRE = 0xFFFFFFFF

# Values msgpack carries both ways unchanged. Map keys are strings everywhere:
# the decoder refuses anything else (strict_map_key), and bin keys come back as bytes.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
bodies = st.dictionaries(st.text(max_size=8), values, max_size=6)
opcodes = st.integers(min_value=0, max_value=0xFF)
flag_values = st.sampled_from(ALL_FLAGS)
frames = st.builds(Frame, opcode=opcodes, body=bodies, flags=flag_values)


def wire(frame: Frame) -> bytes:
    return encode_frame(frame.opcode, frame.body, flags=frame.flags)


def drain(decoder: FrameDecoder) -> list[Frame]:
    """Every whole frame the decoder holds right now."""
    out: list[Frame] = []
    while True:
        frame = decoder.next_frame()
        if frame is NEED_DATA:
            return out
        assert isinstance(frame, Frame)
        out.append(frame)


def decode_chunks(chunks: list[bytes], max_body: int = DEFAULT_MAX_BODY) -> tuple[list[Frame], FrameDecoder]:
    decoder = FrameDecoder(max_body)
    out: list[Frame] = []
    for chunk in chunks:
        if not chunk:
            continue  # feed(b"") means end of stream; a transport never delivers an empty chunk
        decoder.feed(chunk)
        out.extend(drain(decoder))
    return out, decoder


def raw_header(version: int = VERSION, opcode: int = 0x30, flags: int = 0, spare: int = 0, length: int = 0) -> bytes:
    return struct.pack(">BBBBI", version, opcode, flags, spare, length)


# --------------------------------------------------------------------------- header


@given(opcode=opcodes, flags=flag_values, length=st.integers(min_value=0, max_value=MAX_WIRE))
@settings(deadline=None)
def test_header_round_trip(opcode: int, flags: int, length: int) -> None:
    header = pack_header(opcode, flags, length)
    assert len(header) == HEADER_SIZE == 8
    assert header[0] == VERSION
    assert header[1] == opcode
    assert header[2] == flags
    assert header[3] == 0
    assert int.from_bytes(header[4:], "big") == length
    assert unpack_header(header, max_body=MAX_WIRE) == (opcode, flags, length)


def test_header_layout_is_big_endian() -> None:
    assert pack_header(0x30, FLAG_REPLY, 0x01020304) == bytes([1, 0x30, 1, 0, 1, 2, 3, 4])


@pytest.mark.parametrize(
    ("opcode", "flags", "length"),
    [(-1, 0, 0), (0x100, 0, 0), (0x30, 0x04, 0), (0x30, 0x80, 0), (0x30, 0, -1), (0x30, 0, MAX_WIRE + 1)],
)
def test_pack_header_refuses_what_the_wire_cannot_carry(opcode: int, flags: int, length: int) -> None:
    with pytest.raises(ValueError):
        pack_header(opcode, flags, length)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (raw_header(version=0), UnsupportedVersion),
        (raw_header(version=2), UnsupportedVersion),
        (raw_header(version=0xFF), UnsupportedVersion),
        (raw_header(spare=1), BadHeader),
        (raw_header(flags=0x04), BadHeader),
        (raw_header(flags=0x80 | FLAG_REPLY), BadHeader),
        (raw_header(length=DEFAULT_MAX_BODY + 1), FrameTooLarge),
        (raw_header(length=MAX_WIRE), FrameTooLarge),
    ],
)
def test_unpack_header_rejects(header: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error) as info:
        unpack_header(header, DEFAULT_MAX_BODY)
    assert info.value.fatal
    assert info.value.message


def test_error_codes_and_fatality() -> None:
    assert UnsupportedVersion.error_code == "BAD_VERSION"
    assert BadHeader.error_code == "BAD_HEADER"
    assert FrameTooLarge.error_code == "FRAME_TOO_LARGE"
    assert TruncatedFrame.error_code == "TRUNCATED_FRAME"
    assert MalformedBody.error_code == "BAD_BODY"
    assert all(cls.fatal for cls in (UnsupportedVersion, BadHeader, FrameTooLarge, TruncatedFrame))
    assert not MalformedBody.fatal


# --------------------------------------------------------------------------- whole frames


@given(frame=frames)
@settings(max_examples=150, deadline=None)
def test_encode_decode_round_trip(frame: Frame) -> None:
    data = wire(frame)
    assert data[:HEADER_SIZE] == pack_header(frame.opcode, frame.flags, len(data) - HEADER_SIZE)
    decoder = FrameDecoder()
    decoder.feed(data)
    assert decoder.next_frame() == frame
    assert decoder.next_frame() is NEED_DATA
    assert decoder.buffered == 0


@pytest.mark.parametrize("flags", ALL_FLAGS)
def test_flag_properties(flags: int) -> None:
    frame = decode_datagram(encode_frame(0x05, {"code": "X", "message": "m"}, flags=flags))
    assert frame.flags == flags
    assert frame.is_reply == bool(flags & FLAG_REPLY)
    assert frame.is_error == bool(flags & FLAG_ERROR)


@pytest.mark.parametrize(("body", "rid"), [({"rid": 7}, 7), ({}, None), ({"rid": True}, None), ({"rid": "7"}, None)])
def test_frame_rid_is_an_integer_or_none(body: dict[str, Any], rid: int | None) -> None:
    assert Frame(0x30, body).rid == rid


def test_need_data_is_a_singleton() -> None:
    assert NeedData() is NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"


def test_body_of_exactly_the_limit_is_accepted() -> None:
    body = {"d": b"x" * 100}
    data = encode_frame(0x30, body)
    limit = len(data) - HEADER_SIZE
    assert decode_chunks([data], max_body=limit)[0] == [Frame(0x30, body)]
    with pytest.raises(FrameTooLarge):
        decode_chunks([data], max_body=limit - 1)


# --------------------------------------------------------------------------- streams cut anywhere

STREAM = [
    Frame(0x01, {"role": "worker", "version": 1, "name": "w1"}),
    Frame(0x30, {"rid": 1, "job": {"type": "RUN", "data": "calc.py"}}, 0),
    Frame(0x30, {"rid": 1, "job_id": "TSK-1a2b3c4d"}, FLAG_REPLY),
    Frame(0x05, {"rid": 2, "code": "UNKNOWN_JOB", "message": "no job"}, FLAG_REPLY | FLAG_ERROR),
    Frame(0x34, {}),
    Frame(0x60, {"job_id": "J", "seq": 3, "data": b"\x00\xff" * 40}),
]
STREAM_BYTES = b"".join(wire(f) for f in STREAM)


@pytest.mark.parametrize("cut", range(len(STREAM_BYTES) + 1))
def test_stream_cut_at_every_boundary(cut: int) -> None:
    decoded, decoder = decode_chunks([STREAM_BYTES[:cut], STREAM_BYTES[cut:]])
    assert decoded == STREAM
    assert decoder.buffered == 0


def test_stream_fed_byte_by_byte() -> None:
    decoder = FrameDecoder()
    decoded: list[Frame] = []
    boundaries = set()
    offset = 0
    for frame in STREAM:
        offset += len(wire(frame))
        boundaries.add(offset)
    for i in range(len(STREAM_BYTES)):
        decoder.feed(STREAM_BYTES[i : i + 1])
        got = drain(decoder)
        # a frame comes out exactly when its last byte is in, never earlier
        assert len(got) == (1 if i + 1 in boundaries else 0)
        decoded.extend(got)
    decoder.feed(b"")
    assert decoder.next_frame() is NEED_DATA
    assert decoded == STREAM


@given(stream=st.lists(frames, min_size=1, max_size=4), data=st.data())
@settings(max_examples=60, deadline=None)
def test_stream_split_at_random_points(stream: list[Frame], data: st.DataObject) -> None:
    payload = b"".join(wire(f) for f in stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(payload)), max_size=10)))
    chunks = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    decoded, decoder = decode_chunks(chunks)
    assert decoded == stream
    decoder.feed(b"")
    assert decoder.next_frame() is NEED_DATA


def test_iterating_the_decoder_yields_the_buffered_frames() -> None:
    decoder = FrameDecoder()
    decoder.feed(STREAM_BYTES + wire(STREAM[0])[:5])
    assert list(decoder) == STREAM
    assert list(decoder) == []


@given(stream=st.lists(frames, max_size=3), partial=frames, data=st.data())
@settings(max_examples=100, deadline=None)
def test_trailing_partial_frame_stays_buffered_then_is_truncated_at_eof(
    stream: list[Frame], partial: Frame, data: st.DataObject
) -> None:
    tail = wire(partial)
    keep = data.draw(st.integers(1, len(tail) - 1))
    decoded, decoder = decode_chunks([b"".join(wire(f) for f in stream) + tail[:keep]])
    assert decoded == stream
    assert decoder.next_frame() is NEED_DATA
    assert decoder.buffered == keep
    decoder.feed(b"")
    with pytest.raises(TruncatedFrame):
        decoder.next_frame()
    with pytest.raises(TruncatedFrame):  # poisoned
        decoder.next_frame()


def test_eof_on_a_frame_boundary_is_clean() -> None:
    decoder = FrameDecoder()
    decoder.feed(STREAM_BYTES)
    decoder.feed(b"")
    assert drain(decoder) == STREAM
    assert decoder.next_frame() is NEED_DATA


def test_feed_after_eof_is_a_programming_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"")
    with pytest.raises(RuntimeError):
        decoder.feed(b"\x01")


# --------------------------------------------------------------------------- bad headers


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (raw_header(version=2), UnsupportedVersion),
        (raw_header(spare=9), BadHeader),
        (raw_header(flags=0x10), BadHeader),
        (raw_header(length=DEFAULT_MAX_BODY + 1), FrameTooLarge),
        (raw_header(length=MAX_WIRE), FrameTooLarge),
        (b"GET / HTTP/1.1\r\n", UnsupportedVersion),
    ],
)
def test_bad_header_raises_after_exactly_eight_bytes_and_poisons(header: bytes, error: type[ProtocolError]) -> None:
    decoder = FrameDecoder()
    for byte in header[: HEADER_SIZE - 1]:
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is NEED_DATA
    decoder.feed(header[HEADER_SIZE - 1 : HEADER_SIZE])  # no body byte has arrived
    with pytest.raises(error) as first:
        decoder.next_frame()
    assert decoder.buffered == 0  # nothing of the promised body is held
    decoder.feed(wire(STREAM[0]))  # a good frame afterwards cannot be trusted
    for _ in range(3):
        with pytest.raises(error) as again:
            decoder.next_frame()
        assert again.value is first.value
    with pytest.raises(error):
        list(decoder)


def test_oversized_length_is_rejected_before_any_body_byte() -> None:
    decoder = FrameDecoder(max_body=1024)
    decoder.feed(raw_header(length=1025))
    with pytest.raises(FrameTooLarge, match="1025"):
        decoder.next_frame()


def test_bad_header_after_good_frames_keeps_the_good_ones() -> None:
    decoder = FrameDecoder()
    decoder.feed(STREAM_BYTES + raw_header(version=3))
    assert [decoder.next_frame() for _ in STREAM] == STREAM
    with pytest.raises(UnsupportedVersion):
        decoder.next_frame()


@st.composite
def mangled_streams(draw: st.DrawFn) -> bytes:
    """Real frames with a few bytes overwritten: headers and bodies that are almost right."""
    data = bytearray(b"".join(wire(f) for f in draw(st.lists(frames, min_size=1, max_size=3))))
    for position, value in draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 0xFF)), max_size=3)):
        data[position % len(data)] = value
    return bytes(data[: draw(st.integers(0, len(data)))])


@given(garbage=st.binary(max_size=200) | mangled_streams(), cuts=st.lists(st.integers(0, 400), max_size=4))
@settings(max_examples=300, deadline=None)
def test_random_bytes_give_frames_or_a_protocol_error_and_nothing_else(garbage: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_body=4096)
    points = sorted(min(c, len(garbage)) for c in cuts)
    chunks = [garbage[a:b] for a, b in zip([0, *points], [*points, len(garbage)], strict=True)]
    try:
        for chunk in [*(c for c in chunks if c), b""]:
            decoder.feed(chunk)
            while True:
                try:
                    frame = decoder.next_frame()
                except MalformedBody:
                    continue  # non-fatal: the decoder reads on
                if frame is NEED_DATA:
                    break
                assert isinstance(frame, Frame)
                assert isinstance(frame.body, dict)
    except ProtocolError as exc:
        assert exc.error_code != ProtocolError.error_code
        assert exc.fatal


# --------------------------------------------------------------------------- bad bodies


def framed(payload: bytes, opcode: int = 0x30) -> bytes:
    return pack_header(opcode, 0, len(payload)) + payload


BAD_BODIES = {
    "array": msgpack.packb([1, 2, 3]),
    "int": msgpack.packb(5),
    "string": msgpack.packb("body"),
    "nil": msgpack.packb(None),
    "reserved byte": b"\xc1",
    "short map": b"\x82\xa1a\x01",  # a map of two entries holding one
    "trailing data": msgpack.packb({"a": 1}) + b"\x00",
    "bad utf-8": b"\x81\xa1a\xa2\xff\xfe",
    "int key": msgpack.packb({1: "a"}),
    "nested int key": msgpack.packb({"a": {2: "b"}}),
    "empty": b"",
}


@pytest.mark.parametrize("payload", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_body_raises_malformed_body_without_poisoning(payload: bytes) -> None:
    good = Frame(0x34, {"rid": 9})
    decoder = FrameDecoder()
    decoder.feed(framed(payload) + wire(good))
    with pytest.raises(MalformedBody) as info:
        decoder.next_frame()
    assert not info.value.fatal
    assert info.value.error_code == "BAD_BODY"
    assert decoder.next_frame() == good
    assert decoder.next_frame() is NEED_DATA


def test_bad_body_fed_byte_by_byte() -> None:
    data = framed(b"\xc1\xc1\xc1") + STREAM_BYTES
    decoder = FrameDecoder()
    decoded: list[Frame] = []
    errors = 0
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
        while True:
            try:
                frame = decoder.next_frame()
            except MalformedBody:
                errors += 1
                continue
            if frame is NEED_DATA:
                break
            assert isinstance(frame, Frame)
            decoded.append(frame)
    assert errors == 1
    assert decoded == STREAM


# --------------------------------------------------------------------------- datagrams


@given(frame=frames)
@settings(max_examples=50, deadline=None)
def test_datagram_round_trip(frame: Frame) -> None:
    assert decode_datagram(wire(frame)) == frame


@pytest.mark.parametrize(
    ("datagram", "error"),
    [
        (b"", TruncatedFrame),
        (wire(STREAM[1])[:-1], TruncatedFrame),
        (wire(STREAM[1])[:5], TruncatedFrame),
        (wire(STREAM[1]) + b"\x00", BadHeader),
        (wire(STREAM[1]) + wire(STREAM[4]), BadHeader),
        (raw_header(version=7) + b"{}", UnsupportedVersion),
        (framed(b"\x93\x01\x02\x03"), MalformedBody),
    ],
    ids=["empty", "one byte short", "half header", "trailing byte", "two frames", "bad version", "array body"],
)
def test_datagram_must_hold_exactly_one_frame(datagram: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        decode_datagram(datagram)


def test_datagram_respects_its_own_limit() -> None:
    data = encode_frame(0x60, {"data": b"x" * 600})
    with pytest.raises(FrameTooLarge):
        decode_datagram(data, max_body=512)
