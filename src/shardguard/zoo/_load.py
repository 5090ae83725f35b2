"""Resolve a model reference — a zoo name, ``file.py:factory`` or ``file.onnx`` — to a module."""

from __future__ import annotations

import difflib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data import ClassList, Preprocess
from ..errors import ModelError
from . import checkpoints
from ._registry import ZOO
from .checkpoints import CheckpointMeta
from .onnx_import import load_onnx


@dataclass
class LoadedModel:
    """A model ready for inference, with where it came from."""

    ref: str  # the reference it was loaded from, as the user wrote it
    module: nn.Module
    input_shape: tuple[int, ...] | None  # (C, H, W), when known
    weights: Path | None
    meta: CheckpointMeta | None
    preprocess: Preprocess | None = None  # declared by the zoo entry; None: not declared
    classes: ClassList | None = None  # names (and WordNet ids) of its outputs, when known

    @property
    def name(self) -> str:
        return Path(self.ref.split(":")[0]).stem if self.ref not in ZOO else self.ref


def build(name: str, *, seed: int = 0) -> nn.Module:
    """A fresh zoo model with seeded random weights."""
    if name not in ZOO:
        close = difflib.get_close_matches(name, ZOO, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ModelError(f"unknown model {name!r}{hint} (known: {', '.join(ZOO)})")
    torch.manual_seed(seed)
    return ZOO[name].factory()


def _from_file(ref: str) -> nn.Module:
    file_part, _, factory_name = ref.rpartition(":")
    path = Path(file_part)
    if not factory_name.isidentifier():
        raise ModelError(f"{ref}: expected path/to/file.py:factory")
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    spec = importlib.util.spec_from_file_location(f"shardguard_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ModelError(f"{path}: cannot be imported as a Python module")
    user = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = user
    try:
        spec.loader.exec_module(user)
    except Exception as exc:
        raise ModelError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from exc
    factory = getattr(user, factory_name, None)
    if not callable(factory):
        raise ModelError(f"{path}: has no function {factory_name!r}")
    try:
        module = factory()
    except Exception as exc:
        raise ModelError(f"{ref}: factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise ModelError(f"{ref}: factory returned {type(module).__name__}, not an nn.Module")
    return module


def backbone_state(name: str) -> dict[str, torch.Tensor]:
    """The pretrained weights of zoo model ``name``, which a head checkpoint builds on."""
    spec = ZOO.get(name)
    if spec is None or spec.pretrained is None:
        raise ModelError(f"{name}: not a zoo model with pretrained weights (a head's backbone)")
    return checkpoints.read_state(spec.pretrained())


def load_model(ref: str, *, weights: str | Path | None = None, pretrained: bool = True,
               input_shape: tuple[int, ...] | None = None) -> LoadedModel:
    """Load a model by reference, in eval mode.

    ``ref`` is a zoo name (trained weights are loaded when shipped and ``pretrained``),
    ``path/to/file.py:factory`` (a function returning an ``nn.Module``) or ``path.onnx``.
    ``weights`` is a state-dict file to load instead of the shipped one. ``input_shape``
    (C, H, W) is needed for an ``.onnx`` file whose image size is symbolic.
    """
    preprocess, classes = None, None
    if ref in ZOO:
        module = build(ref)
        input_shape = ZOO[ref].input_shape
        preprocess, classes = ZOO[ref].preprocess, ZOO[ref].classes
        if weights is None and pretrained:
            spec = ZOO[ref]
            weights = spec.pretrained() if spec.pretrained else checkpoints.shipped(ref)
    elif ref.endswith(".onnx"):
        module, input_shape = load_onnx(Path(ref), input_shape)
    elif ":" in ref and ref.rpartition(":")[0].endswith(".py"):
        module = _from_file(ref)
    else:
        build(ref)  # raises the unknown-name error with a suggestion
        raise AssertionError("unreachable")
    meta = None
    path = Path(weights) if weights is not None else None
    if path is not None:
        head = checkpoints.read_meta(path)
        base = backbone_state(head.backbone) if head and head.backbone else None
        meta = checkpoints.load_state(module, path, label=ref, base=base)
    elif ref in ZOO and ZOO[ref].backbone and pretrained:
        raise ModelError(f"{ref}: its head is not shipped (train it: shardguard train {ref})")
    module.eval()
    return LoadedModel(ref, module, input_shape, path, meta, preprocess, classes)
