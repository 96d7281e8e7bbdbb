from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from titan.client.testing import FakeMaster


@pytest.fixture
async def fake_master() -> AsyncIterator[FakeMaster]:
    async with FakeMaster() as master:
        yield master
