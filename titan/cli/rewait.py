"""``titan wait`` across a master restart.

The jobs a client waits on are in the master's write-ahead log, so a master
that restarts (a crash, an upgrade) knows them again: a CI script waiting on
them should not fail because the connection dropped meanwhile. When it does,
the wait reconnects with backoff for up to :data:`RECONNECT_WINDOW_S` (or what
is left of ``--timeout``) and asks again; the jobs that finished in between
are answered at once.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from titan.client import TitanClient
from titan.errors import ConnectError, PeerClosed, RequestTimeout

__all__ = ["RECONNECT_WINDOW_S", "through_restarts"]

T = TypeVar("T")

#: how long one outage may last before the wait (or the log being followed) gives up
RECONNECT_WINDOW_S: Final = 60.0
_FIRST_DELAY_S: Final = 0.2
_MAX_DELAY_S: Final = 2.0


async def through_restarts(
    client: TitanClient,
    attempt: Callable[[TitanClient, float | None], Awaitable[T]],
    timeout_s: float | None,
    *,
    window_s: float = RECONNECT_WINDOW_S,
    doing: str = "waiting",
) -> T:
    """``attempt(client, seconds left)``, again on a new connection whenever the master's drops.

    ``doing`` names what goes on for the lines on stderr ("reconnected ...; waiting again").

    Raises:
        PeerClosed: the master did not come back within ``window_s`` (or the timeout).
        RequestTimeout: ``timeout_s`` passed while reconnecting.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    current = client
    try:
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                return await attempt(current, left)
            except PeerClosed as lost:
                if current is not client:
                    await current.aclose()
                    current = client
                current = await _reconnect(client, lost, deadline, window_s, doing)
    finally:
        if current is not client:
            await current.aclose()


async def _reconnect(
    client: TitanClient, lost: PeerClosed, deadline: float | None, window_s: float, doing: str
) -> TitanClient:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + window_s if deadline is None else min(deadline, loop.time() + window_s)
    sys.stderr.write(f"titan: lost the master at {client.address} ({lost}); reconnecting\n")
    delay = _FIRST_DELAY_S
    while True:
        try:
            again = await TitanClient.connect(client.settings)
        except ConnectError:
            if loop.time() + delay > give_up:
                if deadline is not None and give_up == deadline:
                    raise RequestTimeout("the wait timed out while the master was away") from None
                raise PeerClosed(
                    f"lost the master at {client.address} and it did not come back within {window_s:g}s"
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY_S)
            continue
        sys.stderr.write(f"titan: reconnected to {client.address}; {doing} again\n")
        return again
