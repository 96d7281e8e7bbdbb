"""The master and connections that have not finished the handshake: deadline, cap, close on error, bounded logs."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from protocol import Auth, Challenge, JobSpec, Opcode, Submit, SubmitReply, encode_message, pack_header
from tests.net._net_harness import RawClient
from tests.support import wait_until
from titan.config import MasterSettings
from titan.master import Master
from titan.master import server as master_server
from titan.master.__main__ import _accept_errors_logged
from titan.net import dial, prove

TOKEN = "s3cret-cluster-token"
MakeMaster = Callable[..., Awaitable[Master]]
BAD_BODY = pack_header(Opcode.HELLO, 0, 3) + b"\xc1\xc1\xc1"


@pytest.fixture
async def make_master(tmp_path: Path) -> AsyncIterator[MakeMaster]:
    masters: list[Master] = []

    async def factory(**overrides: Any) -> Master:
        settings = MasterSettings(
            host="127.0.0.1", port=0, workspace=tmp_path / f"ws{len(masters)}", perm_files=tmp_path, **overrides
        )
        master = Master(settings)
        masters.append(master)
        await master.start()
        return master

    yield factory
    for master in masters:
        await master.aclose()


async def submit_works(master: Master, token: str | None = None) -> None:
    peer, _ = await dial("127.0.0.1", master.port, role="client", token=token)
    try:
        reply = await peer.request(Submit(job=JobSpec(type="SHELL", data="true")), timeout_s=5)
        assert isinstance(reply, SubmitReply)
    finally:
        await peer.aclose()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_silent_connection_is_closed_at_the_deadline_and_clients_carry_on(
    make_master: MakeMaster, raw: Callable[[int], Awaitable[RawClient]]
) -> None:
    master = await make_master(handshake_timeout_s=0.2)
    client, _ = await dial("127.0.0.1", master.port, role="client")
    try:
        silent = await raw(master.port)
        error = await silent.frame()
        assert (error.opcode, error.body["code"]) == (Opcode.ERROR, "HANDSHAKE_FAILED")
        assert error.body["message"] == "no HELLO within 0.2s"
        await silent.expect_eof()
        # the client's connection is older than the deadline and still works
        reply = await client.request(Submit(job=JobSpec(type="SHELL", data="true")), timeout_s=5)
        assert isinstance(reply, SubmitReply)
    finally:
        await client.aclose()


async def test_the_cap_refuses_excess_handshakes_and_clients_get_through_afterwards(
    make_master: MakeMaster, raw: Callable[[int], Awaitable[RawClient]], caplog: pytest.LogCaptureFixture
) -> None:
    master = await make_master(max_handshaking=3)
    silent = [await raw(master.port) for _ in range(3)]
    await wait_until(lambda: master._gate.handshaking == 3, what="three connections in their handshake")
    for _ in range(5):
        extra = await raw(master.port)
        error = await extra.frame()
        assert error.body["code"] == "HANDSHAKE_FAILED"
        assert "too many connections" in error.body["message"]
        await extra.expect_eof()
    assert len([line for line in warnings(caplog) if "refusing new connections" in line]) == 1
    for client in silent:
        await client.aclose()
    await wait_until(lambda: master._gate.handshaking == 0, what="the silent connections to be gone")
    await submit_works(master)
    await submit_works(master)


async def test_the_cap_is_at_most_half_the_open_file_limit(
    make_master: MakeMaster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(master_server, "_open_file_limit", lambda: 100)
    master = await make_master(max_handshaking=1024)
    assert master._gate.max_handshaking == 50
    assert "max_handshaking 1024 lowered to 50: the open-file limit is 100" in warnings(caplog)


async def test_a_bad_body_before_the_handshake_gets_an_error_then_eof(
    make_master: MakeMaster, raw: Callable[[int], Awaitable[RawClient]], caplog: pytest.LogCaptureFixture
) -> None:
    master = await make_master()
    client = await raw(master.port)
    client.send(BAD_BODY * 2000)  # the first one ends it: one answer, one line in the log
    error = await client.frame()
    assert (error.opcode, error.body["code"]) == (Opcode.ERROR, "BAD_BODY")
    await client.expect_eof()
    await wait_until(lambda: master._gate.handshaking == 0, what="the connection to be gone")
    assert len(warnings(caplog)) == 1, warnings(caplog)
    await submit_works(master)


async def test_many_bad_frames_after_the_handshake_log_a_bounded_number_of_lines(
    make_master: MakeMaster, raw: Callable[[int], Awaitable[RawClient]], caplog: pytest.LogCaptureFixture
) -> None:
    master = await make_master()
    client = await raw(master.port)
    assert (await client.hello()).opcode == Opcode.WELCOME
    client.send((pack_header(Opcode.SUBMIT, 0, 3) + b"\xc1\xc1\xc1") * 2000)  # each answered, not each logged
    for _ in range(2000):
        assert (await client.frame()).body["code"] == "BAD_BODY"
    assert len(warnings(caplog)) == 4, warnings(caplog)
    await submit_works(master)


async def test_a_wrong_token_is_logged_once_with_the_address(
    make_master: MakeMaster, raw: Callable[[int], Awaitable[RawClient]], caplog: pytest.LogCaptureFixture
) -> None:
    master = await make_master(token=TOKEN)
    client = await raw(master.port)
    port = client.writer.get_extra_info("sockname")[1]
    nonce = Challenge.from_wire((await client.hello()).body).nonce
    client.send(encode_message(Auth(mac=prove("not-the-token", nonce, "client"))))
    error = await client.frame()
    assert (error.body["code"], error.body["message"]) == ("HANDSHAKE_FAILED", "authentication failed: wrong token")
    await client.expect_eof()
    await wait_until(lambda: master._gate.handshaking == 0, what="the connection to be gone")
    assert [line for line in warnings(caplog) if "authentication" in line] == [
        f"127.0.0.1:{port} refused: authentication failed: wrong token"
    ]
    assert TOKEN not in caplog.text and "not-the-token" not in caplog.text
    await submit_works(master, token=TOKEN)


@pytest.mark.parametrize(
    ("field", "value"), [("handshake_timeout_s", 0.0), ("max_handshaking", 0)], ids=["no deadline", "no room"]
)
def test_settings_refuse_limits_that_would_refuse_everyone(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        MasterSettings(**{field: value})


async def test_connections_near_the_open_file_limit_are_warned_about_once(
    make_master: MakeMaster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # a loop out of descriptors may drop connections without a word (uvloop does), so the master speaks first
    monkeypatch.setattr(master_server, "_open_file_limit", lambda: 100)
    monkeypatch.setattr(master_server, "_open_files", lambda: 95)  # room for 5: warned from the 5th connection on
    master = await make_master()
    peers = [(await dial("127.0.0.1", master.port, role="client"))[0] for _ in range(8)]
    try:
        crowded = [line for line in warnings(caplog) if "close to the open-file limit of 100" in line]
        assert len(crowded) == 1, crowded
    finally:
        for peer in peers:
            await peer.aclose()


def test_accept_errors_of_the_loop_reach_the_log_a_few_times_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        _accept_errors_logged(loop)
        error = OSError(errno.EMFILE, "Too many open files")
        for _ in range(10):
            loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": error})
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "titan.master"]
    assert lines == ["cannot accept connections: [Errno 24] Too many open files"] * 3
