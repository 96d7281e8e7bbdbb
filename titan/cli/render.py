"""What people see: pure functions from protocol data to rich renderables.

Nothing here prints or talks to the network, so tests render the results into
``Console(record=True)`` and read the text. Labels are built as ``Text`` rather
than markup strings because worker ports and skills are written in brackets
(``[8081]``, ``[GENERAL]``) that rich would otherwise take for style tags.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from rich.console import Group, JustifyMethod, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from protocol import JobInfo, StatsReply, WorkerInfo
from titan.client import FINAL_STATES

from .safe import for_terminal
from .scaling import SCALING_HELP, autoscaler_rows

__all__ = [
    "HELP_ALIASES",
    "HELP_ENTRIES",
    "STATE_STYLES",
    "attempts_table",
    "format_age",
    "help_view",
    "is_active",
    "job_detail",
    "job_table",
    "state_text",
    "stats_view",
    "worker_label",
    "worker_tree",
    "workers_table",
]

STATE_STYLES: Final = {
    "COMPLETED": "bold green",
    "RUNNING": "bold cyan",
    "SCHEDULED": "cyan",
    "PENDING": "yellow",
    "DELAYED": "magenta",
    "BLOCKED": "blue",
    "DEAD": "bold red",
    "FAILED": "red",
    "CANCELLED": "dim",
    "SKIPPED": "dim",
    "STOPPED": "dim",
}

# health values of workers that no longer take tasks
_INACTIVE: Final = frozenset({"LOST", "DEAD", "DISCONNECTED", "RETIRED", "DRAINED"})

#: (command, syntax, example), in the order HELP lists them
HELP_ENTRIES: Final[tuple[tuple[str, str, str], ...]] = (
    (
        "SUBMIT",
        "SUBMIT TYPE|DATA[|PRIORITY[|DELAY_MS]]   (RUN|calc.py 200000: a file and its arguments; "
        "DEPLOY|Worker.jar|PORT[|...]: a child worker)",
        "SUBMIT PDF_CONVERT|future_report.pdf|1|8000",
    ),
    (
        "SUBMIT_DAG",
        "SUBMIT_DAG ID|TYPE|DATA[|PORT]|PRIORITY|DELAY_MS|[DEPS][|AFFINITY] ; ...   (\\; is a ';' inside a command)",
        "SUBMIT_DAG A|RUN|calc.py|1|0|[] ; B|DEPLOY|Worker.jar|8081|1|0|[A]",
    ),
    ("STATS", "STATS", "STATS"),
    ("STATUS", "STATUS <id>   (a job, and its DAG as a tree; or a DAG by its DAG id)", "STATUS TSK-1a2b3c4d"),
    ("LIST", "LIST [STATE] [--dag ID]", "LIST RUNNING"),
    ("LOGS", "LOGS <id> [-f] [--attempt N]", "LOGS TSK-1a2b3c4d -f"),
    (
        "WATCH",
        "WATCH <id>   (a live progress bar until the job, or its whole DAG, is final; a DAG id works too)",
        "WATCH RUN_CALC",
    ),
    ("CANCEL", "CANCEL <id>", "CANCEL TSK-1a2b3c4d"),
    (
        "CANCEL_DAG",
        "CANCEL_DAG <id>   (cancel every unfinished job of the DAG; a DAG id or any of its job ids)",
        "CANCEL_DAG RUN_CALC",
    ),
    ("RETRY", "RETRY <id>   (requeue from the dead-letter queue; un-skips its dependants)", "RETRY TSK-1a2b3c4d"),
    ("DLQ", "DLQ   (the dead-letter queue)", "DLQ"),
    ("WORKERS", "WORKERS", "WORKERS"),
    *SCALING_HELP,
    ("HELP", "HELP [command]", "HELP SUBMIT_DAG"),
    ("EXIT", "EXIT   (or QUIT, or Ctrl-D)", "EXIT"),
    ("QUIT", "QUIT   (the same as EXIT)", "QUIT"),
)
# shown by HELP <name> only: the full list names them in their command's line ("EXIT (or QUIT, ...)")
HELP_ALIASES: Final = frozenset({"QUIT"})


# --------------------------------------------------------------------------- small pieces


def format_age(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h10m``, ``4d3h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def command_line(job: JobInfo) -> str:
    """DATA with the job's arguments, quoted as SUBMIT takes them: ``calc.py 200000``."""
    return shlex.join([job.data, *job.args]) if job.args else job.data


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _clock(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def is_active(worker: WorkerInfo) -> bool:
    """Whether the worker takes tasks (counts as an Active Worker)."""
    return worker.health.upper() not in _INACTIVE


# --------------------------------------------------------------------------- jobs


_ERROR_STATES: Final = frozenset({"DEAD", "FAILED", "SKIPPED", "CANCELLED"})


# a list shows the start of a long command or error (STATUS and --json have it whole): a 16 MB
# command once took 18 000 lines and 9 s to list
_LIST_DATA_CHARS: Final = 60
_LIST_ERROR_CHARS: Final = 120


def _shortened(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis if longer."""
    if len(text) <= limit and "\n" not in text:
        return text
    flat = " ".join(text.split("\n"))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _plain_table(title: str | None = None, *, justify: JustifyMethod = "left") -> Table:
    """Columns two spaces apart, no rules, bold headers: every table the commands print."""
    return Table(title=title, title_justify=justify, header_style="bold", box=None, pad_edge=False)


#: states of a job that waits to (re)start: it runs nowhere, whatever its last attempt ran on
_WAITING_STATES: Final = frozenset({"PENDING", "BLOCKED", "DELAYED"})


def current_worker(job: JobInfo) -> str | None:
    """Where the job is or was last: None while it waits to start again (its attempts say where it ran)."""
    return None if job.state in _WAITING_STATES else job.worker


def job_table(jobs: Sequence[JobInfo], *, now: float | None = None, title: str | None = None) -> Table:
    """One row per job: id, type, data, state (coloured), attempts, worker, exit code, age.

    A LAST ERROR column is added when a listed job is DEAD, FAILED, SKIPPED or
    CANCELLED with a reason (the dead-letter queue, ``LIST DEAD``).
    """
    jobs = [for_terminal(job) for job in jobs]
    now = time.time() if now is None else now
    errors = any(job.error and job.state in _ERROR_STATES for job in jobs)
    # columns two spaces apart and no rules, as ps or kubectl print them: an 80-column screen keeps
    # room for DATA and LAST ERROR, the only columns that fold; every other one stays on one line
    table = _plain_table(title, justify="center")
    names = ["ID", "TYPE", "DATA", "STATE", "TRIES", "WORKER", "EXIT", "AGE"] + ["LAST ERROR"] * errors
    for name in names:
        table.add_column(name, no_wrap=name not in ("DATA", "LAST ERROR"), overflow="fold")
    for job in jobs:
        row: list[Text | str] = [
            job.id,
            job.type,
            Text(_shortened(command_line(job), _LIST_DATA_CHARS)),
            state_text(job.state),
            f"{job.tries}/{job.max_attempts}",
            _dash(current_worker(job)),
            _dash(job.exit_code),
            format_age(now - job.submitted_at),
        ]
        if errors:
            shown = _shortened(job.error, _LIST_ERROR_CHARS) if job.state in _ERROR_STATES else ""
            row.append(Text(shown, style="red"))
        table.add_row(*row)
    if not jobs:
        table.caption = "no jobs"
    return table


def _attempts(job: JobInfo) -> str:
    """``2/3``: the tries counted against the limit; the latest attempt's number too when it differs."""
    counted = f"{job.tries}/{job.max_attempts}"
    return counted if job.attempts == job.tries else f"{counted} (latest: attempt {job.attempts})"


def job_detail(job: JobInfo, *, now: float | None = None) -> Panel:
    """Every field of one job, then its story (one row per state change)."""
    job = for_terminal(job)
    now = time.time() if now is None else now
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    rows: list[tuple[str, Text | str]] = [
        ("State", state_text(job.state)),
        ("Type", job.type),
        ("Data", Text(job.data)),
        ("Args", Text(" ".join(job.args)) if job.args else "-"),
        ("Priority", str(job.priority)),
        ("Attempts", _attempts(job)),
        ("Worker", _dash(current_worker(job))),
        ("Exit code", _dash(job.exit_code)),
        ("Error", Text(job.error, style="red") if job.error else "-"),
        ("Depends on", Text(", ".join(job.deps)) if job.deps else "-"),
        *([("Affinity", Text(f"runs where {job.deps[0]} ran"))] if job.affinity and job.deps else []),
        ("DAG", _dash(job.dag)),
        ("Skills", Text(", ".join(job.skills)) if job.skills else "-"),
        ("Delay", f"{job.delay_ms} ms"),
        ("Timeout", "-" if job.timeout_s is None else f"{job.timeout_s:g} s"),
        *([("Memory", f"{job.memory_mb} MiB reserved")] if job.memory_mb is not None else []),
        ("Submitted", f"{_clock(job.submitted_at)} ({format_age(now - job.submitted_at)} ago)"),
        ("Started", _clock(job.started_at if current_worker(job) else None)),
        # a job cancelled or skipped before it ran has no worker, but it did finish
        ("Finished", _clock(job.finished_at if current_worker(job) or job.state in FINAL_STATES else None)),
    ]
    for name, value in rows:
        fields.add_row(name, value)
    parts: list[RenderableType] = [fields]
    if job.runs:
        parts.append(attempts_table(job))
    if job.history:
        story = _plain_table("History")
        for name in ("TIME", "FROM", "TO", "CAUSE"):
            story.add_column(name, no_wrap=name != "CAUSE", overflow="fold")
        for step in job.history:
            story.add_row(
                datetime.fromtimestamp(step.t).strftime("%H:%M:%S.%f")[:-3],
                state_text(step.start),
                state_text(step.finish),
                Text(step.stimulus),
            )
        parts.append(story)
    return Panel(Group(*parts), title=Text(f"Job {job.id}", style="bold"), title_align="left", expand=False)


def attempts_table(job: JobInfo) -> Table:
    """One row per attempt: where, how it ended, how long it ran, the backoff after it."""
    job = for_terminal(job)
    table = _plain_table("Attempts")
    for name in ("#", "WORKER", "STATE", "EXIT", "STARTED", "RAN", "BACKOFF", "ERROR / OUTPUTS"):
        table.add_column(name, no_wrap=name != "ERROR / OUTPUTS", overflow="fold")
    for run in job.runs:
        ran = "-"
        if run.started_at is not None and run.finished_at is not None:
            ran = f"{max(0.0, run.finished_at - run.started_at):.2f}s"
        note = Text(run.error, style="red") if run.error else Text(", ".join(run.outputs))
        if run.log_lost:
            note.append(f"{' ' if note else ''}[{run.log_lost} live log datagram(s) lost]", style="yellow")
        if run.truncated:
            note.append(f"{' ' if note else ''}[log truncated: tail kept]", style="yellow")
        table.add_row(
            str(run.attempt),
            _dash(run.worker),
            state_text(run.state),
            _dash(run.exit_code),
            "-" if run.started_at is None else datetime.fromtimestamp(run.started_at).strftime("%H:%M:%S.%f")[:-3],
            ran,
            "-" if run.backoff_s is None else f"{run.backoff_s:.2f}s",
            note,
        )
    return table


# --------------------------------------------------------------------------- workers


def _display(worker: WorkerInfo) -> str:
    # a worker the master expects back after a restart has no port yet: its name is "[8081]" already
    return str(worker.port) if worker.port else worker.name.strip("[]") or worker.id


def worker_label(worker: WorkerInfo) -> Text:
    """``• [8081] Load: 1/4 (25%) | Skills: [GENERAL]`` (plus the health if not healthy)."""
    worker = for_terminal(worker)
    percent = round(100 * worker.load / worker.capacity) if worker.capacity else 0
    label = Text(f"• [{_display(worker)}] Load: {worker.load}/{worker.capacity} ({percent}%)")
    label.append(f" | Skills: [{', '.join(worker.skills)}]")
    if worker.memory_used_mb:  # only once jobs reserve memory: most clusters never do
        label.append(f" | Memory: {_memory(worker)}")
    if not is_active(worker):
        label.append(f" | {worker.health.upper()}", style="bold red")
    return label


def _memory(worker: WorkerInfo) -> str:
    """Reserved over what may be reserved, in MiB."""
    total = f"{worker.memory_mb:,}".replace(",", " ") if worker.memory_mb is not None else "no limit"
    return f"{worker.memory_used_mb:,}".replace(",", " ") + f"/{total} MiB"


def _fill(node: Tree, worker: WorkerInfo, children: dict[str | None, list[WorkerInfo]], seen: set[str]) -> None:
    seen.add(worker.id)
    for service in worker.services:
        node.add(Text(f"Service ID: {service}", style="green"))
    services = set(worker.services)
    for task in worker.tasks:
        if task not in services:
            node.add(Text(f"Task: {task}", style="cyan"))
    for child in children.get(worker.id, []):
        if child.id not in seen:  # a parent loop in bad data must not recurse forever
            _fill(node.add(worker_label(child)), child, children, seen)


def worker_tree(workers: Iterable[WorkerInfo]) -> list[Tree]:
    """One tree per top-level worker; child workers nest under their parent."""
    workers = [for_terminal(worker) for worker in workers]
    workers = list(workers)
    known = {worker.id for worker in workers}
    children: dict[str | None, list[WorkerInfo]] = {}
    for worker in workers:
        parent = worker.parent if worker.parent in known and worker.parent != worker.id else None
        children.setdefault(parent, []).append(worker)
    trees: list[Tree] = []
    seen: set[str] = set()
    for worker in children.get(None, []):
        tree = Tree(worker_label(worker), guide_style="dim")
        _fill(tree, worker, children, seen)
        trees.append(tree)
    return trees


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def durability_rows(extra: Mapping[str, Any], now: float | None = None) -> list[tuple[str, Text]]:
    """The WAL and the last recovery, from ``StatsReply.extra`` (nothing if the master keeps no WAL)."""
    if "wal_fsync" not in extra:
        return []
    now = time.time() if now is None else now
    snapshot_at = extra.get("wal_last_snapshot_at")
    snapshot = f"snapshot {format_age(max(0.0, now - snapshot_at))} ago" if snapshot_at else "no snapshot yet"
    fsync = extra["wal_fsync"]
    wal = Text(f"{_megabytes(int(extra.get('wal_bytes', 0)))}, {snapshot}, fsync ")
    wal.append(fsync, style="" if fsync == "on" else "bold red")
    if extra.get("wal_warning"):
        wal.append(f" ({extra['wal_warning']})", style="red")
    rows = [("WAL", wal)]
    if extra.get("recovery_records") or extra.get("recovery_jobs") or extra.get("recovery_dropped"):
        recovery = Text(
            f"{extra.get('recovery_jobs', 0)} jobs from {extra.get('recovery_records', 0)} records"
            f" in {extra.get('recovery_s', 0):.2f}s"
        )
        if extra.get("recovery_dropped"):
            recovery.append(f"; dropped {extra['recovery_dropped']}", style="bold red")
        rows.append(("Recovered", recovery))
    return rows


def stats_view(stats: StatsReply) -> Group:
    """The classic monitor: the counts, then the worker tree with services and tasks."""
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column(justify="right")
    counts = (
        ("Active Workers", sum(1 for worker in stats.workers if is_active(worker))),
        ("Execution Queue", stats.queued),
        ("Delayed (Time)", stats.delayed),
        ("Blocked (DAG)", stats.blocked),
        ("Dead Letter (DLQ)", stats.dead),
        ("Running", stats.running),
        # dispatched, their start not yet reported: the tree lists them among its tasks already
        *([("Starting", stats.scheduled)] if stats.scheduled else []),
    )
    for name, value in counts:
        header.add_row(f"{name}:", Text(str(value), style="bold red" if name.startswith("Dead") and value else ""))
    for name, text in [*durability_rows(stats.extra), *autoscaler_rows(stats.extra)]:
        header.add_row(f"{name}:" if name else "", text)
    parts: list[RenderableType] = [
        Panel(header, title=Text("TITAN CLUSTER", style="bold"), title_align="left", expand=False)
    ]
    trees = worker_tree(stats.workers)
    parts.extend(trees if trees else [Text("no workers registered", style="dim")])
    return Group(*parts)


def workers_table(workers: Sequence[WorkerInfo]) -> Table:
    """WORKERS: one row per worker."""
    workers = [for_terminal(worker) for worker in workers]
    table = _plain_table()
    # PARENT, SERVICES and MEMORY only when some worker has one (reserved memory, for the last): nine
    # columns fold every cell on an 80-column screen
    optional = {
        "PARENT": any(worker.parent for worker in workers),
        "SERVICES": any(worker.services for worker in workers),
        "MEMORY": any(worker.memory_used_mb for worker in workers),
    }
    columns = ["WORKER", "ID", "HOST", "PARENT", "LOAD", "MEMORY", "SKILLS", "SERVICES", "HEALTH", "SEEN"]
    shown = [name for name in columns if optional.get(name, True)]
    for name in shown:
        table.add_column(name, overflow="fold")
    for worker in workers:
        health_style = "green" if is_active(worker) else "bold red"
        cells: dict[str, RenderableType] = {
            "WORKER": Text(f"[{_display(worker)}]"),
            "ID": worker.id,
            "HOST": worker.host or "-",
            "PARENT": _dash(worker.parent),
            # a worker the restarted master knows only from its tasks: its capacity comes when it registers
            "LOAD": f"{worker.load}/{worker.capacity}" if worker.capacity or worker.host else f"{worker.load}/?",
            "MEMORY": _memory(worker),
            "SKILLS": Text(", ".join(worker.skills)),
            "SERVICES": Text(", ".join(worker.services)) if worker.services else "-",
            "HEALTH": Text(worker.health, style=health_style),
            "SEEN": f"{format_age(worker.last_seen_s)} ago",
        }
        table.add_row(*(cells[name] for name in shown))
    if not workers:
        table.caption = "no workers registered"
    return table


# --------------------------------------------------------------------------- help


def help_view(topic: str | None = None) -> Table:
    """Every command with its syntax and an example (or just ``topic``).

    One column, the example indented under its syntax: a syntax has no spaces to wrap at, and in
    columns an 80-column screen folded it mid-word, so the examples could not be copied.
    """
    table = Table.grid()
    table.add_column()
    # a row, not the title: a title is wrapped to the width of the rows, one command's being narrow
    table.add_row("Commands are case-insensitive; fields are separated by |")
    for name, syntax, example in HELP_ENTRIES:
        if topic == name or (topic is None and name not in HELP_ALIASES):
            command, _, rest = syntax.partition(" ")
            line = Text.assemble((command, "bold"), f" {rest}" if rest else "")
            if example != syntax:
                line.append_text(Text.assemble("\n  ", (example, "cyan")))
            table.add_row(line)
    return table
