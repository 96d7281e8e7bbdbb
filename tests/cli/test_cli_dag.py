"""Seeing DAGs from the REPL and the command line: parse, tree, progress, DLQ, cancel."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from protocol import AttemptInfo, Cancel, JobInfo, ListJobs
from titan.cli.dagview import dag_tree, state_summary
from titan.cli.listing import Listing
from titan.cli.main import main
from titan.cli.parse import CancelDagCommand, WatchCommand, parse_dag, parse_line
from titan.cli.progress import follow_jobs
from titan.cli.render import job_detail, job_table
from titan.cli.repl import Repl
from titan.client import TitanClient
from titan.client.testing import FakeMaster
from titan.config import ClientSettings
from titan.errors import UsageError

from .test_cli_render import NOW, text_of


def info(job_id: str, state: str = "COMPLETED", *deps: str, **fields: Any) -> JobInfo:
    values: dict[str, Any] = {"type": "SHELL", "data": "true", "priority": 1, "attempts": 1, "max_attempts": 3}
    values.update(fields)
    values.setdefault("tries", values["attempts"])  # no RETRY, no skipped numbers
    return JobInfo(id=job_id, state=state, submitted_at=NOW, deps=list(deps), dag="DAG-1", **values)


# --------------------------------------------------------------------------- parsing


def test_watch_and_cancel_dag_parse() -> None:
    assert parse_line("watch RUN_CALC") == WatchCommand("RUN_CALC")
    assert parse_line("CANCEL_DAG DAG-1a2b3c4d") == CancelDagCommand("DAG-1a2b3c4d")
    with pytest.raises(UsageError, match="CANCEL_DAG expects one job id"):
        parse_line("CANCEL_DAG")
    with pytest.raises(UsageError, match="WATCH expects one job id"):
        parse_line("WATCH a b")


def test_the_design_dag_line_parses_with_and_without_spaces_in_deps() -> None:
    line = (
        "START_DASH|DEPLOY|server_dashboard.py|1|0|[] ; WORKER_A|DEPLOY|Worker.jar|8081|1|2|[START_DASH] ; "
        "RUN_CALC|RUN|calc.py|2|0|[WORKER_A,START_DASH]|AFFINITY"
    )
    dash, worker, calc = parse_dag(line)
    assert (worker.port, worker.deps, worker.delay_ms) == (8081, ["START_DASH"], 2)
    assert (calc.deps, calc.affinity, calc.priority) == (["WORKER_A", "START_DASH"], True, 2)


# --------------------------------------------------------------------------- rendering


def test_dag_tree_draws_each_job_once_and_references_shared_children() -> None:
    jobs = [
        info("A"),
        info("B", "RUNNING", "A", worker="[8081]"),
        info("C", "DEAD", "A", attempts=3, error="exit code 1"),
        info("D", "SKIPPED", "B", "C", error="dependency C is DEAD"),
        info("E", "BLOCKED", "OLD"),
    ]
    text = text_of(dag_tree(jobs))
    lines = text.splitlines()
    assert lines[0] == "DAG DAG-1  5 jobs  1 COMPLETED · 1 RUNNING · 1 BLOCKED · 1 DEAD · 1 SKIPPED"
    assert "├── A  COMPLETED" in text
    assert "B  RUNNING  on [8081]" in text
    assert "C  DEAD  attempt 3/3  exit code 1" in text
    assert sum("D  SKIPPED  dependency C is DEAD" in line for line in lines) == 1
    assert sum("↑ D SKIPPED" in line for line in lines) == 1
    assert "E  BLOCKED  after OLD" in text


def test_dag_tree_is_cut_for_huge_dags() -> None:
    jobs = [info(f"J{i}") for i in range(500)]
    text = text_of(dag_tree(jobs, max_lines=50))
    assert "… 450 more jobs not shown" in text


def test_a_long_chain_is_drawn_no_deeper_than_the_limit() -> None:
    chain = [info("C0"), *(info(f"C{i}", "COMPLETED", f"C{i - 1}") for i in range(1, 300))]
    text = text_of(dag_tree(chain, max_depth=10))
    assert "… deeper than 10 levels (titan list --dag DAG-1 lists every job)" in text
    assert "… 290 more jobs not shown" in text
    assert max(len(line) for line in text.splitlines()) < 120


def test_the_job_status_was_asked_about_is_always_in_the_tree() -> None:
    chain = [info("C0"), *(info(f"C{i}", "COMPLETED", f"C{i - 1}") for i in range(1, 300))]
    text = text_of(dag_tree(chain, max_depth=10, focus="C250"))
    assert "C250  COMPLETED" in text
    assert "… 245 jobs above C245 not shown (titan list --dag DAG-1 lists every job)" in text
    assert "C244" not in text and "… deeper than 10 levels (titan list --dag DAG-1 lists every job)" in text
    assert "… 45 more jobs not shown" in text  # C255 to C299: those above C245 are not counted twice
    assert "C5  COMPLETED" in text_of(dag_tree(chain, max_depth=10, focus="C5"))  # drawn from the roots already
    assert "above" not in text_of(dag_tree(chain, max_depth=10, focus="C5"))
    in_the_repl = text_of(dag_tree(chain, max_depth=10, focus="C250", list_command="LIST --dag"))
    assert "(LIST --dag DAG-1 lists every job)" in in_the_repl and "titan list" not in in_the_repl


def test_dlq_table_shows_the_last_error_and_detail_shows_attempts() -> None:
    runs = [
        AttemptInfo(attempt=1, state="FAILED", worker="[8081]", exit_code=1, error="exit code 1", backoff_s=1.25),
        AttemptInfo(attempt=2, state="FAILED", worker="[8082]", exit_code=1, error="exit code 1"),
    ]
    dead = info("X", "DEAD", attempts=2, max_attempts=2, error="exit code 1", runs=runs)
    table = text_of(job_table([dead], now=NOW, title="Dead letter queue"))
    assert "LAST ERROR" in table and "exit code 1" in table
    assert "LAST ERROR" not in text_of(job_table([info("OK")], now=NOW))
    detail = text_of(job_detail(dead, now=NOW))
    assert "Attempts" in detail and "1.25s" in detail and "[8082]" in detail and "DAG-1" in detail


def test_a_job_waiting_to_run_again_is_shown_on_no_worker() -> None:
    requeued = info("R", "PENDING", worker="[8081]", started_at=NOW - 5, error="worker [8081] lost")
    running = info("S", "RUNNING", worker="[8082]", started_at=NOW - 1)
    table = text_of(job_table([requeued, running], now=NOW))
    assert "[8081]" not in table and "[8082]" in table
    detail = text_of(job_detail(requeued, now=NOW))
    assert "[8081]" not in detail.split("Error")[0] and "worker [8081] lost" in detail
    assert "on [8081]" not in text_of(dag_tree([requeued]))


def test_status_says_where_an_affinity_job_runs() -> None:
    assert "runs where A ran" in text_of(job_detail(info("B", "PENDING", "A", affinity=True), now=NOW))
    assert "Affinity" not in text_of(job_detail(info("C", "PENDING", "A"), now=NOW))


def test_state_summary_orders_and_counts() -> None:
    summary = state_summary([info("A", "RUNNING"), info("B"), info("C"), info("D", "BLOCKED")])
    assert summary.plain == "2 COMPLETED · 1 RUNNING · 1 BLOCKED"


# --------------------------------------------------------------------------- against a master


async def test_follow_jobs_draws_progress_until_final(fake_master: FakeMaster) -> None:
    fake_master.add_job("A", state="RUNNING")
    fake_master.add_job("B", state="BLOCKED")
    out = io.StringIO()
    async with await TitanClient.connect(master=fake_master.address) as client:
        follower = asyncio.create_task(follow_jobs(client, ["A", "B"], Console(file=out, width=100), interval_s=0.02))
        fake_master.set_state("A", "COMPLETED")
        fake_master.set_state("B", "SKIPPED")
        jobs = await follower
    assert [job.state for job in jobs] == ["COMPLETED", "SKIPPED"]
    assert "2/2" in out.getvalue() and "1 COMPLETED · 1 SKIPPED" in out.getvalue()
    assert "✗" in out.getvalue() and "✓" not in out.getvalue()  # not every job ended well


async def test_follow_jobs_ends_with_a_check_when_every_job_completed(fake_master: FakeMaster) -> None:
    fake_master.add_job("A", state="COMPLETED")
    out = io.StringIO()
    async with await TitanClient.connect(master=fake_master.address) as client:
        await follow_jobs(client, ["A"], Console(file=out, width=100), interval_s=0.02)
    assert "✓" in out.getvalue() and "✗" not in out.getvalue()


def _repl(fake_master: FakeMaster, out: io.StringIO, pipe: PipeInput) -> Repl:
    """A REPL on ``fake_master`` that reads ``pipe`` and prints to ``out``."""
    return Repl(
        ClientSettings(host="127.0.0.1", port=fake_master.port),
        console=Console(file=out, width=120, color_system=None),
        history_path=None,
        input=pipe,
        output=DummyOutput(),
    )


async def test_repl_status_of_a_dag_job_shows_the_tree_and_cancel_dag(fake_master: FakeMaster) -> None:
    out = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("SUBMIT_DAG A|SHELL|true|1|0|[] ; B|SHELL|true|1|0|[A]\rSTATUS B\rCANCEL_DAG B\rDLQ\rEXIT\r")
        repl = _repl(fake_master, out, pipe)
        assert await repl.run() == 0
    text = out.getvalue()
    assert "DAG DAG-00000001 accepted, 2 jobs: A, B" in text
    assert "DAG DAG-00000001  2 jobs" in text and "└── B  BLOCKED" in text
    cancels = [r for r in fake_master.received if isinstance(r, Cancel)]
    assert cancels == [Cancel(job_id="B", dag=True)]
    assert ListJobs(state=None, limit=1000, dag="DAG-00000001") in fake_master.received  # read a page at a time
    assert "Dead letter queue" in text


async def test_cli_cancel_dag_and_list_dag(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake_master.add_job("A", dag="DAG-9")
    fake_master.add_job("B", dag="DAG-9")
    fake_master.add_job("SOLO")
    assert await asyncio.to_thread(main, ["--master", fake_master.address, "cancel", "A", "--dag"]) == 0
    assert Cancel(job_id="A", dag=True) in fake_master.received
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("DAG DAG-9: ") and len(out) == 3  # the summary, then every job of the DAG
    fake_master.add_job("C", dag="DAG-8")
    assert await asyncio.to_thread(main, ["--master", fake_master.address, "cancel", "C", "--dag", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dag"] == "DAG-8" and [job["id"] for job in shown["jobs"]] == ["C"]
    assert await asyncio.to_thread(main, ["--master", fake_master.address, "cancel", "DAG-9"]) == 1
    assert "to cancel a whole DAG: titan cancel DAG-9 --dag" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["--master", fake_master.address, "list", "--dag", "A", "--json"]) == 0
    assert [job["id"] for job in json.loads(capsys.readouterr().out)] == ["A", "B"]


async def test_repl_list_dag_lists_a_dags_jobs(fake_master: FakeMaster) -> None:
    out = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("SUBMIT_DAG A|SHELL|true|1|0|[] ; B|SHELL|true|1|0|[A]\rLIST BLOCKED --dag DAG-00000001\rEXIT\r")
        assert await _repl(fake_master, out, pipe).run() == 0
    assert any(
        isinstance(r, ListJobs) and r.dag == "DAG-00000001" and r.state == "BLOCKED" for r in fake_master.received
    )


async def test_cli_submit_dag_prints_the_dag_id(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--master", fake_master.address, "submit-dag", "A|SHELL|true|1|0|[] ; B|SHELL|true|1|0|[A]"]
    assert await asyncio.to_thread(main, argv) == 0
    assert capsys.readouterr().out == "DAG-00000001\n"


async def test_the_repl_names_at_most_a_dozen_ids_of_a_big_dag(fake_master: FakeMaster) -> None:
    chain = " ; ".join(f"C{i}|SHELL|true|1|0|[{f'C{i - 1}' if i else ''}]" for i in range(40))
    out = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text(f"SUBMIT_DAG {chain}\rEXIT\r")
        assert await _repl(fake_master, out, pipe).run() == 0
    assert "DAG DAG-00000001 accepted, 40 jobs: C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11 and 28 more" in (
        out.getvalue()
    )


async def test_cli_submit_dag_applies_job_options_to_every_job(fake_master: FakeMaster) -> None:
    argv = ["--master", fake_master.address, "submit-dag", "A|SHELL|true|1|0|[] ; B|SHELL|true|1|0|[A]"]
    argv += ["--attempts", "5", "--backoff-base", "0.5", "--backoff-factor", "3"]
    assert await asyncio.to_thread(main, argv) == 0
    (request,) = [r for r in fake_master.received if type(r).__name__ == "SubmitDag"]
    assert {(s.max_attempts, s.backoff_base_s, s.backoff_factor, s.backoff_cap_s) for s in request.jobs} == {
        (5, 0.5, 3.0, None)
    }


def test_cli_refuses_bad_backoff_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "SHELL|true", "--backoff-factor", "0.5"]) == 2
    assert capsys.readouterr().err == "titan: error: --backoff-factor must be at least 1, got 0.5\n"


async def test_repl_watch_follows_the_whole_dag_until_final(fake_master: FakeMaster) -> None:
    fake_master.add_job("A", state="COMPLETED", dag="DAG-9")
    fake_master.add_job("B", state="RUNNING", dag="DAG-9", deps=["A"])
    out = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("WATCH A\rEXIT\r")
        repl = _repl(fake_master, out, pipe)
        session = asyncio.create_task(repl.run())
        fake_master.set_state("B", "COMPLETED")  # before or after WATCH asks: it ends either way
        assert await session == 0
    text = out.getvalue()
    assert "DAG DAG-9" in text and "2/2" in text and "└── B  COMPLETED" in text


async def test_repl_status_and_watch_take_the_dag_id_submit_dag_printed(fake_master: FakeMaster) -> None:
    fake_master.add_job("A", state="COMPLETED", dag="DAG-9")
    fake_master.add_job("B", state="COMPLETED", dag="DAG-9", deps=["A"])
    out = io.StringIO()
    with create_pipe_input() as pipe:
        pipe.send_text("STATUS DAG-9\rWATCH DAG-9\rSTATUS DAG-404\rEXIT\r")
        repl = _repl(fake_master, out, pipe)
        assert await repl.run() == 0
    text = out.getvalue()
    assert text.count("DAG DAG-9  2 jobs  2 COMPLETED") == 2 and "└── B  COMPLETED" in text
    assert "2/2" in text
    assert "error: no job with id 'DAG-404'" in text


async def test_cli_status_and_wait_take_a_dag_id(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake_master.add_job("A", state="COMPLETED", dag="DAG-9")
    fake_master.add_job("B", state="DEAD", dag="DAG-9", deps=["A"])
    fake_master.add_job("SOLO", state="COMPLETED")
    address = ["--master", fake_master.address]
    assert await asyncio.to_thread(main, [*address, "status", "DAG-9", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dag"] == "DAG-9" and [job["id"] for job in shown["jobs"]] == ["A", "B"]
    assert await asyncio.to_thread(main, [*address, "wait", "DAG-9", "SOLO"]) == 1  # B is DEAD
    assert capsys.readouterr().out.splitlines() == ["A COMPLETED", "B DEAD", "SOLO COMPLETED"]
    assert await asyncio.to_thread(main, [*address, "wait", "DAG-404"]) == 1
    assert capsys.readouterr().err == "titan: error: no job with id 'DAG-404'\n"


def test_a_cut_dag_listing_says_which_jobs_it_shows() -> None:
    listing = Listing(jobs=[], more=True)
    assert listing.note(200, dag=True, flag=True) == (
        "more jobs match than the 200 shown (the first submitted): raise --limit to see them"
    )
    assert "(newest first)" in listing.note(200, dag=False, flag=False)
    assert Listing(jobs=[], more=False).note(200, dag=True, flag=True) == ""


async def test_cli_cancel_of_a_big_dag_shows_fifty_jobs_and_counts_the_rest(
    fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in range(120):
        fake_master.add_job(f"J{n:03d}", dag="DAG-7")
    assert await asyncio.to_thread(main, ["--master", fake_master.address, "cancel", "J000", "--dag"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 50 + 1
    assert out[-1] == "… 70 more: titan list --dag DAG-7 lists every job (--json: all of them here)"
