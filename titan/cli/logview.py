"""Reading a job's log, across a master restart, without showing a byte twice.

``titan logs -f`` (and the REPL's ``LOGS -f``) may outlive the master's
connection: the master restarts, the follower dials again and subscribes
again, and the master sends the log so far once more. Each LOG_DATA says where
its bytes start in their attempt's stream (``offset``), so :class:`LogCursor`
keeps, per attempt and stream, how far it has shown, and passes on only what
comes after. What went by while the master was away -- the worker's datagrams
to a master that was not there -- is a hole in the live log: the cursor says
how many bytes, once, and the stored log has them once the attempt has ended.
A frame whose position the master cannot tell (its copy, from before the
restart, of a running attempt's live log) is shown only to a new reader.
A hole in a live log the cursor was shown from its start (datagrams lost on
the way, or sent while a restarted master was away) is announced the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from protocol import JobInfo, LogData
from titan.client import FINAL_STATES, TitanClient
from titan.errors import RemoteError, TitanError

from .rewait import through_restarts

__all__ = ["LogCursor", "LogPiece", "LogsUnavailable", "ended_badly", "log_note", "logs_refusal", "read_log"]

# codes with which a master that does not (yet) serve logs refuses LOGS_SUBSCRIBE
_NO_LOGS_CODES: Final = frozenset({"UNKNOWN_OPCODE", "UNEXPECTED", "NOT_IMPLEMENTED", "UNSUPPORTED"})


class LogsUnavailable(TitanError):
    """The master does not serve job logs."""

    code = "LOGS_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class LogPiece:
    """What to show for one LOG_DATA: a header for a new attempt, a note, then the new bytes."""

    stream: str
    data: bytes
    new_attempt: int | None = None  # show "--- attempt N ---" first
    note: str = ""  # show this (on its own line) before ``data``


class LogCursor:
    """How much of each (attempt, stream) has been shown; see the module docstring."""

    def __init__(self, job_id: str, reread: str = "") -> None:
        """``reread``: the command that shows an ended attempt's whole log (`titan logs ID` by default)."""
        self.job_id = job_id
        self.reread = reread or f"`titan logs {job_id}`"
        self.attempt: int | None = None  # the attempt shown last
        self._shown: dict[tuple[int, str], int] = {}
        self._rejoined: set[tuple[int, str]] = set()  # shown before the last reconnect, not since
        self._positionless: set[tuple[int, str]] = set()  # shown in part from a copy without positions
        self._subscriptions = 0

    def subscribed(self, attempt: int) -> None:
        """A (new) subscription began; ``attempt`` is the one the master sends first (0: none yet)."""
        self._subscriptions += 1
        if self._subscriptions > 1:
            self._rejoined = set(self._shown)
        if self.attempt is None:
            # a first attempt needs no header (nor does a job not started yet); a later one is named
            self.attempt = 1

    def take(self, chunk: LogData) -> LogPiece | None:
        """The part of ``chunk`` not shown yet (None: nothing new)."""
        key = (chunk.attempt, chunk.stream)
        shown = self._shown.get(key)
        data, note = chunk.data, ""
        if chunk.offset is None:
            if shown is not None and key in self._rejoined:
                return None  # the master's copy from before its restart: older than what was shown
            self._shown[key] = (shown or 0) + len(data)
            self._positionless.add(key)
        else:
            end = chunk.offset + len(data)
            if shown is None and chunk.offset > 0:
                note = f"[the first {chunk.offset} byte(s) of {chunk.stream} are not in the live log{self._then}]"
            elif shown is not None:
                if end <= shown:
                    return None
                if chunk.offset > shown:
                    note = self._hole_note(chunk.stream, chunk.offset - shown, key)
                data = data[max(0, shown - chunk.offset) :]
            self._shown[key] = end
            self._rejoined.discard(key)
        if not data:
            return None
        new_attempt = None
        if chunk.attempt and chunk.attempt != self.attempt:
            self.attempt = new_attempt = chunk.attempt
        return LogPiece(chunk.stream, data, new_attempt, note)

    @property
    def _then(self) -> str:
        return f"; once the attempt has ended, {self.reread} shows them"

    def _hole_note(self, stream: str, missed: int, key: tuple[int, str]) -> str:
        if key in self._rejoined:
            why = "went by while the master was away"
        elif key in self._positionless:  # the copy closed its holes: where they were is not known
            why = "before this point are missing from the live log"
        else:
            why = "are missing from the live log here"
        return f"[{missed} byte(s) of {stream} {why}{self._then}]"


async def read_log(
    client: TitanClient,
    job_id: str,
    *,
    follow: bool,
    show: Callable[[LogPiece], None],
    attempt: int | None = None,
    reread: str = "",
) -> JobInfo:
    """Show the job's log (to the job's end with ``follow``), subscribing again after a drop.

    ``attempt``: an earlier attempt's stored log instead of the latest one's. ``reread``: see
    :class:`LogCursor`.

    Returns the job as it stands once its log has been shown (for :func:`log_note`).

    Raises:
        PeerClosed: the master went away and did not come back in time.
        LogsUnavailable: the master does not serve logs.
        RemoteError: the master refused (an unknown job, say).
    """
    cursor = LogCursor(job_id, reread)

    async def subscription(current: TitanClient, _left: float | None) -> JobInfo:
        try:
            async with current.logs(job_id, follow=follow, attempt=attempt) as stream:
                cursor.subscribed(stream.attempt or 0)
                async for chunk in stream:
                    piece = cursor.take(chunk)
                    if piece is not None:
                        show(piece)
        except RemoteError as exc:
            raise logs_refusal(exc, current.address) from None
        return await current.status(job_id)

    return await through_restarts(client, subscription, None, doing="following the log")


def ended_badly(job: JobInfo, *, follow: bool, attempt: int | None) -> bool:
    """Was the job's latest attempt followed to a job's end other than COMPLETED (exit as ``titan wait``)?"""
    return follow and (attempt is None or attempt == job.attempts) and job.state != "COMPLETED"


def log_note(job: JobInfo, attempt: int | None = None, *, follow: bool = False) -> str:
    """What to say after a job's latest log (``attempt`` None): the stored log was cut, or (to one who
    followed it live) the live view missed datagrams; nothing after an earlier attempt's."""
    run = job.runs[-1] if job.runs else None
    if run is None and attempt is None:
        ended = "it ended" if job.state in FINAL_STATES else "it is"
        return f"[{job.id} has not run: {ended} {job.state}]"
    if run is None or attempt is not None:
        return ""
    notes = []
    if run.truncated:
        notes.append("the log was over the size limit: only its tail is kept")
    if run.log_lost and follow:  # a reader of the stored log got it exact: the count is nothing to them
        kept = "tail" if run.truncated else "log"
        notes.append(f"{run.log_lost} live datagram(s) were lost on the way (the stored {kept} is exact)")
    return f"[attempt {run.attempt}: {'; '.join(notes)}]" if notes else ""


def logs_refusal(exc: RemoteError, address: str) -> TitanError:
    """What to report when LOGS_SUBSCRIBE is refused: "not available" if the master lacks it."""
    if exc.code in _NO_LOGS_CODES:
        return LogsUnavailable(f"LOGS is not available yet: the master at {address} does not serve logs")
    return exc
