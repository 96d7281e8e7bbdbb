"""The content-addressed cache of shipped scripts and binaries.

The master ships a ``RUN`` job's file with its SHA-256; the worker keeps it as
``<workspace>/cache/<sha256>/<name>`` so that the thousandth run of ``calc.py``
costs no write. The name is kept because interpreters care (``.py``, ``.sh``)
and so do error messages. A file is written to a temporary name and renamed
into place, so a reader never sees half a payload, and its hash is checked
before it is trusted.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import string
from pathlib import Path
from typing import Final

from .command import LaunchError

__all__ = ["PayloadCache"]

_HEX: Final = frozenset(string.hexdigits.lower())
# Permission bits only: a shipped file never becomes setuid here.
_MODE_MASK: Final = 0o777
# the most hashes a REGISTER carries (about 70 bytes each)
_ADVERTISED: Final = 4096


class PayloadCache:
    """Files by content hash under one directory (absolute, created on demand)."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self._known: set[str] = set()
        self._tmp_ids = itertools.count()

    def path_for(self, sha256: str, name: str) -> str:
        """Where a payload lives (whether or not it is there yet).

        Raises:
            LaunchError: the hash or the name cannot be used as a path.
        """
        if len(sha256) != 64 or not _HEX.issuperset(sha256):
            raise LaunchError(f"bad payload hash {sha256!r}: expected 64 hex digits")
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise LaunchError(f"bad payload name {name!r}")
        return f"{self.root}/{sha256}/{name}"

    def hashes(self, limit: int = _ADVERTISED) -> list[str]:
        """The hashes held here (at most ``limit``), which the worker advertises in REGISTER."""
        try:
            entries = os.listdir(self.root)
        except OSError:
            return []
        found = [entry for entry in entries if len(entry) == 64 and _HEX.issuperset(entry)]
        return found[:limit]

    def lookup(self, sha256: str, name: str) -> str | None:
        """The cached file, or None when it has not been stored yet."""
        path = self.path_for(sha256.lower(), name)
        if path in self._known:
            return path
        if os.path.isfile(path):
            self._known.add(path)
            return path
        return self._under_another_name(path)

    def _under_another_name(self, path: str) -> str | None:
        """The same bytes cached under another name: link them to this one (interpreters go by suffix)."""
        directory = path.rpartition("/")[0]
        try:
            others = [entry for entry in os.listdir(directory) if not entry.startswith(".")]
        except OSError:
            return None
        for other in others:
            try:
                os.link(f"{directory}/{other}", path)
            except FileExistsError:
                pass
            except OSError:
                continue
            self._known.add(path)
            return path
        return None

    def store(self, data: bytes, name: str, sha256: str = "", mode: int = 0o644) -> str:
        """Keep ``data`` (once) and return its absolute path.

        Raises:
            LaunchError: the bytes do not match ``sha256``, or the file cannot be written.
        """
        actual = hashlib.sha256(data).hexdigest()
        if sha256 and sha256.lower() != actual:
            raise LaunchError(f"payload {name} is corrupt: sha256 {actual[:12]}... != {sha256[:12]}...")
        path = self.path_for(actual, name)
        if path in self._known or os.path.isfile(path):
            self._known.add(path)
            return path
        directory = path.rpartition("/")[0]
        tmp = f"{directory}/.{name}.{os.getpid()}.{next(self._tmp_ids)}.tmp"
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & _MODE_MASK)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                # the umask may have taken bits away that the job needs (the exec bit)
                os.fchmod(fd, mode & _MODE_MASK)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            _remove_quietly(tmp)
            raise LaunchError(f"cannot store payload {name}: {exc.strerror or exc}") from exc
        self._known.add(path)
        return path


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
