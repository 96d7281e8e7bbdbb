"""The Titan worker: runs the master's tasks as OS processes and reports back."""

from __future__ import annotations

from .agent import Worker
from .command import LaunchError
from .engine import Attempt, AttemptResult, ProcessRunner

__all__ = ["Attempt", "AttemptResult", "LaunchError", "ProcessRunner", "Worker"]
