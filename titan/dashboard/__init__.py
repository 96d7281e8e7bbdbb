"""The Titan dashboard: a small web UI over the client library (``titan dashboard``)."""

from __future__ import annotations

from .app import main, parse_args, serve
from .server import Dashboard, DashboardSettings

__all__ = ["Dashboard", "DashboardSettings", "main", "parse_args", "serve"]
