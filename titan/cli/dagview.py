"""Seeing a DAG: its jobs as a rich tree, and a one-line summary of their states. Pure.

The tree runs from the DAG's roots (jobs with no dependency inside the DAG)
down to their dependants. A job with several parents is drawn in full under
the first of them and as a one-line reference (``↑``) under the others, so a
fan-in of a hundred parents is still a hundred lines, not a hundred copies.
Very large DAGs are cut after ``max_lines`` lines with a count of the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

from rich.text import Text
from rich.tree import Tree

from protocol import JobInfo

from .render import STATE_STYLES, current_worker, state_text
from .safe import for_terminal

__all__ = ["STATE_ORDER", "dag_tree", "job_line", "state_summary"]

#: the order states are listed in summaries: finished kinds first, then what is still to come
STATE_ORDER: Final = (
    "COMPLETED",
    "RUNNING",
    "SCHEDULED",
    "PENDING",
    "DELAYED",
    "BLOCKED",
    "FAILED",
    "DEAD",
    "SKIPPED",
    "CANCELLED",
    "STOPPED",
)


def state_summary(jobs: Iterable[JobInfo]) -> Text:
    """``3 COMPLETED · 1 RUNNING · 2 BLOCKED``, coloured by state."""
    counts = Counter(job.state for job in jobs)
    text = Text()
    for state in (*STATE_ORDER, *sorted(set(counts) - set(STATE_ORDER))):
        if counts.get(state):
            if text:
                text.append(" · ", style="dim")
            text.append(f"{counts[state]} {state}", style=STATE_STYLES.get(state, ""))
    return text


def job_line(job: JobInfo, outside: Sequence[str] = ()) -> Text:
    """``ID  STATE  on <worker>  attempt 2/3  error``: one job in a tree or a list."""
    job = for_terminal(job)
    text = Text.assemble((job.id, "bold"), "  ", state_text(job.state))
    worker = current_worker(job)
    if worker:
        text.append(f"  on {worker}", style="dim")  # a worker's name is "[8081]" already
    if job.tries > 1 or job.state in ("DEAD", "FAILED"):
        text.append(f"  attempt {job.tries}/{job.max_attempts}", style="dim")
    if outside:
        text.append(f"  after {', '.join(outside)}", style="dim")
    if job.error and job.state not in ("COMPLETED", "RUNNING", "SCHEDULED"):
        text.append(f"  {job.error}", style="red")
    return text


def dag_tree(
    jobs: Sequence[JobInfo],
    *,
    title: str | None = None,
    max_lines: int = 200,
    max_depth: int = 20,
    focus: str | None = None,
    list_command: str = "titan list --dag",
) -> Tree:
    """The DAG as a tree from its roots to its sinks, each job with its state.

    At most ``max_lines`` jobs and ``max_depth`` levels are drawn (a long chain would otherwise
    indent off any screen); a last line counts the jobs left out. ``focus`` (the job STATUS was
    asked about) is always in the picture: if the tree from the roots would leave it out, the tree
    is drawn from an ancestor of it instead, half the depth above it. ``list_command`` (followed by
    the DAG's id) is the command the notes offer to list every job: the REPL's is ``LIST --dag``.
    """
    jobs = [for_terminal(job) for job in jobs]
    by_id = {job.id: job for job in jobs}
    children: dict[str, list[JobInfo]] = {}
    roots: list[JobInfo] = []
    for job in jobs:
        inner = [dep for dep in job.deps if dep in by_id]
        for dep in dict.fromkeys(inner):
            children.setdefault(dep, []).append(job)
        if not inner:
            roots.append(job)
    dag_id = next((job.dag for job in jobs if job.dag), None)
    label = Text.assemble(
        (title or f"DAG {dag_id or ''}".rstrip(), "bold"), f"  {len(jobs)} job{'s' if len(jobs) != 1 else ''}  "
    )
    label.append_text(state_summary(jobs))
    tree = Tree(label, guide_style="dim")
    drawn = _draw(tree, roots, by_id, children, max_lines, max_depth, list_command)
    if focus is not None and focus in by_id and focus not in drawn:
        anchor, above = focus, 0
        while above < max_depth // 2:
            parents = [dep for dep in by_id[anchor].deps if dep in by_id]
            if not parents:
                break
            anchor, above = parents[0], above + 1
        tree = Tree(label, guide_style="dim")
        above_anchor = _ancestors(anchor, by_id)
        if above_anchor:
            tree.add(
                Text(
                    f"… {_jobs(len(above_anchor))} above {anchor} not shown "
                    f"({list_command} {dag_id or anchor} lists every job)",
                    style="dim",
                )
            )
        drawn = _draw(tree, [by_id[anchor]], by_id, children, max_lines, max_depth, list_command)
        hidden = len(by_id) - len(drawn) - len(above_anchor)  # those above were counted on their own line
    else:
        hidden = len(by_id) - len(drawn)
    if hidden:
        tree.add(Text(f"… {hidden} more {_jobs(hidden)[len(str(hidden)) + 1 :]} not shown", style="dim"))
    return tree


def _jobs(count: int) -> str:
    return f"{count} job{'s' if count != 1 else ''}"


def _ancestors(job_id: str, by_id: dict[str, JobInfo]) -> set[str]:
    """Every job ``job_id`` depends on, directly or not, within the DAG."""
    found: set[str] = set()
    stack = [job_id]
    while stack:
        for dep in by_id[stack.pop()].deps:
            if dep in by_id and dep not in found:
                found.add(dep)
                stack.append(dep)
    return found


def _draw(
    tree: Tree,
    roots: list[JobInfo],
    by_id: dict[str, JobInfo],
    children: dict[str, list[JobInfo]],
    max_lines: int,
    max_depth: int,
    list_command: str = "titan list --dag",
) -> set[str]:
    """Add ``roots`` and what depends on them to ``tree``; returns the ids drawn in full."""
    drawn: set[str] = set()
    lines = 0
    # iterative depth-first walk: (parent node, job, depth); reversed pushes keep submission order
    stack: list[tuple[Tree, JobInfo, int]] = [(tree, job, 1) for job in reversed(roots)]
    while stack and lines < max_lines:
        node, job, depth = stack.pop()
        lines += 1
        if job.id in drawn:
            node.add(Text.assemble(("↑ ", "dim"), (job.id, "dim"), " ", state_text(job.state)))
            continue
        drawn.add(job.id)
        outside = [dep for dep in job.deps if dep not in by_id]
        branch = node.add(job_line(job, outside))
        below = children.get(job.id, [])
        if below and depth >= max_depth:
            branch.add(
                Text(
                    f"… deeper than {max_depth} levels ({list_command} {job.dag or job.id} lists every job)",
                    style="dim",
                )
            )
            continue
        stack.extend((branch, child, depth + 1) for child in reversed(below))
    return drawn
