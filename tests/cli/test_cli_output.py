"""The console the commands print on: a terminal's width, or rows that never fold in a pipe."""

from __future__ import annotations

import io
import sys

import pytest

from titan.cli.output import PIPE_WIDTH, stdout_console
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
    command = "for i in 1 2 3; do echo step $i; sleep 0.3; done; echo finished with every step"
    with console.capture() as captured:
        console.print(job_table([job(data=command)], now=NOW))
    rows = captured.get().splitlines()
    assert len(rows) == 2 and command in rows[1]  # the header and one row


def test_on_a_terminal_or_with_columns_set_rich_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", _Stream(tty=False))
    monkeypatch.setenv("COLUMNS", "90")
    assert stdout_console().width == 90
    monkeypatch.delenv("COLUMNS")
    monkeypatch.setattr(sys, "stdout", _Stream(tty=True))
    assert stdout_console().width != PIPE_WIDTH
