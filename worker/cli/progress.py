"""Progress bars for long runs (replays, reports): drawn on stderr when it is a terminal, and
nothing at all otherwise (CI logs, pipes, files stay clean)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# (done, total): how far a long step got.
Advance = Callable[[int, int], None]


def _quiet(_done: int, _total: int) -> None:
    return None


def interactive() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int | None = None, enabled: bool | None = None) -> Iterator[Advance]:
    """Yields `advance(done, total)`; a bar on a TTY (or when `enabled`), a no-op otherwise."""
    if not (interactive() if enabled is None else enabled):
        yield _quiet
        return
    # Imported here: every `execworker` start would otherwise pay for it (workers never draw).
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True, force_terminal=enabled or None)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(done: int, of: int) -> None:
            bar.update(task, completed=done, total=of)

        yield advance
