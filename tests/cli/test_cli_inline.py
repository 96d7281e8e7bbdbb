"""Local scripts sent inline, and the ages ``titan gc`` accepts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocol import JobSpec
from titan.cli.inline import MAX_INLINE_BYTES, attach_inline
from titan.cli.main import build_parser
from titan.cli.oneshot import check_arguments
from titan.cli.parse import SubmitCommand, parse_line
from titan.durations import parse_duration
from titan.errors import UsageError


def test_at_path_sends_the_local_file_inline(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_bytes(b"print('hi')\n")
    command = parse_line(f"SUBMIT RUN|@{script}")
    assert isinstance(command, SubmitCommand)
    spec = attach_inline(command.spec)
    assert (spec.type, spec.data, spec.payload) == ("RUN", "job.py", b"print('hi')\n")
    assert attach_inline(JobSpec(type="SHELL", data="@x")) == JobSpec(type="SHELL", data="@x")
    with pytest.raises(UsageError, match="cannot read"):
        attach_inline(JobSpec(type="RUN", data=f"@{tmp_path / 'missing.py'}"))


def test_titan_submit_file_and_gc_older_than(tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_bytes(b"echo hi\n")
    args = build_parser().parse_args(["submit", "--file", str(script)])
    check_arguments(args)
    assert (args.spec.type, args.spec.data, args.spec.payload) == ("RUN", "job.sh", b"echo hi\n")
    args = build_parser().parse_args(["gc", "--older-than", "7d"])
    check_arguments(args)
    assert args.older_than_s == 7 * 86400


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ("DEPLOY", ("DEPLOY", "job.sh", 1, 0)),
        ("RUN||7|250", ("RUN", "job.sh", 7, 250)),
        ("run|", ("RUN", "job.sh", 1, 0)),
    ],
)
def test_file_takes_a_type_and_priority_but_no_data(
    tmp_path: Path, job: str, expected: tuple[str, str, int, int]
) -> None:
    script = tmp_path / "job.sh"
    script.write_bytes(b"echo hi\n")
    args = build_parser().parse_args(["submit", job, "--file", str(script)])
    check_arguments(args)
    assert (args.spec.type, args.spec.data, args.spec.priority, args.spec.delay_ms) == expected


@pytest.mark.parametrize(
    ("job", "fragment"),
    [("SHELL|true", "for RUN or DEPLOY jobs, not SHELL"), ("|x", "not an empty type"), ("RUN|x.py", "not both")],
)
def test_file_with_another_kind_or_data_is_refused(tmp_path: Path, job: str, fragment: str) -> None:
    script = tmp_path / "s1.txt"
    script.write_bytes(b"echo hi\n")
    args = build_parser().parse_args(["submit", job, "--file", str(script)])
    with pytest.raises(UsageError, match=fragment):
        check_arguments(args)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("45s", 45), ("30m", 1800), ("12h", 43200), ("2w", 1209600)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7 days", "-1d", "d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="expected a number"):
        parse_duration(text)


@pytest.mark.parametrize("name", ["/dev/zero", "fifo", "folder"])
def test_a_local_script_that_is_no_regular_file_is_refused_without_reading_it(tmp_path: Path, name: str) -> None:
    # /dev/zero never ends (read whole, it filled the memory); a FIFO without a writer blocked the open
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    path = name if name.startswith("/") else str(tmp_path / name)
    with pytest.raises(UsageError, match="not a regular file|Is a directory"):
        attach_inline(JobSpec(type="RUN", data=f"@{path}"))


def test_a_local_script_over_the_frame_limit_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    script = tmp_path / "huge.bin"
    with script.open("wb") as out:
        out.truncate(MAX_INLINE_BYTES + 1)  # sparse: no disk taken
    with pytest.raises(UsageError, match=f"over the {MAX_INLINE_BYTES}-byte limit"):
        attach_inline(JobSpec(type="RUN", data=f"@{script}"))
    with script.open("wb") as out:
        out.truncate(MAX_INLINE_BYTES)
    assert len(attach_inline(JobSpec(type="RUN", data=f"@{script}")).payload or b"") == MAX_INLINE_BYTES
