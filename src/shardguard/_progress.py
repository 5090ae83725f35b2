"""Progress bars for long work, quiet on request (``--quiet`` or ``SHARDGUARD_QUIET=1``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

_state = {"quiet": os.environ.get("SHARDGUARD_QUIET", "") not in ("", "0")}
console = Console(stderr=True)


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


def progress() -> Progress:
    """A rich Progress on stderr, disabled when quiet."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=console, disable=is_quiet(), transient=False)


class Steps:
    """Bars of their own, in ``bar``, for items of a sweep that report their steps (an
    eavesdropper's epochs): ``note((key, description, step, most steps, note))``."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[str, TaskID] = {}
        self.done: set[str] = set()

    def note(self, message: tuple[str, str, int, int, str]) -> None:
        key, what, step, total, info = message
        if key in self.done:  # a late note of a finished item
            return
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task(what, total=total, info="")
        self.bar.update(self.tasks[key], completed=step, info=info)

    def finish(self, key: str, steps: int | None) -> None:
        """Item ``key`` is done after ``steps`` steps: its bar ends full, even if it
        stopped before the most steps it was given."""
        self.done.add(key)
        if key in self.tasks and steps is not None:
            self.bar.update(self.tasks[key], total=steps, completed=steps)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` under a progress bar."""
    with progress() as bar:
        yield from bar.track(items, total=total, description=description)


def log(message: str) -> None:
    """A status line on stderr, unless quiet."""
    if not is_quiet():
        console.print(message)
