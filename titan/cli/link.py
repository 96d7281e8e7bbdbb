"""A connection to the master that heals itself: dialled lazily, redialled after a drop.

The REPL holds one :class:`MasterLink` for its whole life. A master that goes
away costs the command that was in flight (it fails with ``PeerClosed``); the
next command dials again, and if that fails too it gets one ``ConnectError``.
"""

from __future__ import annotations

import asyncio

from titan.client import TitanClient
from titan.config import ClientSettings

__all__ = ["MasterLink"]


class MasterLink:
    """Owns at most one :class:`TitanClient` at a time; see the module docstring."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self._client: TitanClient | None = None
        # the toolbar refresher and a command may both find the link down: dial once
        self._lock = asyncio.Lock()

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_open

    async def client(self) -> TitanClient:
        """The open client, dialling first if there is none.

        Raises:
            ConnectError: the master cannot be reached.
        """
        async with self._lock:
            if self._client is not None and not self._client.is_open:
                stale, self._client = self._client, None
                await stale.aclose()
            if self._client is None:
                self._client = await TitanClient.connect(self.settings)
            return self._client

    async def aclose(self) -> None:
        async with self._lock:
            if self._client is not None:
                client, self._client = self._client, None
                await client.aclose()
