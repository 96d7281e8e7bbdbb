"""What an attempt reads from its parents and leaves behind for the master.

Inputs: a TASK_START's ``inputs`` (``"<parent id>/<path>" -> bytes``) are
written under ``<attempt dir>/inputs/``, which the job finds as
``TITAN_INPUT_DIR``: each parent's files under ``TITAN_INPUT_DIR/<parent id>/``.

Artifacts: when the attempt ends, :func:`collect_artifacts` gathers what goes
back in its final TASK_STATUS: the regular files under ``TITAN_OUTPUT_DIR``
(``outputs/``), by relative path. Symlinks are not followed (a job must not
ship files from outside its folder). Over ``max_output_bytes`` nothing is sent
and the attempt fails with that reason. This is the one place that decides
what an ended attempt carries back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .command import LaunchError

__all__ = ["Artifacts", "collect_artifacts", "write_inputs"]


def _bad_path(name: str) -> bool:
    parts = name.split("/")
    return not name or name.startswith("/") or "\x00" in name or any(p in ("", ".", "..") for p in parts)


def write_inputs(directory: str, inputs: Mapping[str, bytes]) -> None:
    """Lay the parents' files out under ``<directory>/inputs/``.

    Raises:
        LaunchError: a path that would escape the folder, or the disk refused.
    """
    root = f"{directory}/inputs"
    try:
        os.makedirs(root, exist_ok=True)
        for name, data in inputs.items():
            if _bad_path(name) or "/" not in name:
                raise LaunchError(f"bad input path {name!r}: expected <parent id>/<relative path>")
            path = f"{root}/{name}"
            os.makedirs(path.rpartition("/")[0], exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    except OSError as exc:
        raise LaunchError(f"cannot write the inputs: {exc.strerror or exc}") from exc


@dataclass(frozen=True, slots=True)
class Artifacts:
    """What an ended attempt sends back; ``error`` is set when they could not be sent."""

    outputs: dict[str, bytes] = field(default_factory=dict)
    error: str = ""


def collect_artifacts(directory: str, *, max_output_bytes: int) -> Artifacts:
    """The attempt's output files, or an error (and no files) when over the limit or unreadable."""
    root = f"{directory}/outputs"
    files: list[tuple[str, str]] = []  # (key, path)
    total = 0
    try:
        with os.scandir(root) as first:
            if next(first, None) is None:
                return Artifacts()  # the usual case: nothing written, one syscall
        for folder, _, names in os.walk(root):
            relative = os.path.relpath(folder, root)
            for name in names:
                path = f"{folder}/{name}"
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                total += os.path.getsize(path)
                files.append((name if relative == "." else f"{relative}/{name}".replace(os.sep, "/"), path))
        # sized before anything is read, so the error can say by how much (as the master's check does)
        if total > max_output_bytes:
            return Artifacts(error=f"outputs are {total} bytes, over the {max_output_bytes}-byte limit per job")
        outputs: dict[str, bytes] = {}
        for key, path in files:
            with open(path, "rb") as f:
                outputs[key] = f.read()
    except FileNotFoundError:
        return Artifacts()
    except OSError as exc:
        return Artifacts(error=f"cannot read the outputs: {exc.strerror or exc}")
    return Artifacts(outputs=outputs)
