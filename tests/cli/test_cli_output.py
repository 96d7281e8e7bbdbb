"""The console the commands print on: a terminal's width, or rows that never fold in a pipe."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from titan.cli.output import PIPE_WIDTH, print_table, stdout_console
from titan.cli.render import job_table

from .test_cli_render import NOW, job


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_in_a_pipe_a_long_row_stays_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "stdout", _Stream(tty=False))
    console = stdout_console()
    assert console.width == PIPE_WIDTH
    command = "for i in 1 2 3; do echo step $i; done; echo finished"
    console.print(job_table([job(data=command), job(data="x" * 5000, error="e\n" * 300, state="DEAD")], now=NOW))
    rows = sys.stdout.getvalue().splitlines()
    assert len(rows) == 3 and command in rows[1]  # the header and one row each
    assert "x" * 59 + "…" in rows[2] and "x" * 61 not in rows[2]  # a list shows the start of a long command
    assert len(rows[2]) < 300
    assert all(row == row.rstrip() for row in rows)  # no padding out to the table's width


def test_on_a_terminal_or_with_columns_set_rich_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", _Stream(tty=False))
    monkeypatch.setenv("COLUMNS", "90")
    assert stdout_console().width == 90
    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr(sys, "stdout", _Stream(tty=True))
    assert stdout_console().width != PIPE_WIDTH


def test_a_table_too_wide_for_the_screen_is_printed_wider_not_squeezed() -> None:
    stream = _Stream(tty=False)
    console = Console(file=stream, width=80, color_system=None)
    long_id = "nightly_report_generation_for_customer_accounts_emea"
    print_table(console, job_table([job(long_id, max_attempts=2**63 - 1)], now=NOW))
    header, row = stream.getvalue().splitlines()[:2]
    assert header.split() == ["ID", "TYPE", "DATA", "STATE", "TRIES", "WORKER", "EXIT", "AGE"]  # no 'STAT', 'TRIE'
    assert row.startswith(long_id) and f"1/{2**63 - 1}" in row
    narrow = Console(file=_Stream(tty=False), width=80, color_system=None)
    print_table(narrow, job_table([job()], now=NOW))  # a table that fits is printed as before
    assert max(len(line) for line in narrow.file.getvalue().splitlines()) <= 80  # type: ignore[attr-defined]


def test_with_columns_set_a_pipe_gets_that_width_and_no_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "stdout", _Stream(tty=False))
    console = stdout_console()
    assert console.width == 80
    console.print(job_table([job()], now=NOW))
    rows = sys.stdout.getvalue().splitlines()
    assert rows and all(row == row.rstrip() for row in rows)
