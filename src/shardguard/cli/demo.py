"""``shardguard demo``: the main job, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer

from ._options import DataDir
from .app import app


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the demo's results.")] =
    Path("out/demo"),
    data: DataDir = None,
    model: Annotated[str, typer.Option(
        "--model", "-m", help="A zoo model: resnet-small (28×28, about two minutes) or "
        "efficientnet-lite0-fmnist (224×224, fewer images per step).")] = "resnet-small",
    platform: Annotated[str | None, typer.Option(
        "--platform", "-p", help="Built-in platform name or platform YAML (default: "
        "rpi4x4-ethernet; rpi4x4-12mb for a 224×224 model, whose boards force a split).")]
    = None,
    network: Annotated[str, typer.Option(
        help="Where step 5's workers talk: loopback, or namespaces (root; see run "
             "--network).")] = "loopback",
) -> None:
    """Run ShardGuard end to end on a trained model and summarise what it found.

    Example: shardguard demo --out out/demo

    Example: shardguard demo --model efficientnet-lite0-fmnist --out out/demo-224
    """
    from ..demo import run_demo
    from .runtime import _check_workers

    _check_workers(network, spawn_local=True, workers=None)
    summary = run_demo(out, data, model=model, platform=platform, network=cast(Any, network))
    print("\nShardGuard demo — summary")
    for line in summary.lines:
        print("  " + line)
