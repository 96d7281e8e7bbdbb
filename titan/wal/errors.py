"""Errors raised by the write-ahead log."""

from __future__ import annotations

from titan.errors import TitanError

__all__ = ["WalClosed", "WalCorrupt", "WalError", "WalWriteFailed"]


class WalError(TitanError):
    """Base of the write-ahead log's errors."""

    code = "WAL"


class WalClosed(WalError):
    """An append or snapshot on a writer that is closed, closing, or was never started."""

    code = "WAL_CLOSED"


class WalWriteFailed(WalError):
    """A write or fsync failed. The writer is poisoned: after a failed fsync the
    kernel may have dropped the dirty pages, so retrying would claim durability
    it does not have. Restart and recover instead."""

    code = "WAL_WRITE_FAILED"


class WalCorrupt(WalError):
    """A record that was expected to be valid is not (see ``iter_records``)."""

    code = "WAL_CORRUPT"

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"corrupt WAL record at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason
