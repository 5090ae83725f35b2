"""Paths written inside files (plans, campaign and exploration specs) are relative to the
file that names them, so a plan copied with its model file to another directory, or to
the coordinator, still works.

In memory, every such path is usable from the current directory (absolute once read
from a file); ``located`` makes them absolute when a file is read, ``relocated`` makes
them relative to the file's directory when one is written. A path that does not exist
beside the file but does from the current directory is taken from there, as files
written before this rule meant it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

Kind = Literal["model", "platform", "path", "data"]


def model_is_file(ref: str) -> bool:
    """Whether a model reference names a file (``.onnx`` or ``file.py:factory``)."""
    return ref.endswith(".onnx") or (":" in ref and ref.rpartition(":")[0].endswith(".py"))


def _map(value: str, kind: Kind, fn: Callable[[str], str]) -> str:
    if kind == "model":
        if not model_is_file(value):
            return value  # a zoo name
        if value.endswith(".onnx"):
            return fn(value)
        file_part, _, factory = value.rpartition(":")
        return f"{fn(file_part)}:{factory}"
    if kind == "platform":
        from .platform import builtin_platforms

        return value if value in builtin_platforms() else fn(value)
    if kind == "data" and value == "noise":
        return value
    return fn(value)


def absolute(path: str, base: Path) -> str:
    """``path`` as written in a file in ``base``, made absolute (see the module docstring)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    beside = os.path.normpath(os.path.abspath(base / p))
    if not os.path.exists(beside) and p.exists():  # written before paths were file-relative
        return os.path.abspath(p)
    return beside


def relative(path: str, base: Path) -> str:
    """``path`` (absolute or relative to the current directory) relative to ``base``."""
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    except ValueError:  # another drive: keep it absolute
        return os.path.abspath(path)


def located(data: dict[str, Any], base: Path, fields: dict[str, Kind]) -> dict[str, Any]:
    """A copy of ``data`` (as read from a file in ``base``) with its path ``fields``
    absolute; a dotted field (``model.ref``) is looked for in a nested mapping."""
    return _apply(data, fields, lambda v, k: _map(v, k, lambda p: absolute(p, base)))


def relocated(data: dict[str, Any], base: Path, fields: dict[str, Kind]) -> dict[str, Any]:
    """A copy of ``data`` with its path ``fields`` relative to ``base`` (to write there)."""
    return _apply(data, fields, lambda v, k: _map(v, k, lambda p: relative(p, base)))


def _apply(data: dict[str, Any], fields: dict[str, Kind],
           fn: Callable[[str, Kind], str]) -> dict[str, Any]:
    out = dict(data)
    for dotted, kind in fields.items():
        head, _, rest = dotted.partition(".")
        if rest:
            if isinstance(out.get(head), dict):
                out[head] = _apply(out[head], {rest: kind}, fn)
        elif isinstance(out.get(head), str):
            out[head] = fn(out[head], kind)
    return out
