"""``perm_files/``: the scripts and binaries jobs may name, checked and cached.

:meth:`PermFiles.resolve` is the submission-time check: a name must stay inside
the folder (no absolute path, no ``..``, no symlink pointing out), exist, be a
regular file and fit the payload limit. :meth:`PermFiles.load` reads the bytes
the master ships to a worker, with their sha256; it is cached by
``(path, mtime, size)``, so a thousand jobs naming one script read it once and an
edited script is picked up at the next dispatch.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from titan.errors import ValidationError

__all__ = ["FileCatalog", "Payload", "PermFiles"]


@dataclass(frozen=True, slots=True)
class Payload:
    """A file's bytes as shipped in TASK_START."""

    name: str
    data: bytes
    sha256: str
    mode: int


class FileCatalog(Protocol):
    """What the core needs to validate submissions (the filesystem stays outside it)."""

    def resolve(self, name: str) -> str:
        """The normalized name inside the folder; raises ValidationError."""
        ...

    def handler(self, type_name: str) -> str | None:
        """The script for handler type ``type_name``, or None if there is none."""
        ...

    def handler_types(self) -> list[str]:
        """Every handler type, for error messages."""
        ...


class PermFiles:
    """The real :class:`FileCatalog` over a folder on disk."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._cache: dict[str, tuple[tuple[int, int], Payload]] = {}

    def _real_root(self) -> str:
        # resolved on each call: the folder may be created or moved after start
        return os.path.realpath(self.root)

    def resolve(self, name: str) -> str:
        """Check ``name`` names a regular file inside the folder; return its clean relative name.

        Raises:
            ValidationError: a one-line reason naming the file.
        """
        if not name or not name.strip():
            raise ValidationError("RUN needs a file name from perm_files/")
        if "\x00" in name:
            raise ValidationError("file name contains a NUL byte")
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or os.path.isabs(name):
            raise ValidationError(f"'{name}' is an absolute path: name a file inside perm_files/")
        if ".." in pure.parts:
            raise ValidationError(f"'{name}' escapes perm_files/ ('..' is not allowed)")
        root = self._real_root()
        path = os.path.join(root, *pure.parts)
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root:
            raise ValidationError(f"'{name}' is a symlink that points outside perm_files/")
        try:
            info = os.stat(real)
        except FileNotFoundError:
            raise ValidationError(f"no file '{name}' in perm_files/ ({root})") from None
        except OSError as exc:
            raise ValidationError(f"cannot read '{name}' in perm_files/: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise ValidationError(f"'{name}' in perm_files/ is not a regular file")
        if info.st_size > self.max_bytes:
            raise ValidationError(f"'{name}' is {info.st_size} bytes, over the {self.max_bytes}-byte payload limit")
        return pure.as_posix()

    def handler(self, type_name: str) -> str | None:
        name = f"handlers/{type_name.lower()}.py"
        try:
            return self.resolve(name)
        except ValidationError:
            return None

    def handler_types(self) -> list[str]:
        try:
            entries = os.listdir(self.root / "handlers")
        except OSError:
            return []
        return sorted(e[:-3].upper() for e in entries if e.endswith(".py") and not e.startswith("_"))

    def load(self, name: str) -> Payload:
        """The file's bytes and hash, re-read only when its mtime or size changed.

        Raises:
            ValidationError: the file vanished or changed into something not allowed.
        """
        path = os.path.join(self._real_root(), name)
        try:
            info = os.stat(path)
        except OSError as exc:
            raise ValidationError(f"cannot read '{name}' in perm_files/: {exc.strerror}") from None
        key = (info.st_mtime_ns, info.st_size)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        self.resolve(name)  # it changed: check again before shipping it
        with open(path, "rb") as f:
            data = f.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:
            raise ValidationError(f"'{name}' grew over the {self.max_bytes}-byte payload limit")
        payload = Payload(
            name=PurePosixPath(name).name,
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            mode=stat.S_IMODE(info.st_mode),
        )
        self._cache[name] = (key, payload)
        return payload
