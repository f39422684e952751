"""Progress bars and log lines (rich), on stderr so stdout stays for tables."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class Reporter:
    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.console = console or Console(stderr=True)

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message, highlight=False)

    def warn(self, message: str) -> None:
        """One ``warning:`` line, shown even with progress output off (``--quiet``)."""
        self.console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)

    @contextlib.contextmanager
    def task(self, total: int, description: str) -> Iterator[Callable[..., None]]:
        """Yield ``advance(n=1, info="")``; a transient bar when enabled, a no-op otherwise."""
        if not self.enabled or not self.console.is_terminal:
            yield lambda n=1, info="": None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        with Progress(*columns, console=self.console, transient=True) as progress:
            tid = progress.add_task(description, total=total, info="")

            def advance(n: int = 1, info: str = "") -> None:
                progress.update(tid, advance=n, info=info)

            yield advance

    def progress_factory(self):
        """For long one-off jobs (dataset generation): ``with factory(total, label) as advance``.

        Unlike the per-epoch bars, these also say what they are doing when the output is
        not a terminal, so a long generation is never silent.
        """
        @contextlib.contextmanager
        def factory(total: int, description: str):
            self.log(f"{description} ({total} items)")
            with self.task(total, description) as advance:
                yield advance

        return factory
