"""LogCursor: what a reader shows of each LOG_DATA, across subscriptions."""

from __future__ import annotations

import pytest

from protocol import AttemptInfo, JobInfo, LogData
from titan.cli.logview import LogCursor, LogPiece, log_note


def frame(data: bytes, offset: int | None, stream: str = "stdout", attempt: int = 1) -> LogData:
    return LogData(job_id="J", attempt=attempt, stream=stream, data=data, offset=offset)  # type: ignore[arg-type]


def shown(cursor: LogCursor, *frames: LogData) -> list[LogPiece | None]:
    return [cursor.take(f) for f in frames]


def test_a_first_reader_sees_everything_and_a_header_for_each_new_attempt() -> None:
    cursor = LogCursor("J")
    cursor.subscribed(1)
    pieces = shown(
        cursor, frame(b"a\n", 0), frame(b"b\n", 2), frame(b"err\n", 0, "stderr"), frame(b"c\n", 0, attempt=2)
    )
    assert [(p.stream, p.data, p.new_attempt, p.note) for p in pieces if p] == [
        ("stdout", b"a\n", None, ""),
        ("stdout", b"b\n", None, ""),
        ("stderr", b"err\n", None, ""),
        ("stdout", b"c\n", 2, ""),
    ]


def test_a_hole_in_a_live_log_is_announced_where_it_is() -> None:
    cursor = LogCursor("J", reread="LOGS J")
    cursor.subscribed(1)
    (first, later, after) = shown(cursor, frame(b"one\n", 0), frame(b"three\n", 8), frame(b"four\n", 14))
    assert first is not None and first.note == ""
    assert later is not None and later.data == b"three\n"  # "two\n" was a lost datagram
    assert (
        later.note
        == "[4 byte(s) of stdout are missing from the live log here; once the attempt has ended, LOGS J shows them]"
    )
    assert after is not None and after.note == ""


def test_a_job_followed_before_it_started_gets_no_header_for_its_first_attempt() -> None:
    cursor = LogCursor("J")
    cursor.subscribed(0)
    first, retry = shown(cursor, frame(b"a\n", 0), frame(b"b\n", 0, attempt=2))
    assert first is not None and first.new_attempt is None
    assert retry is not None and retry.new_attempt == 2


def test_after_a_reconnect_nothing_is_shown_twice() -> None:
    cursor = LogCursor("J")
    cursor.subscribed(1)
    shown(cursor, frame(b"0123456789", 0))
    cursor.subscribed(1)  # the master came back: it sends what it has again
    again = shown(
        cursor,
        frame(b"0123456789", None),  # its copy from before the restart
        frame(b"01234", 0),  # wholly shown
        frame(b"789ab", 7),  # overlaps: only "ab" is new
    )
    assert again[:2] == [None, None]
    assert again[2] is not None and again[2].data == b"ab" and again[2].note == ""


def test_the_hole_an_outage_left_is_said_once() -> None:
    cursor = LogCursor("J")
    cursor.subscribed(1)
    shown(cursor, frame(b"0123456789", 0))
    cursor.subscribed(1)
    hole, later = shown(cursor, frame(b"xyz", 20), frame(b"!", 30))  # then a lost datagram's hole
    assert hole is not None and hole.data == b"xyz"
    assert hole.note.startswith("[10 byte(s) of stdout went by while the master was away")
    assert later is not None and later.data == b"!" and later.note.startswith("[7 byte(s) of stdout are missing")


def test_a_copy_without_positions_is_shown_to_a_new_reader() -> None:
    cursor = LogCursor("J")
    cursor.subscribed(1)
    (copy, live) = shown(cursor, frame(b"early\n", None), frame(b"later\n", 40))
    assert copy is not None and copy.data == b"early\n"
    assert live is not None and live.data == b"later\n"
    assert live.note.startswith("[34 byte(s) of stdout before this point are missing from the live log;")


def test_a_stream_first_seen_after_a_reconnect_is_shown_whole_and_its_head_said_missing() -> None:
    cursor = LogCursor("J")
    cursor.subscribed(1)
    shown(cursor, frame(b"out\n", 0))
    cursor.subscribed(1)
    (err,) = shown(cursor, frame(b"err\n", 100, "stderr"))
    assert err is not None and err.data == b"err\n"
    assert err.note.startswith("[the first 100 byte(s) of stderr are not in the live log;")


def test_a_log_whose_start_never_reached_the_reader_says_so_first() -> None:
    cursor = LogCursor("J", reread="LOGS J")
    cursor.subscribed(1)
    (first, err) = shown(cursor, frame(b"16\n132317\n", 815104), frame(b"e\n", 0, "stderr"))
    assert first is not None and first.note == (
        "[the first 815104 byte(s) of stdout are not in the live log; once the attempt has ended, LOGS J shows them]"
    )
    assert err is not None and err.note == ""


@pytest.mark.parametrize(
    ("run", "note"),
    [
        (AttemptInfo(1, "COMPLETED"), ""),
        (
            AttemptInfo(1, "COMPLETED", log_lost=3),
            "[attempt 1: 3 live datagram(s) were lost on the way (the stored log is exact)]",
        ),
        (
            AttemptInfo(2, "FAILED", log_lost=1, truncated=True),
            "[attempt 2: the log was over the size limit: only its tail is kept; "
            "1 live datagram(s) were lost on the way (the stored tail is exact)]",
        ),
    ],
)
def test_the_note_after_a_log_says_what_it_lacks(run: AttemptInfo, note: str) -> None:
    job = JobInfo("J", "SHELL", "x", run.state, 0, run.attempt, 3, 0.0, runs=[run])
    assert log_note(job, follow=True) == note
    if not run.truncated:  # read from the store, the log is exact: lost datagrams are no news
        assert log_note(job) == ""
    assert log_note(job, attempt=1) == ""  # an earlier attempt's stored log: nothing to add


def test_a_reader_who_joins_at_a_later_attempt_is_told_which() -> None:
    cursor = LogCursor("J")
    cursor.subscribed(3)
    (piece,) = shown(cursor, frame(b"x\n", 0, attempt=3))
    assert piece is not None and piece.new_attempt == 3


@pytest.mark.parametrize(
    ("state", "note"),
    [("DELAYED", "[J has not run: it is DELAYED]"), ("SKIPPED", "[J has not run: it ended SKIPPED]")],
)
def test_the_log_of_a_job_that_never_ran_says_so(state: str, note: str) -> None:
    assert log_note(JobInfo("J", "SHELL", "x", state, 0, 0, 3, 0.0)) == note
