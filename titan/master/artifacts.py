"""Output files of attempts, kept in the master's workspace and handed to dependants.

A job writes files under ``TITAN_OUTPUT_DIR``; its worker sends them in the
attempt's final TASK_STATUS (``outputs``: relative path -> bytes). The master
keeps them in ``<workspace>/jobs/<id>/attempt-<n>/outputs/<path>`` and, when a
dependant is dispatched, reads each parent's files back into the TASK_START's
``inputs`` as ``<parent id>/<path>``, so parent and child may run on different
hosts without a shared disk.

Limits: one attempt's outputs may total ``max_output_bytes``; more is refused
before anything is written (the attempt fails with that reason). A dependant's
inputs, together with its script, must fit in one frame, so they are capped by
``max_inputs_bytes``; a dependant over it fails with that reason. Paths are
checked as strictly as ``perm_files/`` names: relative, no ``..``, no empty or
hidden-dot parts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath

from titan.errors import ValidationError

__all__ = ["ArtifactStore", "check_relpath"]


def check_relpath(name: str) -> str | None:
    """None if ``name`` is a safe relative file path (POSIX separators), else why not."""
    if not name or "\x00" in name or "\\" in name:
        return f"bad output path {name!r}"
    pure = PurePosixPath(name)
    if pure.is_absolute():
        return f"output path {name!r} is absolute"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return f"output path {name!r} must not contain empty, '.' or '..' parts"
    return None


class ArtifactStore:
    """Reads and writes attempt outputs under ``<workspace>/jobs``.

    Args:
        workspace: the master's workspace.
        max_output_bytes: what one attempt may keep.
        max_inputs_bytes: what one TASK_START may carry from parents.
    """

    def __init__(self, workspace: Path, *, max_output_bytes: int, max_inputs_bytes: int) -> None:
        self.jobs_dir = Path(workspace).absolute() / "jobs"
        self.max_output_bytes = max_output_bytes
        self.max_inputs_bytes = max_inputs_bytes

    def outputs_dir(self, job_id: str, attempt: int) -> Path:
        return self.jobs_dir / job_id / f"attempt-{attempt}" / "outputs"

    def problem(self, outputs: Mapping[str, bytes]) -> str | None:
        """Why ``outputs`` cannot be kept (a bad path, over the limit), or None."""
        total = 0
        for name, data in outputs.items():
            bad = check_relpath(name)
            if bad is not None:
                return bad
            total += len(data)
        if total > self.max_output_bytes:
            return f"outputs are {total} bytes, over the {self.max_output_bytes}-byte limit per job"
        return None

    def save(self, job_id: str, attempt: int, outputs: Mapping[str, bytes]) -> None:
        """Write the files (call :meth:`problem` first).

        Raises:
            OSError: the disk refused.
        """
        root = self.outputs_dir(job_id, attempt)
        for name, data in outputs.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

    def load(self, job_id: str, attempt: int, names: Iterable[str]) -> dict[str, bytes]:
        """The kept files of one attempt, by relative path.

        Raises:
            ValidationError: a file is gone from the workspace.
        """
        root = self.outputs_dir(job_id, attempt)
        files: dict[str, bytes] = {}
        for name in names:
            try:
                files[name] = (root / name).read_bytes()
            except OSError as exc:
                raise ValidationError(
                    f"output {name} of {job_id} attempt {attempt} cannot be read: {exc.strerror or exc}"
                ) from None
        return files

    def inputs(self, job_id: str, parents: Iterable[tuple[str, int, Sequence[str]]], budget: int) -> dict[str, bytes]:
        """Every parent's kept files as ``<parent id>/<path>``.

        Args:
            job_id: the dependant (for the error message).
            parents: ``(parent id, its completed attempt, its output paths)``.
            budget: bytes left in the TASK_START after the job's own script.

        Raises:
            ValidationError: over ``max_inputs_bytes`` (or the budget), or a file is gone.
        """
        limit = min(self.max_inputs_bytes, budget)
        inputs: dict[str, bytes] = {}
        total = 0
        for parent, attempt, names in parents:
            if not names:
                continue
            for name, data in self.load(parent, attempt, names).items():
                total += len(data)
                if total > limit:
                    raise ValidationError(
                        f"{job_id}: its parents' outputs exceed the {limit}-byte limit for inputs of one job"
                    )
                inputs[f"{parent}/{name}"] = data
        return inputs
