"""Fixtures for the net adapter tests: servers, dialled clients and raw sockets, all closed at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.net._net_harness import IO_TIMEOUT_S, TitanTestServer
from titan.net import Peer, dial


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., Awaitable[TitanTestServer]]]:
    servers: list[TitanTestServer] = []

    async def factory(**kwargs: Any) -> TitanTestServer:
        server = TitanTestServer(**kwargs)
        servers.append(server)
        await server.start()
        return server

    yield factory
    for server in servers:
        await server.aclose()


@pytest.fixture
async def server(make_server: Callable[..., Awaitable[TitanTestServer]]) -> TitanTestServer:
    return await make_server()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[Peer]]]:
    """``await connect(port, token=None, **dial_kwargs)``: a handshaken client peer."""
    peers: list[Peer] = []

    async def factory(port: int, **kwargs: Any) -> Peer:
        peer, _ = await dial("127.0.0.1", port, role=kwargs.pop("role", "client"), timeout_s=IO_TIMEOUT_S, **kwargs)
        peers.append(peer)
        return peer

    yield factory
    for peer in peers:
        await peer.aclose()
