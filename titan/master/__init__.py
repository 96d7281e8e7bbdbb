"""The master: the pure core (jobs, queues, workers) and its asyncio shell."""

from __future__ import annotations

from .core import MasterState
from .files import FileCatalog, Payload, PermFiles
from .registry import DuplicateWorker, Health, WorkerRecord, WorkerRegistry
from .retry import backoff_s, next_retry
from .scheduler import DelayHeap, LeastConnections, ReadyQueue
from .server import Master
from .waiting_room import WaitingRoom, check_dag

__all__ = [
    "DelayHeap",
    "DuplicateWorker",
    "FileCatalog",
    "Health",
    "LeastConnections",
    "Master",
    "MasterState",
    "Payload",
    "PermFiles",
    "ReadyQueue",
    "WaitingRoom",
    "WorkerRecord",
    "WorkerRegistry",
    "backoff_s",
    "check_dag",
    "next_retry",
]
