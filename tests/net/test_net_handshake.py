"""The handshake over real sockets: HELLO, CHALLENGE/AUTH with the token proof, WELCOME or ERROR."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
from collections.abc import Awaitable, Callable

import pytest

from protocol import (
    DEFAULT_MAX_BODY,
    Auth,
    Challenge,
    Frame,
    Hello,
    JobReply,
    JobStatus,
    Opcode,
    Welcome,
    encode_frame,
    encode_message,
)
from tests.net._net_harness import IO_TIMEOUT_S, RawClient, TitanTestServer
from titan.errors import ConnectError
from titan.net import Peer, dial, prove

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
    assert "wrong token" in str(error)
    await server.next_closed()
    await asyncio.wait_for(closed, IO_TIMEOUT_S)
    assert server.accepted.empty()


async def test_missing_token_gives_up_at_the_challenge(make_server: MakeServer) -> None:
    server = await make_server(token=TOKEN)
    error, closed = await refused_dial(server.port)
    assert "requires a token" in str(error)
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
