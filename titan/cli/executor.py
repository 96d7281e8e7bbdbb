"""Runs parsed REPL commands against the master and prints what they return.

The REPL owns the loop, the prompt and error display; this module owns what
each command does. Errors are raised, not printed, so the REPL can show each
as one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from rich.console import Console
from rich.text import Text

from protocol import JobInfo
from titan.client import TitanClient

from .dagref import resolve
from .dagview import dag_tree
from .inline import attach_inline
from .link import MasterLink
from .listing import DEFAULT_LIMIT, list_some
from .logview import LogPiece, ended_badly, log_note, read_log
from .output import print_table
from .parse import (
    CancelCommand,
    CancelDagCommand,
    Command,
    DlqCommand,
    ExitCommand,
    HelpCommand,
    ListCommand,
    LogsCommand,
    RetryCommand,
    StatsCommand,
    StatusCommand,
    SubmitCommand,
    SubmitDagCommand,
    WatchCommand,
    WorkersCommand,
)
from .progress import follow_jobs
from .render import help_view, job_detail, job_table, state_text, stats_view, workers_table
from .safe import for_terminal, log_for_terminal
from .scaling import RetireCommand, SpawnCommand, StopCommand, run_scaling

__all__ = ["CancelledDag", "CommandRunner", "cancel_dag"]

_IDS_SHOWN: Final = 12  # a DAG's job ids named when it is accepted (STATUS <dag id> shows them all)


@dataclass(frozen=True, slots=True)
class CancelledDag:
    """A DAG after CANCEL_DAG: its id, every job of it, and how many of them are CANCELLED."""

    dag: str | None
    jobs: list[JobInfo]
    cancelled: int

    @property
    def summary(self) -> str:
        return f"DAG {self.dag}: {self.cancelled} of {len(self.jobs)} jobs are CANCELLED"


async def cancel_dag(client: TitanClient, ref: str) -> CancelledDag:
    """Cancel every unfinished job of the DAG ``ref`` names (a DAG id or one of its jobs)."""
    job = await client.cancel(ref, dag=True)
    jobs = await client.dag_jobs(job.dag or ref)
    return CancelledDag(job.dag, jobs, sum(1 for member in jobs if member.state == "CANCELLED"))


class CommandRunner:
    """Executes one :data:`Command` at a time, printing to ``console``.

    ``known_ids`` collects every job id seen (submitted, listed, shown) for the
    REPL's completer.
    """

    def __init__(self, link: MasterLink, console: Console, known_ids: set[str] | None = None) -> None:
        self.link = link
        self.console = console
        self.known_ids: set[str] = set() if known_ids is None else known_ids

    def _remember(self, jobs: Iterable[JobInfo]) -> None:
        self.known_ids.update(job.id for job in jobs)

    async def run(self, command: Command) -> bool:
        """Execute ``command``; False means the REPL should end."""
        match command:
            case ExitCommand():
                return False
            case HelpCommand(topic=topic):
                self.console.print(help_view(topic))
            case LogsCommand(job_id=job_id, follow=follow, attempt=attempt):
                await self._logs(job_id, follow, attempt)
            case WatchCommand(job_id=job_id):
                await self._watch(job_id, await self.link.client())
            case ListCommand() | DlqCommand() | StatusCommand():
                await self._show_jobs(command, await self.link.client())
            case _:
                await self._change(command, await self.link.client())
        return True

    async def _show_jobs(self, command: ListCommand | DlqCommand | StatusCommand, client: TitanClient) -> None:
        match command:
            case StatusCommand(job_id=job_id):
                subject = await resolve(client, job_id)
                self._remember(subject.members)
                if subject.job is not None:
                    self.console.print(job_detail(subject.job))
                if subject.dag:
                    focus = subject.job.id if subject.job is not None else None
                    self.console.print(dag_tree(subject.members, focus=focus, list_command="LIST --dag"))
            case ListCommand(state=state, dag=dag):
                listing = await list_some(client, state, DEFAULT_LIMIT, dag=dag)
                self._remember(listing.jobs)
                print_table(self.console, job_table(listing.jobs))
                note = listing.note(DEFAULT_LIMIT, dag=dag is not None, flag=False)
                if note:
                    self.console.print(note, style="dim", markup=False)
            case DlqCommand():
                jobs = await client.list_jobs("DEAD")
                self._remember(jobs)
                print_table(self.console, job_table(jobs, title="Dead letter queue"))

    async def _change(self, command: Command, client: TitanClient) -> None:
        console = self.console
        match command:
            case SubmitCommand(spec=spec, warning=warning):
                if warning:
                    console.print(Text(f"warning: {warning}", style="yellow"))
                submitted = await client.submit_info(attach_inline(spec))
                self.known_ids.add(submitted.job_id)
                console.print(Text.assemble("submitted ", (submitted.job_id, "bold green")))
                if submitted.warning:
                    console.print(Text(f"warning: {submitted.warning}", style="yellow"))
            case SubmitDagCommand(specs=specs):
                reply = await client.submit_dag_info([attach_inline(spec) for spec in specs])
                ids = reply.job_ids
                self.known_ids.update([*ids, reply.dag_id])
                shown = ", ".join(ids[:_IDS_SHOWN]) + (
                    f" and {len(ids) - _IDS_SHOWN} more" if len(ids) > _IDS_SHOWN else ""
                )
                console.print(
                    Text.assemble(
                        f"DAG {reply.dag_id} accepted, {len(ids)} job{'s' if len(ids) != 1 else ''}: ",
                        (shown, "bold green"),
                    )
                )
                if reply.warning:
                    console.print(Text(f"warning: {reply.warning}", style="yellow"))
            case StatsCommand():
                console.print(stats_view(await client.stats()))
            case WorkersCommand():
                print_table(console, workers_table((await client.stats()).workers))
            case CancelCommand(job_id=job_id):
                job = await client.cancel(job_id)
                console.print(Text.assemble(f"{job.id} is now ", state_text(job.state)))
            case CancelDagCommand(ref=ref):
                cancelled = await cancel_dag(client, ref)
                console.print(cancelled.summary)
                console.print(dag_tree(cancelled.jobs, list_command="LIST --dag"))
            case RetryCommand(job_id=job_id):
                job = await client.retry(job_id)
                console.print(Text.assemble(f"{job.id} requeued: ", state_text(job.state)))
            case StopCommand() | SpawnCommand() | RetireCommand():
                await run_scaling(command, client, console)

    async def _watch(self, job_id: str, client: TitanClient) -> None:
        """A live progress bar over the job, or over its whole DAG, until all are final."""
        subject = await resolve(client, job_id)
        self._remember(subject.members)
        title = f"DAG {subject.dag}" if subject.dag else job_id
        jobs = await follow_jobs(client, [member.id for member in subject.members], self.console, title=title)
        if subject.dag:
            self.console.print(dag_tree(jobs, list_command="LIST --dag"))
        else:
            print_table(self.console, job_table(jobs))

    async def _logs(self, job_id: str, follow: bool, attempt: int | None = None) -> None:
        def show(piece: LogPiece) -> None:
            if piece.new_attempt is not None:
                self.console.print(Text(f"--- attempt {piece.new_attempt} ---", style="dim"))
            if piece.note:
                self.console.print(Text(piece.note, style="yellow"))
            text = Text(log_for_terminal(piece.data.decode("utf-8", errors="replace")))
            if piece.stream == "stderr":
                text.stylize("red")
            self.console.print(text, end="", soft_wrap=True, highlight=False)

        client = await self.link.client()
        job = await read_log(client, job_id, follow=follow, show=show, attempt=attempt, reread=f"LOGS {job_id}")
        note = log_note(job, attempt, follow=follow)
        if note:
            self.console.print(Text(note, style="yellow"))
        if ended_badly(job, follow=follow, attempt=attempt):
            job = for_terminal(job)
            ended = Text.assemble(("✗ ", "bold red"), f"{job.id} ended ", state_text(job.state))
            if job.error:
                ended.append(f": {job.error}", style="dim")
            self.console.print(ended)
