"""``Peer`` over real sockets: request/reply, errors on the wire, fatal and non-fatal protocol errors."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable

import msgpack
import pytest

from protocol import (
    FLAG_ERROR,
    FLAG_REPLY,
    Cancel,
    Frame,
    JobReply,
    JobSpec,
    JobStatus,
    Opcode,
    SchemaError,
    Submit,
    encode_error,
    encode_frame,
    encode_message,
    pack_header,
)
from tests.net._net_harness import RawClient, TitanTestServer, job_info
from titan.errors import PeerClosed, RemoteError, RequestTimeout, TitanError, UnsendableRequest
from titan.net import Peer

Connect = Callable[..., Awaitable[Peer]]
Raw = Callable[[int], Awaitable[RawClient]]


def job_id_of(reply: object) -> str:
    assert isinstance(reply, JobReply)
    return reply.job.id


def assert_error(frame: Frame, code: str, rid: int | None) -> None:
    assert frame.opcode == Opcode.ERROR
    assert frame.is_error
    assert frame.body["code"] == code, frame.body
    assert frame.body["message"]
    assert frame.rid == rid
    assert frame.is_reply == (rid is not None)


async def assert_usable(peer: Peer, job_id: str = "still-here") -> None:
    assert job_id_of(await peer.request(JobStatus(job_id=job_id), timeout_s=5)) == job_id


# --------------------------------------------------------------------------- request / reply


async def test_request_and_reply(server: TitanTestServer, connect: Connect) -> None:
    client = await connect(server.port)
    reply = await client.request(JobStatus(job_id="TSK-1"), timeout_s=5)
    assert reply == JobReply(job=job_info("TSK-1"))
    reply = await client.request(Cancel(job_id="TSK-2"), timeout_s=5)
    assert job_id_of(reply) == "TSK-2"


async def test_a_request_the_wire_cannot_carry_raises_at_once_and_leaves_nothing_pending(
    server: TitanTestServer, connect: Connect
) -> None:
    client = await connect(server.port)
    with pytest.raises(SchemaError, match="Submit: cannot be encoded") as raised:
        await client.request(Submit(job=JobSpec(type="SHELL", data="true", priority=2**70)), timeout_s=5)
    assert isinstance(raised.value, TitanError)  # `except TitanError` catches every error of the client
    assert not client._pending  # closing later has no orphaned future to fail
    reply = await client.request(JobStatus(job_id="TSK-1"), timeout_s=5)  # and the connection is fine
    assert reply == JobReply(job=job_info("TSK-1"))


async def test_a_request_over_the_frame_limit_raises_at_once_and_the_connection_stays(
    server: TitanTestServer, connect: Connect
) -> None:
    client = await connect(server.port)
    too_big = JobStatus(job_id="x" * (client.decoder.max_body + 1))
    with pytest.raises(UnsendableRequest, match="over the 16777216-byte limit of a frame"):
        await client.request(too_big, timeout_s=5)
    assert not client._pending
    reply = await client.request(JobStatus(job_id="TSK-1"), timeout_s=5)  # not FRAME_TOO_LARGE and a close
    assert reply == JobReply(job=job_info("TSK-1"))


async def test_many_requests_in_flight_answered_out_of_order(server: TitanTestServer, connect: Connect) -> None:
    client = await connect(server.port)
    ids = [f"hold-{i}" for i in range(20)]
    requests = [asyncio.ensure_future(client.request(JobStatus(job_id=job_id), timeout_s=5)) for job_id in ids]
    assert sorted(await server.next_arrivals(len(ids))) == sorted(ids)
    for job_id in reversed(ids):
        server.release(job_id)
    replies = await asyncio.gather(*requests)
    assert [job_id_of(reply) for reply in replies] == ids  # each caller got its own answer
    assert server.answered == list(reversed(ids))  # though they went out in the opposite order


async def test_requests_from_two_connections_do_not_mix(server: TitanTestServer, connect: Connect) -> None:
    first, second = await connect(server.port), await connect(server.port)
    a = asyncio.ensure_future(first.request(JobStatus(job_id="hold-a"), timeout_s=5))
    b = asyncio.ensure_future(second.request(JobStatus(job_id="hold-b"), timeout_s=5))
    await server.next_arrivals(2)
    server.release("hold-b")
    assert job_id_of(await b) == "hold-b"
    assert not a.done()
    server.release("hold-a")
    assert job_id_of(await a) == "hold-a"


async def test_error_reply_surfaces_as_remote_error_with_its_code(server: TitanTestServer, connect: Connect) -> None:
    client = await connect(server.port)
    with pytest.raises(RemoteError) as info:
        await client.request(JobStatus(job_id="unknown"), timeout_s=5)
    assert info.value.code == "UNKNOWN_JOB"
    assert "unknown" in str(info.value)
    await assert_usable(client)


async def test_unexpected_handler_exception_answers_internal_and_stays_open(
    server: TitanTestServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    client = await connect(server.port)
    with caplog.at_level(logging.ERROR, logger="titan.net.peer"):
        with pytest.raises(RemoteError) as info:
            await client.request(JobStatus(job_id="boom"), timeout_s=5)
    assert info.value.code == "INTERNAL"
    assert "the handler broke" in str(info.value)
    assert any(record.exc_info for record in caplog.records), "the failure is logged with its traceback"
    await assert_usable(client)


async def test_non_fatal_protocol_error_from_a_handler_keeps_the_connection(
    server: TitanTestServer, connect: Connect
) -> None:
    client = await connect(server.port)
    with pytest.raises(RemoteError) as info:
        await client.request(JobStatus(job_id="schema"), timeout_s=5)
    assert info.value.code == "BAD_MESSAGE"
    await assert_usable(client)


async def test_request_timeout(server: TitanTestServer, connect: Connect) -> None:
    client = await connect(server.port)
    with pytest.raises(RequestTimeout):
        await client.request(JobStatus(job_id="hold-slow"), timeout_s=0.05)
    await assert_usable(client)


async def test_a_late_answer_is_dropped_quietly(
    server: TitanTestServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    client = await connect(server.port)
    with pytest.raises(RequestTimeout):
        await client.request(JobStatus(job_id="hold-late"), timeout_s=0.05)
    with caplog.at_level(logging.DEBUG, logger="titan.net.peer"):
        server.release("hold-late")
        # The late answer leaves the server before the answer to this request, and anything the
        # client says about it reaches the server before the next request: both ends handle
        # frames in order.
        await assert_usable(client, "first")
        await assert_usable(client, "second")
    assert server.answered == ["hold-late", "first", "second"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "nobody complains about a late answer"


async def test_peer_close_fails_pending_requests(server: TitanTestServer, connect: Connect) -> None:
    client = await connect(server.port)
    accepted = await server.next_accepted()
    pending = [asyncio.ensure_future(client.request(JobStatus(job_id=f"hold-{i}"))) for i in range(3)]
    await server.next_arrivals(3)
    accepted.close()
    for request in pending:
        with pytest.raises(PeerClosed):
            await request
    await client.wait_closed()
    assert not client.is_open
    with pytest.raises(PeerClosed):
        await client.request(JobStatus(job_id="after"))


async def test_closing_our_side_fails_our_pending_requests(server: TitanTestServer, connect: Connect) -> None:
    client = await connect(server.port)
    pending = asyncio.ensure_future(client.request(JobStatus(job_id="hold-x")))
    await server.next_arrivals(1)
    client.close()
    with pytest.raises(PeerClosed):
        await pending
    await server.next_closed()


# --------------------------------------------------------------------------- protocol errors on a raw socket

FATAL = {
    "garbage": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "BAD_VERSION"),
    "wrong version": (
        struct.pack(">BBBBI", 2, Opcode.JOB_STATUS, 0, 0, 3) + msgpack.packb({"a": 1})[:3],
        "BAD_VERSION",
    ),
    "huge length": (struct.pack(">BBBBI", 1, Opcode.JOB_STATUS, 0, 0, 0xFFFFFFFF), "FRAME_TOO_LARGE"),
    "unknown flags": (struct.pack(">BBBBI", 1, Opcode.JOB_STATUS, 0x40, 0, 0), "BAD_HEADER"),
    "spare byte": (struct.pack(">BBBBI", 1, Opcode.JOB_STATUS, 0, 7, 0), "BAD_HEADER"),
}


@pytest.mark.parametrize(("data", "code"), FATAL.values(), ids=FATAL.keys())
async def test_fatal_protocol_error_answers_and_closes_only_that_connection(
    server: TitanTestServer, connect: Connect, raw: Raw, data: bytes, code: str
) -> None:
    bystander = await connect(server.port)
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.WELCOME
    client.send(data)
    assert_error(await client.frame(), code, rid=None)
    await client.expect_eof()
    await server.next_closed()
    await assert_usable(bystander)


async def test_oversized_frame_is_refused_before_the_body_is_sent(
    make_server: Callable[..., Awaitable[TitanTestServer]], raw: Raw
) -> None:
    server = await make_server(max_body=1024)
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.WELCOME
    client.send(pack_header(Opcode.JOB_STATUS, 0, 1025))  # the header alone: no body byte follows
    assert_error(await client.frame(), "FRAME_TOO_LARGE", rid=None)
    await client.expect_eof()


async def test_fatal_error_before_the_handshake(server: TitanTestServer, raw: Raw) -> None:
    client = await raw(server.port)
    client.send(b"\x00" * 8)
    assert_error(await client.frame(), "BAD_VERSION", rid=None)
    await client.expect_eof()


async def test_bad_msgpack_body_answers_and_stays_usable(server: TitanTestServer, raw: Raw) -> None:
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.WELCOME
    client.send(pack_header(Opcode.JOB_STATUS, 0, 3) + b"\xc1\xc1\xc1")
    assert_error(await client.frame(), "BAD_BODY", rid=None)
    client.send(pack_header(Opcode.JOB_STATUS, 0, 3) + msgpack.packb([1, 2]))
    assert_error(await client.frame(), "BAD_BODY", rid=None)
    client.send(encode_message(JobStatus(job_id="after"), rid=3))
    reply = await client.frame()
    assert (reply.opcode, reply.flags, reply.rid) == (Opcode.JOB_STATUS, FLAG_REPLY, 3)
    assert reply.body["job"]["id"] == "after"


@pytest.mark.parametrize("opcode", [0x7F, 0xFF, Opcode.HEARTBEAT, Opcode.SUBMIT])
async def test_unknown_opcode_answers_with_its_rid_and_stays_usable(
    server: TitanTestServer, raw: Raw, opcode: int
) -> None:
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.WELCOME
    client.send(encode_frame(opcode, {"rid": 11, "job_id": "x"}))
    assert_error(await client.frame(), "UNKNOWN_OPCODE", rid=11)
    client.send(encode_message(JobStatus(job_id="after"), rid=12))
    assert (await client.frame()).rid == 12


async def test_wrong_field_type_answers_bad_message(server: TitanTestServer, raw: Raw) -> None:
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.WELCOME
    client.send(encode_frame(Opcode.JOB_STATUS, {"rid": 4, "job_id": 17}))
    error = await client.frame()
    assert_error(error, "BAD_MESSAGE", rid=4)
    assert "JobStatus.job_id" in error.body["message"]
    client.send(encode_message(JobStatus(job_id="after"), rid=5))
    assert (await client.frame()).rid == 5


async def test_error_frames_are_never_answered(server: TitanTestServer, raw: Raw) -> None:
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.WELCOME
    client.send(encode_error("NOISE", "an error nobody asked for"))
    client.send(encode_error("NOISE", "an answer to nothing", rid=99))
    client.send(encode_message(JobStatus(job_id="after"), rid=6))
    reply = await client.frame()
    assert (reply.opcode, reply.rid) == (Opcode.JOB_STATUS, 6)
    assert not reply.flags & FLAG_ERROR


async def test_an_error_frame_nested_as_deep_as_msgpack_allows_is_logged_and_the_connection_stays(
    server: TitanTestServer, raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.WELCOME
    deep = b"\x91" * 1020 + b"\x01"  # [[[...1...]]]: formatted with %s, it raised RecursionError in logging
    body = b"\x82\xa4code" + deep + b"\xa7message" + deep
    client.send(struct.pack(">BBBBI", 1, Opcode.ERROR, FLAG_ERROR, 0, len(body)) + body)
    client.send(encode_message(JobStatus(job_id="after"), rid=6))
    reply = await client.frame()
    assert (reply.opcode, reply.rid) == (Opcode.JOB_STATUS, 6)
    assert any("sent error <list>: <list>" in record.getMessage() for record in caplog.records)


async def test_a_stray_reply_is_not_handled_as_a_request(server: TitanTestServer, raw: Raw) -> None:
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.WELCOME
    client.send(encode_frame(Opcode.JOB_STATUS, {"rid": 50, "job_id": "stray"}, flags=FLAG_REPLY))
    client.send(encode_message(JobStatus(job_id="after"), rid=7))
    reply = await client.frame()
    assert (reply.opcode, reply.rid) == (Opcode.JOB_STATUS, 7)
    assert server.answered == ["after"]


async def test_a_request_fed_one_byte_at_a_time(server: TitanTestServer, raw: Raw) -> None:
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.WELCOME
    data = encode_message(JobStatus(job_id="slowly"), rid=8) + encode_message(JobStatus(job_id="then"), rid=9)
    for i in range(len(data)):
        client.send(data[i : i + 1])
        await client.writer.drain()
    assert [(await client.frame()).rid for _ in range(2)] == [8, 9]
