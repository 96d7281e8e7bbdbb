"""LIST with a bound that says when it cut: the newest N jobs, and whether more matched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from protocol import JobInfo
from titan.client import TitanClient

__all__ = ["DEFAULT_LIMIT", "Listing", "list_some"]

DEFAULT_LIMIT: Final = 1000


@dataclass(frozen=True)
class Listing:
    jobs: list[JobInfo]
    more: bool  # jobs beyond ``limit`` matched too

    def note(self, limit: int, *, dag: bool, flag: bool) -> str:
        """One line for a listing that was cut, or "" ("--limit N" is offered where the command has it)."""
        if not self.more:
            return ""
        which = "the first submitted" if dag else "newest first"
        hint = "raise --limit to see them" if flag else "`titan list --limit N` shows them"
        return f"more jobs match than the {limit} shown ({which}): {hint}"


async def list_some(client: TitanClient, state: str | None, limit: int, dag: str | None = None) -> Listing:
    """Up to ``limit`` jobs (most recent first; a DAG's in submission order), asking for one more
    than shown so that a cut listing can say so."""
    jobs = await client.list_jobs(state, limit=limit + 1, dag=dag)
    return Listing(jobs[:limit], len(jobs) > limit)
