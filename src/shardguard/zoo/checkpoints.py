"""Versioned checkpoints: a state dict (``.pt``) beside its metadata (``.json``).

The metadata records the dataset, test accuracy, seed, epochs, the command
that produced the weights and the file's sha256, which is checked on load.
Weights are only ever read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import IntegrityError, ModelError

WEIGHTS_DIR = Path(__file__).parent / "weights"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CheckpointMeta:
    """What a ``.json`` beside a checkpoint holds."""

    model: str
    dataset: str
    test_accuracy: float
    seed: int
    epochs: int
    sha256: str
    command: str
    torch_version: str
    params: int
    failout: float = 0.0
    format_version: int = FORMAT_VERSION
    #: A head checkpoint: every other layer's weights are this zoo model's pretrained ones.
    backbone: str | None = None
    #: Accuracy on the first N test images, keyed by N: checks ``eval -n N`` can reproduce
    #: when the whole test set is too slow to run (224×224 models on a laptop).
    accuracy_on_first: dict[str, float] = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped(name: str) -> Path | None:
    """The shipped checkpoint of zoo model ``name``, if there is one."""
    path = WEIGHTS_DIR / f"{name}.pt"
    return path if path.is_file() else None


def read_meta(weights: Path) -> CheckpointMeta | None:
    meta_path = weights.with_suffix(".json")
    if not meta_path.is_file():
        return None
    try:
        return CheckpointMeta(**json.loads(meta_path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{meta_path}: invalid checkpoint metadata ({exc})") from exc


def load_state(module: nn.Module, weights: Path, *, label: str,
               base: dict[str, torch.Tensor] | None = None) -> CheckpointMeta | None:
    """Load ``weights`` into ``module``; verify its digest if metadata is present.

    ``base`` holds the weights a head checkpoint (``meta.backbone``) does not: together
    they must fit the module exactly.
    """
    if not weights.is_file():
        raise ModelError(f"{weights}: weights file not found")
    meta = read_meta(weights)
    if meta is not None and sha256_file(weights) != meta.sha256:
        raise IntegrityError(f"{weights}: sha256 does not match its metadata (file altered?)")
    state = read_state(weights)
    if base is not None:
        state = {**{k: v for k, v in base.items() if k not in state}, **state}
    _check_fits(module, state, weights, label)
    module.load_state_dict(state)
    return meta


def read_state(weights: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``weights`` (never unpickled: ``weights_only=True``)."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises a variety of types for bad files
        raise ModelError(f"{weights}: not a readable PyTorch state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{weights}: holds a {type(state).__name__}, expected a state dict")
    return state


def _check_fits(module: nn.Module, state: dict[str, torch.Tensor], weights: Path,
                label: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelError(f"{weights}: weights do not fit model {label} ({what}"
                         f"{', ...' if len(missing or unexpected) > 3 else ''})")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ModelError(f"{weights}: weights do not fit model {label} ({key} has shape "
                             f"{tuple(value.shape)}, model expects {tuple(own[key].shape)})")


def save(module: nn.Module, path: Path, meta: dict[str, object],
         only: str | None = None) -> CheckpointMeta:
    """Write the state dict (``only``: just the layer of that name, a head) and its
    metadata; return the metadata (with sha256 filled in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in module.state_dict().items()
             if only is None or k.startswith(f"{only}.")}
    torch.save(state, path)
    full = CheckpointMeta(**{**meta, "sha256": sha256_file(path)})  # type: ignore[arg-type]
    path.with_suffix(".json").write_text(json.dumps(asdict(full), indent=2) + "\n")
    return full
