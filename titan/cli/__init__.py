"""The ``titan`` command line and the ``titan>`` REPL."""

from __future__ import annotations

from .main import main
from .parse import parse_dag, parse_line, parse_submit
from .repl import Repl

__all__ = ["Repl", "main", "parse_dag", "parse_line", "parse_submit"]
