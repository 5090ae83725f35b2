"""Weight integrity (M7): a digest of each stage's stored weights, checked on load and on demand.

    expected = digests(compiled)          # at deployment, from the trusted model
    verify(compiled, expected)            # later: the stages whose weights changed

The digest is SHA-256 over every parameter and buffer in state-dict order (name,
dtype, shape, bytes), so a single flipped bit (D5) changes it.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..errors import IntegrityError
from ..partition.compile import CompiledPlan


def weight_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def digests(compiled: CompiledPlan) -> dict[str, str]:
    """Each stage's weight digest."""
    compiled.build()
    return {p.name: weight_digest(p.module) for p in compiled.programs if p.module is not None}


def verify(compiled: CompiledPlan, expected: dict[str, str], *, strict: bool = False) -> list[str]:
    """Stages whose weights no longer match ``expected``; with ``strict``, raise instead."""
    changed = [name for name, digest in digests(compiled).items() if expected.get(name) != digest]
    if changed and strict:
        raise IntegrityError(f"weights changed on stage(s) {', '.join(changed)}")
    return changed


class WeightCheck:
    """M7 in the local executor: digests taken at deployment, checked before a run.

    ``refuses`` is True when a stage's weights changed: the stage is refused (and
    reloaded from the trusted copy), and every sample of the batch is flagged.
    """

    def __init__(self, compiled: CompiledPlan) -> None:
        self.expected = digests(compiled)
        self.flagged: list[torch.Tensor] = []

    def refuses(self, compiled: CompiledPlan, batch: int) -> bool:
        changed = bool(verify(compiled, self.expected))
        self.flagged.append(torch.full((batch,), changed))
        return changed
