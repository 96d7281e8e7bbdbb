"""The handshake over real sockets: HELLO, CHALLENGE/AUTH with the token proof, WELCOME or ERROR."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable

import msgpack
import pytest

from protocol import (
    DEFAULT_MAX_BODY,
    FLAG_REPLY,
    Auth,
    Challenge,
    Frame,
    Hello,
    JobReply,
    JobStatus,
    Opcode,
    Welcome,
    encode_error,
    encode_frame,
    encode_message,
    pack_header,
)
from tests.net._net_harness import IO_TIMEOUT_S, RawClient, TitanTestServer
from tests.support import wait_until
from titan.errors import AuthRefused, ConnectError
from titan.net import Peer, dial, prove
from titan.net.handshake import HANDSHAKE_MAX_BODY

Connect = Callable[..., Awaitable[Peer]]
Raw = Callable[[int], Awaitable[RawClient]]
MakeServer = Callable[..., Awaitable[TitanTestServer]]
TOKEN = "s3cret-cluster-token"


def assert_refused(frame: Frame, rid: int | None = None) -> None:
    assert frame.opcode == Opcode.ERROR
    assert frame.is_error
    assert frame.body["code"] == "HANDSHAKE_FAILED", frame.body
    assert frame.rid == rid


async def refused_dial(port: int, token: str | None = None) -> tuple[ConnectError, asyncio.Future[Peer]]:
    """Dial expecting a refusal: the error, and a future set once the client side is closed."""
    closed: asyncio.Future[Peer] = asyncio.get_running_loop().create_future()
    with pytest.raises(ConnectError) as info:
        await dial("127.0.0.1", port, role="client", token=token, timeout_s=IO_TIMEOUT_S, on_close=closed.set_result)
    return info.value, closed


def test_prove_is_hmac_sha256_of_nonce_and_role() -> None:
    nonce = bytes(range(32))
    expected = hmac.new(TOKEN.encode(), nonce + b"worker", hashlib.sha256).digest()
    assert prove(TOKEN, nonce, "worker") == expected
    assert len(expected) == 32
    assert prove(TOKEN, nonce, "client") != expected
    assert prove("other", nonce, "worker") != expected


# --------------------------------------------------------------------------- without a token


async def test_handshake_without_token(server: TitanTestServer) -> None:
    peer, welcome = await dial("127.0.0.1", server.port, role="worker", name="8081", timeout_s=IO_TIMEOUT_S)
    try:
        assert welcome == Welcome(server="test-master", version=1, heartbeat_interval_s=0.05, max_body=DEFAULT_MAX_BODY)
        accepted = await server.next_accepted()
        assert accepted.context == Hello(role="worker", version=1, name="8081")
        assert accepted.label.startswith("8081@127.0.0.1:")
        reply = await peer.request(JobStatus(job_id="after-handshake"), timeout_s=IO_TIMEOUT_S)
        assert isinstance(reply, JobReply)
    finally:
        await peer.aclose()


async def test_raw_handshake_without_token(server: TitanTestServer, raw: Raw) -> None:
    client = await raw(server.port)
    frame = await client.hello()
    assert frame.opcode == Opcode.WELCOME
    assert not frame.flags
    assert Welcome.from_wire(frame.body).version == 1


async def test_skipping_hello_is_refused_and_closed(server: TitanTestServer, raw: Raw) -> None:
    client = await raw(server.port)
    client.send(encode_message(JobStatus(job_id="sneaky"), rid=1))
    assert_refused(await client.frame(), rid=1)
    await client.expect_eof()
    await server.next_closed()
    assert server.accepted.empty()
    assert server.arrivals.empty(), "the request never reached the handler"


@pytest.mark.parametrize(
    "body",
    [
        {"role": "admin", "version": 1},
        {"role": "client"},
        {"role": "client", "version": "1"},
        {"role": "client", "version": 2},
    ],
    ids=["unknown role", "no version", "version as text", "version 2"],
)
async def test_bad_hello_is_refused_and_closed(server: TitanTestServer, raw: Raw, body: dict[str, object]) -> None:
    client = await raw(server.port)
    client.send(encode_frame(Opcode.HELLO, body))
    assert_refused(await client.frame())
    await client.expect_eof()


async def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
        await dial("127.0.0.1", port, role="client", timeout_s=IO_TIMEOUT_S)


# --------------------------------------------------------------------------- with a token


async def test_handshake_with_the_right_token(make_server: MakeServer, connect: Connect) -> None:
    server = await make_server(token=TOKEN)
    client = await connect(server.port, token=TOKEN)
    await server.next_accepted()
    assert isinstance(await client.request(JobStatus(job_id="authed"), timeout_s=IO_TIMEOUT_S), JobReply)


async def test_raw_challenge_and_auth(make_server: MakeServer, raw: Raw) -> None:
    server = await make_server(token=TOKEN)
    nonces = []
    for _ in range(2):
        client = await raw(server.port)
        frame = await client.hello(role="worker")
        assert frame.opcode == Opcode.CHALLENGE
        nonce = Challenge.from_wire(frame.body).nonce
        assert len(nonce) == 32
        nonces.append(nonce)
        client.send(encode_message(Auth(mac=prove(TOKEN, nonce, "worker"))))
        assert (await client.frame()).opcode == Opcode.WELCOME
    assert nonces[0] != nonces[1], "every connection gets a fresh nonce"


async def test_wrong_token_is_refused_and_the_server_closes(make_server: MakeServer) -> None:
    server = await make_server(token=TOKEN)
    error, closed = await refused_dial(server.port, token="not-the-token")
    assert "wrong token" in str(error) and isinstance(error, AuthRefused)  # retrying cannot help
    await server.next_closed()
    await asyncio.wait_for(closed, IO_TIMEOUT_S)
    assert server.accepted.empty()


async def test_missing_token_gives_up_at_the_challenge(make_server: MakeServer) -> None:
    server = await make_server(token=TOKEN)
    error, closed = await refused_dial(server.port)
    assert "requires a token" in str(error) and isinstance(error, AuthRefused)
    await asyncio.wait_for(closed, IO_TIMEOUT_S)
    await server.next_closed()


async def test_a_proof_for_another_role_is_refused(make_server: MakeServer, raw: Raw) -> None:
    server = await make_server(token=TOKEN)
    client = await raw(server.port)
    nonce = Challenge.from_wire((await client.hello(role="client")).body).nonce
    client.send(encode_message(Auth(mac=prove(TOKEN, nonce, "worker"))))
    assert_refused(await client.frame())
    await client.expect_eof()


async def test_a_replayed_proof_is_refused(make_server: MakeServer, raw: Raw) -> None:
    server = await make_server(token=TOKEN)
    first = await raw(server.port)
    nonce = Challenge.from_wire((await first.hello()).body).nonce
    proof = prove(TOKEN, nonce, "client")
    first.send(encode_message(Auth(mac=proof)))
    assert (await first.frame()).opcode == Opcode.WELCOME
    second = await raw(server.port)
    assert (await second.hello()).opcode == Opcode.CHALLENGE
    second.send(encode_message(Auth(mac=proof)))
    assert_refused(await second.frame())
    await second.expect_eof()


@pytest.mark.parametrize(
    "data",
    [
        encode_message(JobStatus(job_id="sneaky"), rid=1),
        encode_message(Hello(role="client", version=1)),
        encode_frame(Opcode.AUTH, {"mac": "text, not bytes"}),
    ],
    ids=["request instead of auth", "second hello", "mac of the wrong type"],
)
async def test_anything_but_a_valid_auth_after_the_challenge_is_refused(
    make_server: MakeServer, raw: Raw, data: bytes
) -> None:
    server = await make_server(token=TOKEN)
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.CHALLENGE
    client.send(data)
    frame = await client.frame()
    assert frame.body["code"] == "HANDSHAKE_FAILED"
    await client.expect_eof()
    assert server.arrivals.empty()


# --------------------------------------------------------------------------- before the handshake ends


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


async def test_a_silent_connection_is_refused_at_the_deadline(
    make_server: MakeServer, connect: Connect, raw: Raw
) -> None:
    server = await make_server(handshake_timeout_s=0.1)
    client = await connect(server.port)  # handshaken before the silent one arrives: it outlives the deadline
    silent = await raw(server.port)
    frame = await silent.frame()
    assert_refused(frame)
    assert frame.body["message"] == "no HELLO within 0.1s"
    await silent.expect_eof()
    assert server.gate.handshaking == 0
    assert isinstance(await client.request(JobStatus(job_id="still-here"), timeout_s=IO_TIMEOUT_S), JobReply)


async def test_a_connection_that_never_answers_the_challenge_is_refused_at_the_deadline(
    make_server: MakeServer, raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(token=TOKEN, handshake_timeout_s=0.1)
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.CHALLENGE
    frame = await client.frame()
    assert_refused(frame)
    assert frame.body["message"] == "no AUTH within 0.1s"
    await client.expect_eof()
    await server.next_closed()
    assert len(warnings_about(caplog, "no AUTH within")) == 1, "and nothing more when it closes"


async def test_connections_over_the_cap_are_refused_at_once(
    make_server: MakeServer, connect: Connect, raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(max_handshaking=2)
    waiting = [await raw(server.port), await raw(server.port)]
    await wait_until(lambda: server.gate.handshaking == 2, what="two connections in their handshake")
    for _ in range(3):
        extra = await raw(server.port)
        frame = await extra.frame()
        assert_refused(frame)
        assert "too many connections" in frame.body["message"]
        await extra.expect_eof()
    assert server.gate.refused == 3
    assert len(warnings_about(caplog, "refusing new connections")) == 1, "one line per period, not per connection"
    assert (await waiting[0].hello()).opcode == Opcode.WELCOME  # those inside the cap carry on
    await connect(server.port)  # and a place freed is taken by the next one


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (pack_header(Opcode.HELLO, 0, 3) + b"\xc1\xc1\xc1", "BAD_BODY"),
        (pack_header(Opcode.HELLO, 0, 3) + msgpack.packb([1, 2]), "BAD_BODY"),
        (encode_frame(0x7F, {"rid": 3}), "HANDSHAKE_FAILED"),
        (encode_frame(Opcode.HELLO, {"role": "client", "version": 1}, flags=FLAG_REPLY), "HANDSHAKE_FAILED"),
        (pack_header(Opcode.HELLO, 0, HANDSHAKE_MAX_BODY + 1), "FRAME_TOO_LARGE"),
    ],
    ids=["invalid msgpack", "array body", "unknown opcode", "hello as a reply", "body too large for a handshake"],
)
async def test_any_error_before_the_handshake_is_answered_and_closes(
    server: TitanTestServer, raw: Raw, data: bytes, code: str
) -> None:
    client = await raw(server.port)
    client.send(data + encode_message(Hello(role="client", version=1)))  # a HELLO after it is never read
    frame = await client.frame()
    assert frame.opcode == Opcode.ERROR
    assert frame.body["code"] == code, frame.body
    await client.expect_eof()
    await server.next_closed()
    assert server.accepted.empty()


async def test_an_error_frame_before_the_handshake_closes_without_an_answer(server: TitanTestServer, raw: Raw) -> None:
    client = await raw(server.port)
    client.send(encode_error("NOISE", "before anything"))
    await client.expect_eof()


async def test_the_handshake_body_limit_is_lifted_after_welcome(server: TitanTestServer, connect: Connect) -> None:
    client = await connect(server.port)
    job_id = "x" * (2 * HANDSHAKE_MAX_BODY)
    reply = await client.request(JobStatus(job_id=job_id), timeout_s=IO_TIMEOUT_S)
    assert isinstance(reply, JobReply)
    assert reply.job.id == job_id


async def test_bad_frames_on_one_connection_log_a_bounded_number_of_lines(
    server: TitanTestServer, raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    client = await raw(server.port)
    assert (await client.hello()).opcode == Opcode.WELCOME
    bad = pack_header(Opcode.JOB_STATUS, 0, 3) + b"\xc1\xc1\xc1"
    with caplog.at_level(logging.WARNING):
        client.send(bad * 2000)
        for _ in range(2000):  # each is still answered, and the connection carries on
            assert (await client.frame()).body["code"] == "BAD_BODY"
        client.send(encode_message(JobStatus(job_id="after"), rid=1))
        assert (await client.frame()).rid == 1
        assert len(caplog.records) == 4, [r.getMessage() for r in caplog.records]
        assert "further protocol errors on this connection are not logged" in caplog.records[-1].getMessage()
        await client.aclose()
        await server.next_closed()
    assert caplog.records[-1].getMessage().endswith("closed after 2000 protocol errors")
    assert len(caplog.records) == 5


async def test_refused_handshakes_log_a_bounded_number_of_lines(
    server: TitanTestServer, raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        for _ in range(30):
            client = await raw(server.port)
            client.send(b"GET / HTTP/1.1\r\n\r\n")
            assert (await client.frame()).body["code"] == "BAD_VERSION"
            await client.expect_eof()
    assert len(caplog.records) == server.gate.failures.burst == 10
    assert server.gate.failures.left_out == 20


async def test_a_wrong_token_is_logged_once_with_the_address(
    make_server: MakeServer, raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(token=TOKEN)
    client = await raw(server.port)
    address = f"127.0.0.1:{client.writer.get_extra_info('sockname')[1]}"
    nonce = Challenge.from_wire((await client.hello()).body).nonce
    with caplog.at_level(logging.DEBUG):
        client.send(encode_message(Auth(mac=prove("not-the-token", nonce, "client"))))
        assert_refused(await client.frame())
        await client.expect_eof()
        await server.next_closed()
    lines = warnings_about(caplog, "authentication failed")
    assert lines == [f"{address} refused: authentication failed: wrong token"]
    assert TOKEN not in caplog.text and "not-the-token" not in caplog.text


async def test_a_missing_token_is_logged_once_with_the_address(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(token=TOKEN)
    with caplog.at_level(logging.DEBUG):
        await refused_dial(server.port)
        peer = await server.next_closed()
    lines = warnings_about(caplog, "authentication failed")
    assert lines == [f"{peer.label} refused: authentication failed: closed without answering the CHALLENGE"]
    assert peer.label.startswith("127.0.0.1:")
