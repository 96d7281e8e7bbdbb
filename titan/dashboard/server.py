"""The dashboard: a small web page that shows the cluster, served with asyncio streams.

Theory of operation
-------------------
The dashboard is a client of the master like the REPL (one
:class:`~titan.client.TitanClient` connection, dialled again when it drops). It
serves three paths over plain HTTP/1.1, one request per connection:

* ``/``: the page (:mod:`titan.dashboard.page`), which polls ``/api/cluster``
  every second and draws the worker tree, the counts, the autoscaler's latest
  decisions and the recent jobs;
* ``/api/cluster``: one JSON snapshot: STATS and the most recent jobs;
* ``/healthz``: ``ok``.

A snapshot is fetched at most every ``refresh_s``, however many browsers poll,
so the master never sees more than one STATS and one LIST per period from here.
Nothing here needs a third-party web framework; the request parser accepts
exactly what a browser or ``curl`` sends for a GET and answers anything else
with 400/404/405.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from titan.client import TitanClient
from titan.config import ClientSettings
from titan.errors import TitanError

from .page import PAGE

__all__ = ["Dashboard", "DashboardSettings"]

log = logging.getLogger(__name__)

_MAX_REQUEST_BYTES: Final = 16 * 1024
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Unavailable"}


@dataclass(frozen=True)
class DashboardSettings:
    host: str = "127.0.0.1"
    port: int = 8050  # 0 picks a free one
    refresh_s: float = 1.0
    recent_jobs: int = 25
    # when ``port`` is taken, serve on a free one instead of failing (the deployed service does this)
    any_port_if_busy: bool = False


class Dashboard:
    """``await start()``, then ``serve_forever()``; :attr:`url` is where it listens."""

    def __init__(self, settings: DashboardSettings, client_settings: ClientSettings) -> None:
        self.settings = settings
        self.client_settings = client_settings
        self.port = settings.port
        self._server: asyncio.Server | None = None
        self._client: TitanClient | None = None
        self._snapshot: dict[str, Any] | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}/"

    async def start(self) -> None:
        """Bind (raises OSError when the port is taken, unless ``any_port_if_busy``)."""
        settings = self.settings
        try:
            self._server = await asyncio.start_server(self._handle, settings.host, settings.port)
        except OSError:
            if not settings.any_port_if_busy or settings.port == 0:
                raise
            log.warning("port %d is taken; serving on a free port instead", settings.port)
            self._server = await asyncio.start_server(self._handle, settings.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------ data
    async def snapshot(self) -> dict[str, Any]:
        """The cluster as JSON-ready data, at most ``refresh_s`` old."""
        async with self._lock:
            if self._snapshot is None or time.monotonic() - self._fetched_at >= self.settings.refresh_s:
                self._snapshot = await self._fetch()
                self._fetched_at = time.monotonic()
            return self._snapshot

    async def _fetch(self) -> dict[str, Any]:
        master = f"{self.client_settings.host}:{self.client_settings.port}"
        try:
            client = await self._connected()
            stats = await client.stats()
            jobs = await client.list_jobs(limit=self.settings.recent_jobs)
        except (TitanError, OSError) as exc:
            if self._client is not None:
                await self._client.aclose()
                self._client = None
            return {"master": master, "connected": False, "error": str(exc), "t": time.time()}
        return {
            "master": master,
            "connected": True,
            "error": "",
            "t": time.time(),
            "stats": _plain(stats.to_wire()),
            "jobs": [
                {
                    "id": job.id,
                    "type": job.type,
                    "data": job.data,
                    "state": job.state,
                    "worker": job.worker,
                    "attempts": job.attempts,
                    "max_attempts": job.max_attempts,
                    "submitted_at": job.submitted_at,
                    "error": job.error,
                }
                for job in jobs
            ],
        }

    async def _connected(self) -> TitanClient:
        if self._client is None or not self._client.is_open:
            self._client = await TitanClient.connect(self.client_settings)
        return self._client

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = await self._route(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        header = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(header.encode("ascii") + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def _route(self, head: bytes) -> tuple[int, str, bytes]:
        if len(head) > _MAX_REQUEST_BYTES:
            return 400, "text/plain", b"request too large\n"
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "text/plain", b"bad request line\n"
        method, target, _ = parts
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        path = target.split("?", 1)[0]
        if path == "/":
            return 200, "text/html; charset=utf-8", PAGE.encode("utf-8")
        if path == "/api/cluster":
            data = await self.snapshot()
            return (200 if data["connected"] else 503), "application/json", json.dumps(data).encode("utf-8")
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        return 404, "text/plain", b"not found\n"


def _plain(value: Any) -> Any:
    """msgpack-ready data made JSON-ready (bytes become text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
