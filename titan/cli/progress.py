"""Following jobs until they are final, with a live rich progress bar.

The master tells us when jobs change by answering WAIT; asked with a short
timeout, WAIT is also a cheap snapshot of every job at once. So the follower
asks WAIT with ``interval_s`` in a loop: it returns as soon as the last job is
final (no lag at the end) and at least every ``interval_s`` otherwise, which
is when the bar is redrawn. One request per tick, however many jobs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from protocol import JobInfo
from titan.client import FINAL_STATES, TitanClient, WaitTimeout

from .dagview import state_summary

__all__ = ["follow_jobs"]


# a follow that ends well: every job COMPLETED (a service that was stopped ended as it should too)
_GOOD_ENDS = frozenset({"COMPLETED", "STOPPED"})


class _OutcomeColumn(SpinnerColumn):
    """The spinner while jobs run; then a green check if all ended well, else a red cross."""

    def render(self, task: Task) -> Text:
        if not task.finished:
            return super().render(task)  # type: ignore[return-value]
        return Text("✓", style="green") if task.fields.get("ok", True) else Text("✗", style="bold red")


class _StatesColumn(ProgressColumn):
    """The coloured count of jobs per state (a TextColumn would drop the colours)."""

    def render(self, task: Task) -> Text:
        states = task.fields.get("states")
        return states if isinstance(states, Text) else Text(str(states or ""))


async def follow_jobs(
    client: TitanClient,
    job_ids: Sequence[str],
    console: Console,
    *,
    title: str = "jobs",
    interval_s: float = 0.25,
    timeout_s: float | None = None,
) -> list[JobInfo]:
    """Show a progress bar (final jobs / all jobs, and the count per state) until every job is final.

    Returns the jobs as they ended, in the order asked.

    Raises:
        WaitTimeout: ``timeout_s`` passed first (with the last known states).
    """
    ids = list(job_ids)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    columns = (
        _OutcomeColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        _StatesColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(title, total=len(ids), states=Text())
        while True:
            wait_s = interval_s if deadline is None else max(0.0, min(interval_s, deadline - time.monotonic()))
            try:
                jobs = await client.wait(ids, timeout_s=wait_s)
                finished = True
            except WaitTimeout as exc:
                jobs, finished = exc.jobs, False
            done = sum(1 for job in jobs if job.state in FINAL_STATES)
            ok = all(job.state in _GOOD_ENDS for job in jobs)
            progress.update(task, completed=done, states=state_summary(jobs), ok=ok)
            if finished:
                return jobs
            if deadline is not None and time.monotonic() >= deadline:
                pending = [job.id for job in jobs if job.state not in FINAL_STATES]
                raise WaitTimeout(pending or ids, jobs)
