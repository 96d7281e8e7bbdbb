"""The Titan client library: :class:`TitanClient` (async) and :class:`Client` (blocking).

Typical use::

    async with await TitanClient.connect(master="127.0.0.1:9090") as client:
        job_id = await client.submit_job("RUN", "calc.py")
        [job] = await client.wait([job_id], timeout_s=60)
"""

from __future__ import annotations

from titan.errors import ConnectError, PeerClosed, RemoteError, RequestTimeout, TitanError

from ._client import FINAL_STATES, LogStream, TitanClient, WaitTimeout
from ._sync import Client

# the errors a caller handles are re-exported so one import is enough
__all__ = [
    "FINAL_STATES",
    "Client",
    "ConnectError",
    "LogStream",
    "PeerClosed",
    "RemoteError",
    "RequestTimeout",
    "TitanClient",
    "TitanError",
    "WaitTimeout",
]
