"""Options shared by several commands, and small parsers for option values."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError

DataDir = Annotated[str | None, typer.Option(
    "--data", metavar="PATH",
    help="The images: a directory of IDX files, an image folder (one subfolder per class; "
         "ImageNet's WordNet-id folders map to the model's classes), a .npz file (x, optional "
         "y), or 'noise' (uniform random inputs). Default: $SHARDGUARD_DATA, else "
         "/usr/share/datasets/fashion-mnist.")]
InputShape = Annotated[str | None, typer.Option(
    "--input-shape", metavar="C,H,W", help="C,H,W of one input (default: the zoo model's).")]
PreprocessOption = Annotated[str | None, typer.Option(
    "--preprocess", metavar="PRESET|FILE|{...}",
    help="How images become the model's input: a preset (imagenet, fashion-mnist), a YAML "
         "file or an inline mapping, e.g. '{resize: 256, crop: 224, channels: 3, mean: "
         "[0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}' (default: the zoo model's; "
         "else its input size and channels, values in [0, 1]).")]
Classes = Annotated[Path | None, typer.Option(
    "--classes", metavar="FILE",
    help="The model's classes, one a line in index order: NAME or WNID NAME (labels an image "
         "folder whose subfolders are WordNet ids or class names; default: the zoo's).")]
Weights = Annotated[Path | None, typer.Option(
    "--weights", "-w", help="State-dict file to load (default: the shipped checkpoint, if any).")]
Ray = Annotated[str | None, typer.Option(
    "--ray", metavar="ADDRESS",
    help="Run on a Ray cluster (HOST:PORT, ray://HOST:PORT, auto) or 'local' to start one "
         "here; needs shardguard\\[ray]. Default: local processes.")]
CalibrationImages = Annotated[int, typer.Option(
    "--calibration-images", metavar="N",
    help="An int8 plan's quantization is calibrated on the first N training images of the "
         "data (the same N gives every party the same stages).")]
Force = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output files.")]


def count(option: str, value: int | None, *, least: int = 1) -> None:
    """Refuse a count below ``least`` (``-n 0``, ``--epochs -1``) in one line."""
    if value is not None and value < least:
        raise ConfigError(f"{option} {value}: must be at least {least}")


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
