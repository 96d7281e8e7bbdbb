"""The titan console script: one-shot commands, --json output, exit statuses."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from protocol import AttemptInfo, Submit, SubmitDag
from titan.cli.executor import CommandRunner
from titan.cli.link import MasterLink
from titan.cli.main import main
from titan.cli.parse import LogsCommand
from titan.client.testing import FakeMaster, worker_info
from titan.config import ClientSettings

JOB_KEYS = {
    "id",
    "type",
    "state",
    "attempts",
    "worker",
    "exit_code",
    "submitted_at",
    "started_at",
    "finished_at",
    "deps",
}


async def titan(*argv: str) -> int:
    # main() runs its own event loop; the fake master needs this one to keep running
    return await asyncio.to_thread(main, list(argv))


async def closed_port() -> int:
    master = await FakeMaster().start()
    await master.aclose()
    return master.port


async def test_submit_prints_the_id(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    assert await titan("--master", fake_master.address, "submit", "PDF_CONVERT|future_report.pdf|1|8000") == 0
    assert capsys.readouterr().out == "TSK-00000001\n"
    job = fake_master.jobs["TSK-00000001"]
    assert (job.type, job.data, job.delay_ms) == ("PDF_CONVERT", "future_report.pdf", 8000)


async def test_submit_json_with_options(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["submit", "RUN|calc.py", "--attempts", "5", "--timeout", "2.5", "--skills", "gpu,GENERAL", "--json"]
    assert await titan(*argv, "--master", fake_master.address) == 0
    assert json.loads(capsys.readouterr().out) == {"id": "TSK-00000001"}
    request = fake_master.received[-1]
    assert isinstance(request, Submit)
    spec = request.job
    assert (spec.max_attempts, spec.timeout_s, spec.skills) == (5, 2.5, ["GPU", "GENERAL"])


async def test_submit_dag_json(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    dag = "A|RUN|a.py|1|0|[] ; W|DEPLOY|Worker.jar|8081|1|2|[A]"
    assert await titan("--master", fake_master.address, "submit-dag", dag, "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"ids": ["A", "W"], "dag": "DAG-00000001"}


async def test_submit_dag_reads_a_file_or_stdin_one_job_per_line(
    fake_master: FakeMaster, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [f"J{i:04d}|SHELL|echo {i}\\; true|1|0|[{f'J{i - 1:04d}' if i else ''}]" for i in range(4_000)]
    dag_file = tmp_path / "dag.txt"
    dag_file.write_text("# a chain of 4 000 jobs: far over the kernel's limit on one argument\n\n" + "\n".join(lines))
    assert await titan("--master", fake_master.address, "submit-dag", f"@{dag_file}", "--json") == 0
    ids = json.loads(capsys.readouterr().out)["ids"]
    assert len(ids) == 4_000 and ids[0] == "J0000"
    submitted = [r for r in fake_master.received if isinstance(r, SubmitDag)]
    assert submitted[0].jobs[1].data == "echo 1; true" and submitted[0].jobs[1].deps == ["J0000"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("S1|SHELL|true|1|0|[]\nS2|SHELL|true|1|0|[S1]\n"))
    assert await titan("--master", fake_master.address, "submit-dag", "-", "--json") == 0
    assert json.loads(capsys.readouterr().out)["ids"] == ["S1", "S2"]
    assert await titan("--master", fake_master.address, "submit-dag", f"@{tmp_path / 'none.txt'}") == 2
    assert "submit-dag: cannot read" in capsys.readouterr().err


async def test_status_json_has_the_job_keys(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake_master.add_job("A", state="COMPLETED", worker="w-8081", exit_code=0, attempts=1, deps=["B"], started_at=5.0)
    assert await titan("--master", fake_master.address, "status", "A", "--json") == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    job = json.loads(out)
    assert JOB_KEYS <= job.keys()
    assert (job["id"], job["state"], job["worker"], job["exit_code"], job["deps"]) == (
        "A",
        "COMPLETED",
        "w-8081",
        0,
        ["B"],
    )
    assert job["started_at"] == 5.0 and job["finished_at"] is None


async def test_status_json_has_each_attempt_and_a_services_restarts(
    fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [
        AttemptInfo(attempt=1, state="FAILED", worker="[8081]", exit_code=3, error="exit code 3", backoff_s=1.5),
        AttemptInfo(attempt=2, state="RUNNING", worker="[8082]", started_at=9.0, outputs=["a.txt"]),
    ]
    fake_master.add_job("S", job_type="DEPLOY", state="RUNNING", attempts=2, runs=runs, restarts=2, up=True)
    assert await titan("--master", fake_master.address, "status", "S", "--json") == 0
    job = json.loads(capsys.readouterr().out)
    assert (job["restarts"], job["up"]) == (2, True)
    first, second = job["runs"]
    assert (first["attempt"], first["worker"], first["exit_code"], first["error"], first["backoff_s"]) == (
        1,
        "[8081]",
        3,
        "exit code 3",
        1.5,
    )
    assert (second["state"], second["started_at"], second["error"], second["outputs"]) == (
        "RUNNING",
        9.0,
        None,
        ["a.txt"],
    )


async def test_list_json_is_an_array(
    fake_master: FakeMaster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TITAN_MASTER", fake_master.address)  # no --master: the environment decides
    fake_master.add_job("A")
    fake_master.add_job("B", state="DEAD")
    assert await titan("list", "--json") == 0
    jobs = json.loads(capsys.readouterr().out)
    assert [job["id"] for job in jobs] == ["A", "B"] and all(JOB_KEYS <= job.keys() for job in jobs)
    assert await titan("list", "dead", "--json") == 0
    assert [job["id"] for job in json.loads(capsys.readouterr().out)] == ["B"]


async def test_a_list_cut_at_its_limit_says_so_on_stderr(
    fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in "ABC":
        fake_master.add_job(name)
    assert await titan("--master", fake_master.address, "list", "--limit", "2", "--json") == 0
    captured = capsys.readouterr()
    assert [job["id"] for job in json.loads(captured.out)] == ["A", "B"]
    assert captured.err == "titan: more jobs match than the 2 shown (newest first): raise --limit to see them\n"
    assert await titan("--master", fake_master.address, "list", "--limit", "3", "--json") == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 3 and captured.err == ""
    assert await titan("--master", fake_master.address, "list", "--limit", "0") == 2
    assert capsys.readouterr().err == "titan: error: --limit must be at least 1, got 0\n"


async def test_stats_and_workers_json(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake_master.workers = [worker_info(8081, load=1, services=["DASH"]), worker_info(8082, parent="w-8081")]
    fake_master.add_job("A")
    assert await titan("--master", fake_master.address, "stats", "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert {"queued", "delayed", "blocked", "dead", "running", "workers"} <= stats.keys()
    assert stats["queued"] == 1
    assert (stats["skipped"], stats["stopped"]) == (0, 0) and isinstance(stats["extra"], dict)
    first, second = stats["workers"]
    assert {"id", "port", "parent", "load", "capacity", "skills", "services", "health"} <= first.keys()
    assert (first["port"], first["load"], first["capacity"], first["services"]) == (8081, 1, 4, ["DASH"])
    assert second["parent"] == "w-8081"
    assert await titan("--master", fake_master.address, "workers", "--json") == 0
    assert [w["port"] for w in json.loads(capsys.readouterr().out)] == [8081, 8082]


async def test_human_output(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake_master.workers = [worker_info(8081, load=1)]
    fake_master.add_job("A")
    assert await titan("--master", fake_master.address, "stats") == 0
    assert "• [8081] Load: 1/4 (25%) | Skills: [GENERAL]" in capsys.readouterr().out
    assert await titan("--master", fake_master.address, "status", "A") == 0
    assert "Job A" in capsys.readouterr().out


async def test_cancel_and_retry(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake_master.add_job("A")
    fake_master.add_job("D", state="DEAD")
    assert await titan("--master", fake_master.address, "cancel", "A") == 0
    assert capsys.readouterr().out.strip() == "A CANCELLED"
    assert await titan("--master", fake_master.address, "retry", "D", "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "PENDING"
    assert await titan("--master", fake_master.address, "retry", "A") == 1
    assert capsys.readouterr().err.count("\n") == 1


async def test_wait_exit_status(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake_master.add_job("A", state="COMPLETED")
    fake_master.add_job("B", state="COMPLETED")
    fake_master.add_job("C", state="DEAD", error="exit code 7")
    fake_master.add_job("R", state="RUNNING")
    assert await titan("--master", fake_master.address, "wait", "A", "B") == 0
    assert capsys.readouterr().out.splitlines() == ["A COMPLETED", "B COMPLETED"]
    assert await titan("--master", fake_master.address, "wait", "A", "C") == 1
    assert capsys.readouterr().out.splitlines() == ["A COMPLETED", "C DEAD  exit code 7"]
    # a timeout is told apart from a failure, as timeout(1) does
    assert await titan("--master", fake_master.address, "wait", "A", "R", "--timeout", "0.01") == 124
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["A COMPLETED", "R RUNNING"]
    assert captured.err == "titan: error: timed out waiting for R\n"


async def test_logs_not_available(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake_master.add_job("A")
    assert await titan("--master", fake_master.address, "logs", "A") == 1
    assert capsys.readouterr().err.startswith("titan: error: LOGS is not available yet")
    fake_master.logs["A"] = [("stdout", b"hello\n")]
    assert await titan("--master", fake_master.address, "logs", "A") == 0
    assert capsys.readouterr().out == "hello\n"


async def test_unknown_job_is_one_line(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    assert await titan("--master", fake_master.address, "status", "nope") == 1
    assert capsys.readouterr().err == "titan: error: no job with id 'nope'\n"


async def test_unreachable_master(capsys: pytest.CaptureFixture[str]) -> None:
    port = await closed_port()
    assert await titan("--master", f"127.0.0.1:{port}", "stats", "--json") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"titan: error: cannot reach the master at 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", "RUN"], "SUBMIT expects TYPE|DATA"),
        (["submit", "RUN|calc.py", "--attempts", "0"], "--attempts must be at least 1"),
        (["submit", "RUN|calc.py", "--attempts", "99999999999999999999"], "fit in 64 bits"),
        (["submit", "RUN|calc.py", "--timeout", "inf"], "--timeout must be a positive number of seconds, got inf"),
        (["submit", "RUN|calc.py", "--timeout", "nan"], "--timeout must be a positive number of seconds, got nan"),
        (["submit", "RUN|calc.py", "--backoff-cap", "nan"], "--backoff-cap must be a positive number"),
        (["submit", "RUN|calc.py", "--wait-timeout", "5"], "--wait-timeout goes with --wait"),
        (["submit", "RUN|calc.py", "--wait", "--wait-timeout", "0"], "--wait-timeout must be a positive number"),
        (["submit-dag", "A|RUN|a.py|1|0|[]", "--wait", "--wait-timeout", "nan"], "--wait-timeout must be a positive"),
        (["submit", "RUN|calc.py", "--backoff-factor", "inf"], "--backoff-factor must be at least 1"),
        (["wait", "A", "--timeout", "nan"], "--timeout must be a positive number of seconds"),
        (["submit", "SHELL|true", "--file", "x.sh"], "for RUN or DEPLOY jobs, not SHELL"),
        (["submit-dag", "A|RUN|calc.py|1|0|B"], "expected [DEPS]"),
        (["list", "SLEEPING"], "list expects [STATE]"),
        (["frobnicate"], "invalid choice"),
        (["status"], "the following arguments are required: id"),
        (["--master", "127.0.0.1:notaport", "stats"], "bad address"),
    ],
)
async def test_usage_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = await closed_port()  # a usage error must be reported before any connection attempt
    assert await titan("--master", f"127.0.0.1:{port}", *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_python_dash_m_titan_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "titan.cli", "--master", "127.0.0.1:1", "status", "X"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("titan: error: cannot reach the master at 127.0.0.1:1")
    assert result.stderr.count("\n") == 1


async def test_the_repl_shows_a_logs_escape_sequences_escaped_and_titan_logs_passes_them(
    fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_master.add_job("A")
    fake_master.logs["A"] = [("stdout", b"\x1b[31mRED\x1b]0;pwned\x07 bell\n\tok\n")]
    out = io.StringIO()
    runner = CommandRunner(MasterLink(ClientSettings(port=fake_master.port)), Console(file=out, force_terminal=True))
    try:
        await runner.run(LogsCommand("A"))
    finally:
        await runner.link.aclose()
    shown = out.getvalue()
    assert "\x1b]0" not in shown and "\x07" not in shown and "\x1b[31mRED" not in shown
    assert "\\x1b[31mRED\\x1b]0;pwned\\x07 bell\n" in shown and shown.rstrip().endswith("ok")  # rich expands the tab
    assert await titan("--master", fake_master.address, "logs", "A") == 0
    assert capsys.readouterr().out == "\x1b[31mRED\x1b]0;pwned\x07 bell\n\tok\n"  # a shell gets the bytes


async def test_logs_f_exits_as_wait_does_when_the_job_ends_badly(
    fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_master.add_job("OK", state="COMPLETED")
    fake_master.add_job("GONE", state="CANCELLED", error="cancelled")
    for job_id in ("OK", "GONE"):
        fake_master.logs[job_id] = [("stdout", b"working\n")]
    assert await titan("--master", fake_master.address, "logs", "OK", "-f") == 0
    assert capsys.readouterr().err == ""
    assert await titan("--master", fake_master.address, "logs", "GONE", "-f") == 1
    captured = capsys.readouterr()
    assert captured.out == "working\n" and captured.err == "titan: GONE ended CANCELLED: cancelled\n"
    assert await titan("--master", fake_master.address, "logs", "GONE") == 0  # only read, not followed


async def test_submit_warns_of_a_shell_line_that_reads_like_a_mistyped_priority(
    fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await titan("--master", fake_master.address, "submit", "SHELL|true|1|x") == 0
    assert capsys.readouterr().err.startswith("titan: warning: 'x' is not a number, so the whole 'true|1|x'")


@pytest.mark.parametrize("argv", [["status", "A"], ["list", "--json"], ["stats"]])
async def test_a_reader_that_went_away_ends_the_command_quietly_with_sigpipes_status(
    fake_master: FakeMaster, argv: list[str]
) -> None:
    fake_master.add_job("A")
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `titan ... | head` once head has exited: every write fails with EPIPE
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "titan.cli", "--master", fake_master.address, *argv,
            stdout=write_end, stderr=subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 128 + signal.SIGPIPE
    assert err == b""


async def test_a_one_shot_error_quoting_what_was_typed_escapes_its_control_characters(
    fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await titan("--master", fake_master.address, "submit", "RUN|calc.py|9|\x1b[2J") == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "got '\\x1b[2J'" in err and err.count("\n") == 1


async def test_logs_to_a_reader_that_leaves_mid_write_ends_with_sigpipes_status(fake_master: FakeMaster) -> None:
    fake_master.add_job("A")
    fake_master.logs["A"] = [("stdout", b"".join(b"%d\n" % i for i in range(300_000)))]  # far over a pipe's buffer
    read_end, write_end = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "titan.cli", "--master", fake_master.address, "logs", "A",
            stdout=write_end, stderr=subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(write_end)
    first = await asyncio.to_thread(os.read, read_end, 10)  # as `| head -1` reads, then leaves
    os.close(read_end)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert first.startswith(b"0\n")
    assert process.returncode == 128 + signal.SIGPIPE  # the short write is not taken for the whole
    assert err == b""


async def test_a_script_whose_reader_leaves_ends_with_sigpipes_status(fake_master: FakeMaster) -> None:
    for n in range(30):
        fake_master.add_job(f"J{n}")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "titan.cli", "--master", fake_master.address,
            stdin=subprocess.PIPE, stdout=write_end, stderr=subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(b"LIST\nLIST\nLIST\nEXIT\n"), 30)
    assert process.returncode == 128 + signal.SIGPIPE
    assert err == b""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert re.fullmatch(r"titan \d+\.\d+\.\d+\n", capsys.readouterr().out)


async def test_a_deployed_script_takes_its_port_from_a_flag(
    fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await titan("--master", fake_master.address, "submit", "DEPLOY|server_dashboard.py", "--port", "8050") == 0
    (sent,) = [r for r in fake_master.received if isinstance(r, Submit)]
    assert (sent.job.type, sent.job.data, sent.job.port, sent.job.priority) == (
        "DEPLOY",
        "server_dashboard.py",
        8050,
        1,
    )
    capsys.readouterr()
    assert await titan("--master", fake_master.address, "submit", "RUN|calc.py", "--port", "8050") == 2
    assert "--port is for a DEPLOY" in capsys.readouterr().err
    assert await titan("--master", fake_master.address, "submit", "DEPLOY|Worker.jar|8081", "--port", "8082") == 2
    assert "the port is given twice" in capsys.readouterr().err
