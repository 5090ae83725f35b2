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


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` under a progress bar."""
    with progress() as bar:
        yield from bar.track(items, total=total, description=description)


def log(message: str) -> None:
    """A status line on stderr, unless quiet."""
    if not is_quiet():
        console.print(message)
