"""``shardguard demo``: the main job, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._options import DataDir
from .app import app


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the demo's results.")] =
    Path("out/demo"),
    data: DataDir = None,
) -> None:
    """Run ShardGuard end to end on the trained demo model and summarise what it found.

    Example: shardguard demo --out out/demo
    """
    from ..demo import run_demo

    summary = run_demo(out, data)
    print("\nShardGuard demo — summary")
    for line in summary.lines:
        print("  " + line)
