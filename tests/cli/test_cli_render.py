"""Rendering: pure functions to rich objects, read back as text from a recording console."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from rich.console import Console, RenderableType

from protocol import AttemptInfo, JobInfo, StatsReply, TransitionInfo
from titan.cli.parse import COMMAND_NAMES
from titan.cli.render import (
    HELP_ALIASES,
    HELP_ENTRIES,
    format_age,
    help_view,
    job_detail,
    job_table,
    stats_view,
    worker_label,
    worker_tree,
    workers_table,
)
from titan.cli.safe import for_terminal
from titan.client.testing import worker_info as worker

NOW = 1_700_000_000.0


def text_of(renderable: RenderableType) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(renderable)
    return console.export_text()


def stats(**fields: Any) -> StatsReply:
    counts: dict[str, Any] = {"queued": 0, "delayed": 0, "blocked": 0, "dead": 0, "running": 0, "workers": []}
    counts.update(fields)
    return StatsReply(**{"scheduled": 0, "completed": 0, "failed": 0, "cancelled": 0, **counts})


def job(job_id: str = "TSK-1a2b3c4d", **fields: Any) -> JobInfo:
    values: dict[str, Any] = {
        "type": "RUN",
        "data": "calc.py",
        "state": "RUNNING",
        "priority": 1,
        "attempts": 1,
        "max_attempts": 3,
        "submitted_at": NOW - 125,
    }
    values.update(fields)
    values.setdefault("tries", values["attempts"])  # no RETRY, no skipped numbers
    return JobInfo(id=job_id, **values)


def test_worker_label_is_the_classic_monitor_line() -> None:
    assert worker_label(worker(8081, load=1)).plain == "• [8081] Load: 1/4 (25%) | Skills: [GENERAL]"
    assert worker_label(worker(8082, skills=["GPU", "GENERAL"])).plain.endswith("Skills: [GPU, GENERAL]")
    assert worker_label(worker(8083, health="LOST")).plain.endswith("| LOST")


def test_stats_header_counts() -> None:
    text = text_of(
        stats_view(
            stats(
                queued=3, delayed=1, blocked=2, dead=4, running=5, workers=[worker(8081), worker(8082, health="LOST")]
            )
        )
    )
    for line in (
        "Active Workers:     1",
        "Execution Queue:    3",
        "Delayed (Time):     1",
        "Blocked (DAG):      2",
        "Dead Letter (DLQ):  4",
        "Running:            5",
    ):
        assert line in text
    assert "Starting" not in text  # only while dispatched jobs have not reported their start
    assert "Starting:           4" in text_of(stats_view(stats(running=5, scheduled=4)))


def test_stats_tree_nests_children_under_parents_with_services_and_tasks() -> None:
    workers = [
        worker(8081, load=1, services=["WORKER_B"], tasks=["WORKER_B", "TSK-00000001"]),
        worker(8082, parent="w-8081", services=["DASH"]),
        worker(8083, parent="w-8082", load=2),
        worker(8090, load=4),
    ]
    lines = text_of(stats_view(stats(workers=workers))).splitlines()
    tree = lines[lines.index(next(line for line in lines if line.startswith("• [8081]"))) :]
    assert tree[:7] == [
        "• [8081] Load: 1/4 (25%) | Skills: [GENERAL]",
        "├── Service ID: WORKER_B",
        "├── Task: TSK-00000001",
        "└── • [8082] Load: 0/4 (0%) | Skills: [GENERAL]",
        "    ├── Service ID: DASH",
        "    └── • [8083] Load: 2/4 (50%) | Skills: [GENERAL]",
        "• [8090] Load: 4/4 (100%) | Skills: [GENERAL]",
    ]


def test_stats_tree_survives_unknown_parents_and_loops() -> None:
    workers = [worker(8081, parent="gone"), worker(8082, parent="w-8083"), worker(8083, parent="w-8082")]
    text = text_of(stats_view(stats(workers=workers)))
    assert "• [8081]" in text  # an unknown parent makes it a root


def test_stats_without_workers() -> None:
    assert "no workers registered" in text_of(stats_view(stats()))


def test_job_table_rows() -> None:
    text = text_of(
        job_table(
            [job(worker="w-8081"), job("TSK-2", state="COMPLETED", exit_code=0, attempts=2, submitted_at=NOW - 5)],
            now=NOW,
        )
    )
    assert "ID" in text and "TRIES" in text and "AGE" in text
    row = next(line for line in text.splitlines() if "TSK-1a2b3c4d" in line)
    for cell in ("RUN", "calc.py", "RUNNING", "1/3", "w-8081", "2m05s"):
        assert cell in row
    row = next(line for line in text.splitlines() if "TSK-2" in line)
    assert "COMPLETED" in row and "2/3" in row and " 0 " in row and "5s" in row


def test_job_table_fits_an_80_column_screen_folding_only_data_and_error() -> None:
    jobs = [
        job(worker="w-8081", data="for i in 1 2 3; do echo step $i; sleep 0.3; done"),
        job("TSK-2", state="DEAD", exit_code=127, attempts=3, error="exit code 127", submitted_at=NOW - 605),
    ]
    console = Console(record=True, width=80, color_system=None)
    console.print(job_table(jobs, now=NOW))
    lines = console.export_text().splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines)
    header = " ".join(lines[: next(i for i, line in enumerate(lines) if "TSK-" in line)]).split()
    assert {"ID", "TYPE", "DATA", "STATE", "TRIES", "WORKER", "EXIT", "AGE", "LAST", "ERROR"} == set(header)
    dead = next(line for line in lines if "TSK-2" in line).split()
    start = dead.index("DEAD")
    assert dead[start : start + 5] == ["DEAD", "3/3", "-", "127", "10m05s"]  # none of these folded


def test_status_help_and_workers_keep_their_short_cells_whole_at_80_columns() -> None:
    detail = job(
        state="DEAD",
        exit_code=127,
        attempts=1,
        runs=[AttemptInfo(attempt=1, state="FAILED", worker="[18082]", started_at=NOW - 5, finished_at=NOW - 4.5,
                          exit_code=127, error="exit code 127")],
        history=[TransitionInfo("RUNNING", "DEAD", "out of attempts (1)", NOW - 4.5)],
    )  # fmt: skip
    for view in (job_detail(detail, now=NOW), help_view(), workers_table([worker(18081)])):
        console = Console(record=True, width=80, color_system=None)
        console.print(view)
        text = console.export_text()
        assert all(len(line.rstrip()) <= 80 for line in text.splitlines())
    console = Console(record=True, width=80, color_system=None)
    console.print(job_detail(detail, now=NOW))
    assert datetime.fromtimestamp(NOW - 5).strftime("%H:%M:%S.%f")[:-3] in console.export_text()  # not folded
    console = Console(record=True, width=80, color_system=None)
    console.print(help_view())
    assert "TYPE|DATA[|PRIORITY[|DELAY_MS]]" in console.export_text()


def test_tries_are_shown_against_the_limit_with_the_latest_number_beside() -> None:
    retried = job(state="COMPLETED", attempts=5, tries=2)
    assert "2/3" in text_of(job_table([retried], now=NOW))
    assert "2/3 (latest: attempt 5)" in text_of(job_detail(retried, now=NOW))
    assert "(latest" not in text_of(job_detail(job(attempts=2), now=NOW))


def test_a_listed_job_shows_its_arguments_as_submit_takes_them() -> None:
    text = text_of(job_table([job(data="sleep.py", args=["5", "a b"])], now=NOW))
    assert "sleep.py 5 'a b'" in text


def test_empty_job_table_says_so() -> None:
    assert "no jobs" in text_of(job_table([], now=NOW))


def test_job_detail_has_fields_and_story() -> None:
    history = [
        TransitionInfo(start="PENDING", finish="SCHEDULED", stimulus="scheduler picked w-8081", t=NOW - 100),
        TransitionInfo(start="SCHEDULED", finish="RUNNING", stimulus="worker started", t=NOW - 99),
    ]
    text = text_of(job_detail(job(deps=["A", "B"], error="boom", history=history, exit_code=3), now=NOW))
    assert "Job TSK-1a2b3c4d" in text
    for expected in ("RUNNING", "calc.py", "1/3", "A, B", "boom", "Exit code", "History", "scheduler picked w-8081"):
        assert expected in text
    assert "2m05s ago" in text


def test_a_job_cancelled_before_it_ran_shows_when_it_finished_but_no_start() -> None:
    text = text_of(job_detail(job(state="CANCELLED", attempts=0, finished_at=NOW - 5), now=NOW))
    finished = next(line for line in text.splitlines() if "Finished" in line)
    started = next(line for line in text.splitlines() if "Started" in line)
    assert finished.split("Finished")[1].strip(" │").strip() not in ("", "-")
    assert started.split("Started")[1].strip(" │").strip() == "-"


def test_a_worker_known_only_from_its_tasks_after_a_restart_shows_no_capacity() -> None:
    awaited = dataclasses.replace(worker(8083, load=3, health="DISCONNECTED"), host="", capacity=0, skills=[])
    row = next(line for line in text_of(workers_table([awaited])).splitlines() if "[8083]" in line)
    assert "3/?" in row and "3/0" not in row


def test_workers_table() -> None:
    text = text_of(
        workers_table([worker(8081, load=1, services=["DASH"]), worker(8082, parent="w-8081", health="LOST")])
    )
    row = next(line for line in text.splitlines() if "[8082]" in line)
    assert "w-8081" in row and "LOST" in row
    assert "DASH" in text and "1/4" in text


def test_a_worker_expected_back_after_a_master_restart_is_shown_by_its_name_once_bracketed() -> None:
    # what the master shows of it: the name its jobs recorded, no port, host or capacity until it registers
    expected = dataclasses.replace(worker(8081, load=1, health="DISCONNECTED"), name="[8081]", port=0, capacity=0)
    assert worker_label(expected).plain.startswith("• [8081] Load: 1/0")
    assert "[[8081]]" not in text_of(workers_table([expected]))


def test_reserved_memory_shows_once_a_job_reserves_some() -> None:
    reserving = dataclasses.replace(worker(8081, load=1), memory_mb=16_000, memory_used_mb=2_048)
    idle = dataclasses.replace(worker(8082), memory_mb=16_000)
    assert worker_label(reserving).plain.endswith("| Memory: 2 048/16 000 MiB")
    assert "Memory" not in worker_label(idle).plain
    text = text_of(workers_table([reserving, idle]))
    assert "MEMORY" in text and "2 048/16 000 MiB" in text and "0/16 000 MiB" in text
    assert "MEMORY" not in text_of(workers_table([idle]))
    detail = text_of(job_detail(job(memory_mb=512), now=NOW))
    assert "512 MiB reserved" in detail
    assert "Memory" not in text_of(job_detail(job(), now=NOW))


def test_workers_table_leaves_out_empty_parent_and_services_and_fits_80_columns() -> None:
    table = workers_table([worker(8081, load=1), worker(8082)])
    console = Console(width=80, record=True, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "PARENT" not in text and "SERVICES" not in text
    assert "[8081]" in text and "[8082]" in text  # whole, not folded over two lines
    assert max(len(line) for line in text.splitlines()) <= 80


def test_help_lists_every_command_with_syntax_and_example() -> None:
    assert {name for name, _, _ in HELP_ENTRIES} == set(COMMAND_NAMES)
    text = text_of(help_view())
    for name, _, _ in HELP_ENTRIES:
        assert name in text
    assert "QUIT" not in text.splitlines()  # an alias: named in EXIT's line, not a bare line of its own
    assert "QUIT   (the same as EXIT)" in text_of(help_view("QUIT"))
    assert "SUBMIT PDF_CONVERT|future_report.pdf|1|8000" in text
    only = text_of(help_view("LOGS"))
    assert "LOGS <id> [-f]" in only and "SUBMIT_DAG" not in only
    assert "Commands are case-insensitive; fields are separated by |" in only  # not wrapped to one entry's width


def test_format_age() -> None:
    assert [format_age(s) for s in (0, 59, 61, 3600 + 120, 86400 * 2 + 3600)] == ["0s", "59s", "1m01s", "1h02m", "2d1h"]


def test_help_examples_stay_whole_at_80_columns() -> None:
    console = Console(record=True, width=80, color_system=None)
    console.print(help_view())
    lines = [line.strip() for line in console.export_text().splitlines()]
    for name, syntax, example in HELP_ENTRIES:
        if name in HELP_ALIASES:
            continue
        assert example in lines  # on a line of its own, ready to copy
        if " " not in syntax or len(syntax) <= 80:
            assert syntax in lines


def test_escape_sequences_in_what_users_sent_never_reach_the_terminal() -> None:
    hostile = job(
        "TSK-1",
        data="true \x1b[2J\x1b]0;pwned\x07",
        error="boom\x1b[31m",
        state="DEAD",
        history=[TransitionInfo(start="RUNNING", finish="DEAD", stimulus="exit 1\x1b[0m", t=NOW)],
    )
    evil_worker = dataclasses.replace(worker(8081), host="\u202elocalhost", skills=["GPU\x1b[5m"])
    console = Console(width=200, record=True, force_terminal=True)
    for view in (
        job_table([hostile]),
        job_detail(hostile, now=NOW),
        workers_table([evil_worker]),
        worker_label(evil_worker),
        *worker_tree([evil_worker]),
    ):
        console.print(view)
    shown = console.export_text(styles=False)
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
    assert "\\x1b[2J" in shown and "\\u202e" in shown
    # and a message with nothing unprintable is not copied at all
    plain = job()
    assert for_terminal(plain) is plain
