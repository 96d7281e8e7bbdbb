"""A DAG sent in parts: kept per connection until its last part, then admitted whole.

A client sends a large DAG as ``SUBMIT_DAG`` frames with ``part`` 0 to
``parts - 1``, one after the other on one connection, without waiting for
the answers in between. The master checks each part's jobs as it arrives
(the schema, in the frame decoder and ``from_wire``) and keeps them here; the
last part hands every job kept to the admission, which stores the whole DAG
or nothing, exactly as for a DAG sent in one frame. So a DAG is not bounded
by one frame's size, and the master reads and checks part 1 while the client
is still encoding part 2.

Refusals are all or nothing too: once a part is refused (unreadable, out of
order, over the size limit), every later part of that DAG is refused with
the first reason, and nothing of it is stored. A new part 0 starts a new DAG
and drops one left unfinished; so does closing the connection.
"""

from __future__ import annotations

from typing import Final

from protocol import JobSpec, SubmitDag
from titan.errors import ValidationError

__all__ = ["MAX_DAG_JOBS", "DagParts"]

# the most jobs one DAG may bring in parts (each is held in memory until the last part)
MAX_DAG_JOBS: Final = 2_000_000


class DagParts:
    """The parts of the DAG one connection is sending."""

    def __init__(self, max_jobs: int = MAX_DAG_JOBS) -> None:
        self.max_jobs = max_jobs
        self._specs: list[JobSpec] | None = None  # the jobs of the parts kept; None: no DAG under way
        self._parts = 0
        self._received = 0
        self._refused = ""  # why the DAG under way is refused already

    @property
    def under_way(self) -> bool:
        return self._specs is not None

    def add(self, msg: SubmitDag) -> list[JobSpec] | None:
        """Keep ``msg``; returns every job of its DAG once ``msg`` is the last part, else None.

        A DAG sent whole (``parts`` 1) comes straight back and leaves one under way alone.

        Raises:
            ValidationError: this part, and so the whole DAG, is refused.
        """
        if msg.parts == 1:
            return msg.jobs
        last = msg.part == msg.parts - 1
        try:
            return self._add(msg, last)
        except ValidationError:
            if last:
                self._clear()
            raise

    def refused(self, reason: str) -> None:
        """A part could not even be read: the DAG under way, if any, is refused whole."""
        if self._specs is not None and not self._refused:
            self._refused = reason

    def _add(self, msg: SubmitDag, last: bool) -> list[JobSpec] | None:
        if msg.part == 0:
            self._specs, self._parts, self._received, self._refused = [], msg.parts, 0, ""
        specs = self._specs
        if specs is None:
            raise ValidationError(f"part {msg.part + 1} of {msg.parts} of a DAG came without its first part")
        if msg.parts != self._parts or msg.part != self._received:
            self._refuse(f"part {msg.part + 1} of {msg.parts} came after part {self._received} of {self._parts}")
        if self._refused:
            raise ValidationError(f"the DAG is refused: {self._refused}")
        if len(specs) + len(msg.jobs) > self.max_jobs:
            self._refuse(f"a DAG sent in parts may have at most {self.max_jobs} jobs")
        specs.extend(msg.jobs)
        self._received += 1
        if not last:
            return None
        self._clear()
        return specs

    def _refuse(self, reason: str) -> None:
        self._refused = self._refused or reason
        raise ValidationError(f"the DAG is refused: {self._refused}")

    def _clear(self) -> None:
        self._specs, self._parts, self._received, self._refused = None, 0, 0, ""
