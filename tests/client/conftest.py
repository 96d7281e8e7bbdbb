from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from titan.client import TitanClient
from titan.client.testing import FakeMaster
from titan.config import ClientSettings


@pytest.fixture
async def fake_master() -> AsyncIterator[FakeMaster]:
    async with FakeMaster() as master:
        yield master


@pytest.fixture
async def client(fake_master: FakeMaster) -> AsyncIterator[TitanClient]:
    async with await TitanClient.connect(ClientSettings(host="127.0.0.1", port=fake_master.port)) as client:
        yield client
