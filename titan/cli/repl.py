"""The ``titan>`` prompt: prompt_toolkit for input, rich for output.

The prompt runs with ``prompt_async`` under ``patch_stdout`` so that output
printed while the prompt is shown (the toolbar refresher, a followed log) does
not tear the input line. A background task keeps a stats snapshot for the
bottom toolbar fresh; commands never wait for it. Every ``TitanError`` or
``ProtocolError`` a command raises prints as one red line; a traceback only
with ``debug``. Ctrl-C at the prompt clears the line; Ctrl-C while a command
runs cancels that command only; Ctrl-D or EXIT leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, NestedCompleter, WordCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import HTML
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import patch_stdout
from rich.console import Console
from rich.text import Text

from protocol import ProtocolError, StatsReply
from titan.config import ClientSettings
from titan.errors import TitanError, UsageError
from titan.jobs import DAG_ID_PREFIX

from .executor import CommandRunner
from .link import MasterLink
from .output import stdout_console
from .parse import JOB_STATES, parse_line
from .render import HELP_ENTRIES, is_active
from .safe import error_line

__all__ = ["DEFAULT_HISTORY", "CommandCompleter", "JobIdCompleter", "Repl", "build_completer", "open_history"]

DEFAULT_HISTORY: Final = Path("~/.titan_history")
_JOB_TYPES: Final = ("RUN|", "SHELL|", "DEPLOY|")


def open_history(path: Path | None) -> History:
    """A file history at ``path``, or an in-memory one if it cannot be written."""
    if path is None:
        return InMemoryHistory()
    path = path.expanduser()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError:
        return InMemoryHistory()
    return FileHistory(str(path))


class JobIdCompleter(Completer):
    """Completes the job ids the session has seen (from SUBMIT, LIST, STATUS...), and DAG ids where taken."""

    def __init__(self, ids: set[str], *, dags: bool = True) -> None:
        self.ids = ids
        self.dags = dags

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        word = document.get_word_before_cursor(WORD=True)
        for job_id in sorted(self.ids):
            if not self.dags and job_id.startswith(DAG_ID_PREFIX):
                continue
            if job_id.lower().startswith(word.lower()):
                yield Completion(job_id, start_position=-len(word))


class ThenOptions(Completer):
    """``first`` for a command's one positional argument; the command's options once it is typed
    (or when the word begun starts with ``-``).

    ``takes``: options followed by an argument, with its completer (None: nothing to offer, a number).
    """

    def __init__(self, first: Completer, options: Sequence[str], *, takes: Mapping[str, Completer | None]) -> None:
        self.first = first
        self.options = list(options)
        self.takes = dict(takes)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        words = text.split()
        done = words if not text or text[-1].isspace() else words[:-1]  # the last word may be in progress
        word = document.get_word_before_cursor(WORD=True)
        if done and done[-1] in self.takes:
            argument = self.takes[done[-1]]
            if argument is not None:
                yield from argument.get_completions(document, complete_event)
            return
        positional = [
            w for i, w in enumerate(done) if not w.startswith("-") and (i == 0 or done[i - 1] not in self.takes)
        ]
        if not positional and not word.startswith("-"):
            yield from self.first.get_completions(document, complete_event)
        if positional or word.startswith("-"):
            for option in self.options:
                if option not in done and option.startswith(word):
                    yield Completion(option, start_position=-len(word))


def job_types(perm_files: Path = Path("perm_files")) -> list[str]:
    """RUN, SHELL, DEPLOY, and the handler types of the ``perm_files/handlers/`` here (``titan up``'s)."""
    try:
        handlers = sorted(path.stem.upper() for path in (perm_files / "handlers").glob("*.py"))
    except OSError:
        handlers = []
    return [
        *_JOB_TYPES,
        *(f"{name}|" for name in handlers if name.isidentifier() and name not in ("RUN", "SHELL", "DEPLOY")),
    ]


class CommandCompleter(Completer):
    """A :class:`NestedCompleter` whose command word is case-insensitive, like the commands.

    ``NestedCompleter`` matches the first word exactly; the line is handed to it
    with that word upper-cased so ``status TSK`` completes like ``STATUS TSK``.
    """

    def __init__(self, nested: NestedCompleter) -> None:
        self.nested = nested

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        stripped = text.lstrip()
        if " " in stripped:
            first = stripped.split()[0]
            if len(first.upper()) == len(first):
                text = text.replace(first, first.upper(), 1)
                document = Document(text, cursor_position=len(text))
        elif stripped.upper() in self.nested.options:
            # a whole command word: Tab adds the space after it, as a shell does (it used to add
            # nothing, and the id typed next ran into the word: 'STATUSTSK-…'); the word itself
            # is no completion of itself, or Tab would find nothing in common to insert
            yield Completion(stripped.upper() + " ", start_position=-len(stripped))
            word = stripped.upper()
            yield from (c for c in self.nested.get_completions(document, complete_event) if c.text != word)
            return
        yield from self.nested.get_completions(document, complete_event)


def build_completer(ids: set[str]) -> CommandCompleter:
    """Command words, then job ids, states or help topics where they fit."""
    job_ids = JobIdCompleter(ids)
    jobs_only = JobIdCompleter(ids, dags=False)  # commands about one job: a DAG id is refused there
    states = WordCompleter(list(JOB_STATES), ignore_case=True)
    tree: dict[str, Completer | None] = {name: None for name, _, _ in HELP_ENTRIES}
    tree.update(
        {
            "SUBMIT": WordCompleter(job_types(), ignore_case=True, WORD=True),
            "STATUS": job_ids,
            "LOGS": ThenOptions(jobs_only, ["-f", "--attempt"], takes={"--attempt": None}),
            "CANCEL": jobs_only,
            "CANCEL_DAG": job_ids,
            "WATCH": job_ids,
            "RETRY": jobs_only,
            "LIST": ThenOptions(states, ["--dag"], takes={"--dag": job_ids}),
            "STOP": jobs_only,
            "HELP": WordCompleter([name for name, _, _ in HELP_ENTRIES], ignore_case=True),
        }
    )
    return CommandCompleter(NestedCompleter(tree, ignore_case=True))


@contextlib.contextmanager
def _interrupt_cancels(task: asyncio.Future[bool]) -> Iterator[None]:
    """While a command runs, SIGINT cancels it instead of ending the REPL."""
    loop = asyncio.get_running_loop()
    try:
        previous = signal.getsignal(signal.SIGINT)
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or no signals here
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class Repl:
    """The interactive ``titan>`` session against one master."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        console: Console | None = None,
        debug: bool = False,
        history_path: Path | None = DEFAULT_HISTORY,
        input: Input | None = None,
        output: Output | None = None,
        refresh_interval_s: float = 2.0,
        title: str = "Titan",
    ) -> None:
        self.link = MasterLink(settings)
        self.console = console or stdout_console()
        self.debug = debug
        self.known_ids: set[str] = set()
        self.runner = CommandRunner(self.link, self.console, self.known_ids)
        self.refresh_interval_s = refresh_interval_s
        self.title = title
        self.snapshot: StatsReply | None = None
        self.failures = 0  # lines that ended in an error
        self._history_path = history_path
        self._input = input
        self._output = output
        # made when a prompt is shown: on a stdin that is no terminal, prompt_toolkit only warns
        self.session: PromptSession[str] | None = None

    def _new_session(self) -> PromptSession[str]:
        return PromptSession(
            history=open_history(self._history_path),
            completer=build_completer(self.known_ids),
            complete_while_typing=False,
            bottom_toolbar=self.toolbar,
            input=self._input,
            output=self._output,
        )

    # ------------------------------------------------------------------ toolbar
    def toolbar(self) -> HTML:
        """One line of cluster health from the cached snapshot."""
        address = self.link.address
        stats = self.snapshot
        if stats is None or not self.link.connected:
            return HTML(f"<b>{self.title}</b> {address}  <style bg='ansired'> disconnected </style>")
        workers = sum(1 for worker in stats.workers if is_active(worker))
        return HTML(
            f"<b>{self.title}</b> {address}  workers <b>{workers}</b>  queued <b>{stats.queued}</b>"
            f"  running <b>{stats.running}</b>  delayed {stats.delayed}  blocked {stats.blocked}"
            f"  dead <b>{stats.dead}</b>"
        )

    async def refresh_once(self) -> None:
        """Fetch a new snapshot; on failure the toolbar shows ``disconnected``."""
        try:
            client = await self.link.client()
            self.snapshot = await client.stats()
        except (TitanError, ProtocolError):
            self.snapshot = None
        if self.session is not None and self.session.app.is_running:
            self.session.app.invalidate()

    async def _refresh_forever(self) -> None:
        while True:
            await self.refresh_once()
            await asyncio.sleep(self.refresh_interval_s)

    # ------------------------------------------------------------------ output
    def error(self, exc: BaseException) -> None:
        """One red line (plus the traceback with ``debug``)."""
        if self.debug:
            self.console.print(Text("".join(traceback.format_exception(exc)), style="dim"))
        self.failures += 1
        self.console.print(Text(f"error: {error_line(exc)}", style="bold red"), soft_wrap=True)

    # ------------------------------------------------------------------ loop
    async def execute(self, line: str) -> bool:
        """Run one line; False means leave."""
        try:
            command = parse_line(line)
        except UsageError as exc:
            self.error(exc)
            return True
        task = asyncio.ensure_future(self.runner.run(command))
        with _interrupt_cancels(task):
            try:
                return await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                self.console.print(Text("interrupted", style="yellow"))
            except BrokenPipeError:
                raise  # whoever read our output left (`titan < script | head`): nothing more to show anyone
            except (TitanError, ProtocolError) as exc:
                self.error(exc)
            except Exception as exc:  # a bug must not end the session; show it in one line
                self.error(exc)
        return True

    async def run(self) -> int:
        """Prompt until EXIT or Ctrl-D; returns the exit status.

        With no input given and a stdin that is not a terminal (``titan < commands.txt``,
        a pipe), the lines are run as a script instead: see :meth:`run_script`.
        """
        if self._input is None and (sys.stdin is None or not sys.stdin.isatty()):
            return await self.run_script(sys.stdin or io.StringIO())  # no stdin at all: nothing to run
        self.session = self._new_session()
        self.console.print(
            Text.assemble((self.title, "bold"), f" · master {self.link.address} · HELP lists the commands, EXIT leaves")
        )
        refresher = asyncio.create_task(self._refresh_forever(), name="titan-toolbar")
        try:
            with patch_stdout(raw=True):
                while True:
                    try:
                        line = await self.session.prompt_async(HTML("<b>titan&gt;</b> "))
                    except KeyboardInterrupt:
                        continue
                    except EOFError:
                        break
                    if line.strip() and not await self.execute(line):
                        break
        finally:
            refresher.cancel()
            try:
                # wait() never raises the refresher's own CancelledError, only ours
                await asyncio.wait([refresher])
            finally:
                await self.link.aclose()
        return 0

    async def run_script(self, stream: TextIO) -> int:
        """Run ``stream``'s lines as commands, without prompt or toolbar, until EOF or EXIT.

        Blank lines and lines starting with ``#`` are skipped; an error is printed
        and the script goes on. Returns 1 if any line failed, else 0.
        """
        lines = _lines_of(stream)
        try:
            while True:
                line = await lines.get()
                if not line:
                    break
                if line.strip() and not line.lstrip().startswith("#") and not await self.execute(line.rstrip("\n")):
                    break
        finally:
            await self.link.aclose()
        return 1 if self.failures else 0


def _lines_of(stream: TextIO) -> asyncio.Queue[str]:
    """``stream``'s lines, read by a daemon thread; an empty string ends them.

    Not the loop's executor: a read blocked on a pipe that never ends would keep
    ``asyncio.run`` from returning at shutdown (it joins the executor's threads),
    so ``titan up < fifo`` would outlive its SIGTERM. A daemon thread is left behind.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def pump() -> None:
        try:
            for line in iter(stream.readline, ""):
                loop.call_soon_threadsafe(queue.put_nowait, line)
        except (OSError, ValueError, RuntimeError):  # a closed stream, or the loop is gone
            pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, "")

    threading.Thread(target=pump, name="titan-stdin", daemon=True).start()
    return queue
