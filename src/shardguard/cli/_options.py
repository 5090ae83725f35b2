"""Options shared by several commands, and small parsers for option values."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError

DataDir = Annotated[Path | None, typer.Option(
    "--data", envvar="SHARDGUARD_DATA", show_envvar=True,
    help="Directory holding the four Fashion-MNIST IDX .gz files "
         "(default: /usr/share/datasets/fashion-mnist).")]
Weights = Annotated[Path | None, typer.Option(
    "--weights", "-w", help="State-dict file to load (default: the shipped checkpoint, if any).")]
Ray = Annotated[str | None, typer.Option(
    "--ray", metavar="ADDRESS",
    help="Run on a Ray cluster (HOST:PORT, ray://HOST:PORT, auto) or 'local' to start one "
         "here; needs shardguard\\[ray]. Default: local processes.")]
Force = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output files.")]


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,28,28"`` → ``(1, 28, 28)``; one clear error otherwise."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(f"--input-shape {text!r}: expected integers like 3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"--input-shape {text!r}: every dimension must be positive")
    return shape


def refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise ConfigError(f"{path}: already exists (use --force to overwrite)")
