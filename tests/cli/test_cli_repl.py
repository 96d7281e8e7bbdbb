"""The titan> REPL, headless: pipe input, dummy output, a fake master on a real socket."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from protocol import Stats, StatsReply
from titan.cli.parse import LogsCommand, parse_line
from titan.cli.repl import JobIdCompleter, Repl, build_completer, job_types, open_history
from titan.client.testing import FakeMaster, worker_info
from titan.config import ClientSettings


@pytest.fixture
def pipe() -> Iterator[PipeInput]:
    with create_pipe_input() as pipe:
        yield pipe


def make_repl(port: int, pipe: PipeInput, *, debug: bool = False) -> tuple[Repl, io.StringIO]:
    out = io.StringIO()
    repl = Repl(
        ClientSettings(host="127.0.0.1", port=port, connect_timeout_s=2.0),
        console=Console(file=out, width=120, color_system=None),
        history_path=None,
        input=pipe,
        output=DummyOutput(),
        debug=debug,
    )
    return repl, out


async def test_session_submit_status_stats_error_exit(fake_master: FakeMaster, pipe: PipeInput) -> None:
    fake_master.workers = [worker_info(8081, load=1, services=["WORKER_B"])]
    pipe.send_text(
        "SUBMIT RUN|calc.py\r"
        "status TSK-00000001\r"
        "STATS\r"
        "SUBMIT RUN|calc.py|x\r"
        "\r"
        "EXIT\r"
        "STATS\r"  # never read: EXIT came first
    )
    repl, out = make_repl(fake_master.port, pipe)
    assert await repl.run() == 0
    text = out.getvalue()
    assert "submitted TSK-00000001" in text
    assert "Job TSK-00000001" in text and "PENDING" in text
    assert "• [8081] Load: 1/4 (25%) | Skills: [GENERAL]" in text
    assert "└── Service ID: WORKER_B" in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert errors == ["error: SUBMIT expects TYPE|DATA[|PRIORITY[|DELAY_MS]]; PRIORITY must be an integer, got 'x'"]
    assert "Traceback" not in text
    assert sum(isinstance(request, Stats) for request in fake_master.received) >= 1
    assert text.count("Active Workers") == 1
    assert "TSK-00000001" in repl.known_ids


async def test_ctrl_c_clears_the_line_and_ctrl_d_leaves(fake_master: FakeMaster, pipe: PipeInput) -> None:
    pipe.send_text("SUBMIT RUN|calc.py\x03LIST\r\x04")
    repl, out = make_repl(fake_master.port, pipe)
    assert await repl.run() == 0
    text = out.getvalue()
    assert "submitted" not in text and fake_master.jobs == {}
    assert "no jobs" in text


async def test_unreachable_master_gives_one_line_per_command(pipe: PipeInput) -> None:
    gone = await FakeMaster().start()
    port = gone.port
    await gone.aclose()
    pipe.send_text("STATS\rSTATUS TSK-1\rQUIT\r")
    repl, out = make_repl(port, pipe)
    assert await repl.run() == 0
    lines = out.getvalue().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 2 and all(f"cannot reach the master at 127.0.0.1:{port}" in line for line in errors)
    assert "Traceback" not in out.getvalue()
    assert "disconnected" in repl.toolbar().value


async def test_reconnects_after_the_master_drops(fake_master: FakeMaster, pipe: PipeInput) -> None:
    repl, out = make_repl(fake_master.port, pipe)
    try:
        assert await repl.execute("SUBMIT RUN|a.py")
        await fake_master.drop_clients()
        assert await repl.execute("SUBMIT RUN|b.py")
        assert len(fake_master.jobs) == 2
        await fake_master.aclose()
        assert await repl.execute("STATS")
    finally:
        await repl.link.aclose()
    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("submitted")] == [
        "submitted TSK-00000001",
        "submitted TSK-00000002",
    ]
    assert len([line for line in lines if line.startswith("error: cannot reach the master")]) == 1


async def test_internal_errors_are_one_line_unless_debug(fake_master: FakeMaster, pipe: PipeInput) -> None:
    def broken(request: Stats) -> StatsReply:
        raise RuntimeError("kaboom")

    fake_master.on(Stats, broken)  # the master answers INTERNAL: a RemoteError, one line
    repl, out = make_repl(fake_master.port, pipe)
    try:
        await repl.execute("STATS")
        repl.error(ValueError("bug in the client"))
        repl.debug = True
        try:
            raise ValueError("shown with its traceback")
        except ValueError as exc:
            repl.error(exc)
    finally:
        await repl.link.aclose()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("error: internal error: RuntimeError: kaboom")
    assert lines[1] == "error: internal error: ValueError: bug in the client"
    assert "Traceback" not in "\n".join(lines[:2])
    assert "Traceback" in out.getvalue()


async def test_exit_is_a_command_result(fake_master: FakeMaster, pipe: PipeInput) -> None:
    repl, _ = make_repl(fake_master.port, pipe)
    assert await repl.execute("help") is True
    assert await repl.execute("exit") is False


async def test_toolbar_shows_the_cached_snapshot(fake_master: FakeMaster, pipe: PipeInput) -> None:
    fake_master.workers = [worker_info(8081), worker_info(8082, health="LOST")]
    fake_master.add_job("A")
    fake_master.add_job("B", state="DEAD")
    repl, _ = make_repl(fake_master.port, pipe)
    try:
        await repl.refresh_once()
        bar = repl.toolbar().value
        assert fake_master.address in bar
        assert "workers <b>1</b>" in bar and "queued <b>1</b>" in bar and "dead <b>1</b>" in bar
        await fake_master.aclose()
        await repl.refresh_once()
        assert "disconnected" in repl.toolbar().value
    finally:
        await repl.link.aclose()


def test_completion_of_commands_and_job_ids() -> None:
    ids = {"TSK-00000001", "TSK-00000002", "RUN_CALC"}
    completer = build_completer(ids)

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]

    assert set(complete("sta")) == {"STATS", "STATUS"}
    assert complete("status") == ["STATUS "]  # Tab after a whole command word adds the space
    assert set(complete("CANCEL")) == {"CANCEL ", "CANCEL_DAG"}
    assert complete("STATUS TSK") == ["TSK-00000001", "TSK-00000002"]
    assert complete("cancel run") == ["RUN_CALC"]
    assert "RUNNING" in complete("LIST RU")
    ids.add("TSK-00000003")  # the set is shared: new ids complete at once
    assert "TSK-00000003" in [c.text for c in JobIdCompleter(ids).get_completions(Document("T"), CompleteEvent())]
    ids.add("DAG-0000abcd")
    assert complete("STATUS D") == ["DAG-0000abcd"]  # STATUS, WATCH and CANCEL_DAG take a DAG id
    assert complete("CANCEL_DAG D") == ["DAG-0000abcd"]
    assert complete("LOGS D") == [] and complete("RETRY D") == []  # these take a job's id only
    assert complete("LOGS RUN_CALC ") == ["-f", "--attempt"]  # once the id is there, the options
    assert complete("LOGS RUN_CALC -f --") == ["--attempt"]
    assert complete("LOGS RUN_CALC --attempt ") == []  # a number
    assert complete("LIST --dag D") == ["DAG-0000abcd"]
    assert complete("LIST RUNNING ") == ["--dag"] and complete("LIST --") == ["--dag"]
    assert complete("STOP RUN") == ["RUN_CALC"]


def test_logs_takes_attempt_joined_to_its_number() -> None:
    assert parse_line("LOGS J --attempt=2 -f") == LogsCommand("J", True, 2)
    assert parse_line("LOGS J --attempt 2") == LogsCommand("J", False, 2)


def test_submit_completes_the_handler_types_of_perm_files_here(tmp_path: Path) -> None:
    (tmp_path / "handlers").mkdir()
    for name in ("pdf_convert.py", "email_alert.py", "notes.txt"):
        (tmp_path / "handlers" / name).write_text("")
    assert job_types(tmp_path) == ["RUN|", "SHELL|", "DEPLOY|", "EMAIL_ALERT|", "PDF_CONVERT|"]
    assert job_types(tmp_path / "nowhere") == ["RUN|", "SHELL|", "DEPLOY|"]


def test_history_falls_back_to_memory(tmp_path: Path) -> None:
    assert isinstance(open_history(tmp_path / "history"), FileHistory)
    assert isinstance(open_history(tmp_path / "missing-dir" / "history"), InMemoryHistory)
    assert isinstance(open_history(None), InMemoryHistory)


# ---------------------------------------------------------------- commands from a file or a pipe


def script_repl(port: int, width: int = 120) -> tuple[Repl, io.StringIO]:
    """A REPL to run scripts with (no prompt input), and what it prints."""
    out = io.StringIO()
    repl = Repl(
        ClientSettings(host="127.0.0.1", port=port, connect_timeout_s=2.0),
        console=Console(file=out, width=width, color_system=None),
        history_path=None,
    )
    return repl, out


async def test_a_script_runs_every_line_skips_comments_and_fails_if_one_failed(fake_master: FakeMaster) -> None:
    repl, out = script_repl(fake_master.port)
    script = io.StringIO(
        "# nightly jobs\nSUBMIT RUN|calc.py\n\n  # indented comment\nFROB\nLIST\nEXIT\nSUBMIT RUN|x.py\n"
    )
    assert await repl.run_script(script) == 1
    text = out.getvalue()
    assert "submitted TSK-00000001" in text and "TSK-00000001" in text.split("submitted", 1)[1]
    assert [line for line in text.splitlines() if line.startswith("error:")] == [
        "error: unknown command 'FROB'; type HELP for the commands"
    ]
    assert list(fake_master.jobs) == ["TSK-00000001"]  # nothing after EXIT ran
    assert repl.session is None  # no prompt was ever made

    clean = Repl(ClientSettings(host="127.0.0.1", port=fake_master.port), console=Console(file=io.StringIO()))
    assert await clean.run_script(io.StringIO("STATS\n")) == 0


async def test_titan_reads_commands_from_a_pipe_without_prompt_or_warning(fake_master: FakeMaster) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "titan.cli", "--master", fake_master.address,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(b"SUBMIT RUN|calc.py\nSTATUS nope\n"), timeout=60)
    assert process.returncode == 1  # one line failed
    assert stdout.decode().splitlines() == ["submitted TSK-00000001", "error: no job with id 'nope'"]
    assert b"not a terminal" not in stderr and b"titan>" not in stdout


async def test_an_error_quoting_what_was_typed_escapes_its_control_characters(fake_master: FakeMaster) -> None:
    repl, out = script_repl(fake_master.port, width=200)
    script = io.StringIO("SUBMIT RUN|calc.py|9|\x1b[2J\nLIST \x1b]0;owned\x07\nCANCEL \x1b[31mX\n")
    assert await repl.run_script(script) == 1
    errors = [line for line in out.getvalue().splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    assert all("\\x1b" in line for line in errors)
