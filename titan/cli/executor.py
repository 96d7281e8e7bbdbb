"""Runs parsed REPL commands against the master and prints what they return.

The REPL owns the loop, the prompt and error display; this module owns what
each command does. Errors are raised, not printed, so the REPL can show each
as one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from rich.console import Console
from rich.text import Text

from protocol import JobInfo
from titan.client import TitanClient
from titan.errors import RemoteError, TitanError

from .link import MasterLink
from .parse import (
    CancelCommand,
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
    WorkersCommand,
)
from .render import help_view, job_detail, job_table, state_text, stats_view, workers_table

__all__ = ["CommandRunner", "LogsUnavailable", "logs_refusal"]

# codes with which a master that does not (yet) serve logs refuses LOGS_SUBSCRIBE
_NO_LOGS_CODES: Final = frozenset({"UNKNOWN_OPCODE", "UNEXPECTED", "NOT_IMPLEMENTED", "UNSUPPORTED"})


class LogsUnavailable(TitanError):
    """The master does not serve job logs."""

    code = "LOGS_UNAVAILABLE"


def logs_refusal(exc: RemoteError, address: str) -> TitanError:
    """What to report when LOGS_SUBSCRIBE is refused: "not available" if the master lacks it."""
    if exc.code in _NO_LOGS_CODES:
        return LogsUnavailable(f"LOGS is not available yet: the master at {address} does not serve logs")
    return exc


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
            case LogsCommand(job_id=job_id, follow=follow):
                await self._logs(job_id, follow)
            case ListCommand() | DlqCommand() | StatusCommand():
                await self._show_jobs(command, await self.link.client())
            case _:
                await self._change(command, await self.link.client())
        return True

    async def _show_jobs(self, command: ListCommand | DlqCommand | StatusCommand, client: TitanClient) -> None:
        match command:
            case StatusCommand(job_id=job_id):
                job = await client.status(job_id)
                self._remember([job])
                self.console.print(job_detail(job))
            case ListCommand(state=state):
                jobs = await client.list_jobs(state)
                self._remember(jobs)
                self.console.print(job_table(jobs))
            case DlqCommand():
                jobs = await client.list_jobs("DEAD")
                self._remember(jobs)
                self.console.print(job_table(jobs, title="Dead letter queue"))

    async def _change(self, command: Command, client: TitanClient) -> None:
        console = self.console
        match command:
            case SubmitCommand(spec=spec):
                job_id = await client.submit(spec)
                self.known_ids.add(job_id)
                console.print(Text.assemble("submitted ", (job_id, "bold green")))
            case SubmitDagCommand(specs=specs):
                ids = await client.submit_dag(specs)
                self.known_ids.update(ids)
                console.print(Text.assemble(f"DAG accepted, {len(ids)} jobs: ", (", ".join(ids), "bold green")))
            case StatsCommand():
                console.print(stats_view(await client.stats()))
            case WorkersCommand():
                console.print(workers_table((await client.stats()).workers))
            case CancelCommand(job_id=job_id):
                job = await client.cancel(job_id)
                console.print(Text.assemble(f"{job.id} is now ", state_text(job.state)))
            case RetryCommand(job_id=job_id):
                job = await client.retry(job_id)
                console.print(Text.assemble(f"{job.id} requeued: ", state_text(job.state)))

    async def _logs(self, job_id: str, follow: bool) -> None:
        client = await self.link.client()
        try:
            async with client.logs(job_id, follow=follow) as stream:
                async for chunk in stream:
                    text = Text(chunk.data.decode("utf-8", errors="replace"))
                    if chunk.stream == "stderr":
                        text.stylize("red")
                    self.console.print(text, end="", soft_wrap=True, highlight=False)
        except RemoteError as exc:
            raise logs_refusal(exc, client.address) from None
