"""Which payloads each worker already holds, so the master ships each file once per worker.

A worker caches shipped files by sha256 (``titan/worker/payloads.py``) and lists
its cache in REGISTER (``payloads``). From then on the ledger adds every hash
the master ships to that worker: the connection is ordered, so a later
TASK_START that names only the hash reaches the worker after the one that
carried the bytes. A failed attempt that was sent a payload clears that hash
for its worker (its cache may have lost it; the next attempt ships the bytes
again), and a worker that disconnects starts over with its next REGISTER.
"""

from __future__ import annotations

__all__ = ["PayloadLedger"]


class PayloadLedger:
    """Per worker, the payload hashes it holds; counts what was shipped and what was spared."""

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}
        self._sent: dict[tuple[str, int], tuple[str, str]] = {}  # (job, attempt) -> (worker, hash)
        self.bytes_shipped = 0
        self.bytes_spared = 0

    def registered(self, worker_id: str, hashes: list[str]) -> None:
        self._held[worker_id] = {h.lower() for h in hashes}

    def disconnected(self, worker_id: str) -> None:
        self._held.pop(worker_id, None)

    def must_ship(self, worker_id: str, job_id: str, attempt: int, sha256: str, size: int) -> bool:
        """Whether this TASK_START must carry the bytes; records that the worker will hold them."""
        self._sent[(job_id, attempt)] = (worker_id, sha256)
        held = self._held.setdefault(worker_id, set())
        if sha256 in held:
            self.bytes_spared += size
            return False
        held.add(sha256)
        self.bytes_shipped += size
        return True

    def ended(self, job_id: str, attempt: int, failed: bool) -> None:
        """An attempt's final report: after a failure its worker is no longer trusted to hold the file."""
        sent = self._sent.pop((job_id, attempt), None)
        if sent is not None and failed:
            self._held.get(sent[0], set()).discard(sent[1])
