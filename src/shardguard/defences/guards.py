"""Activation guards (M5): clip what a stage receives to bounds seen on clean data (Ranger).

    bounds = profile_bounds(compiled, train_x)        # per link tensor, per channel
    guard = RangeGuard(bounds)
    LocalExecutor(compiled, [threat, guard])          # the guard acts after the attacker

Values outside the clean range (or not finite) are clipped to it and counted;
a sample with any such value is flagged as an anomaly. Ranger (Chen et al.,
DSN 2021) bounds each layer's activations the same way.
"""

from __future__ import annotations

import torch

from ..hooks import Interceptor, Traffic
from ..local import LocalExecutor
from ..partition.compile import INPUT, OUTPUT, CompiledPlan, Transfer

Bounds = dict[str, tuple[torch.Tensor, torch.Tensor]]  # tensor id → (low, high) per channel


class _Recorder(Interceptor):
    def __init__(self) -> None:
        self.low: dict[str, torch.Tensor] = {}
        self.high: dict[str, torch.Tensor] = {}


    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor:
        if transfer.src == INPUT or transfer.dst == OUTPUT:
            return value  # guards bound activations between stages, not inputs or logits
        dims = [d for d in range(value.dim()) if d != 1]  # keep channels (dim 1)
        low, high = value.amin(dim=dims), value.amax(dim=dims)
        if transfer.id in self.low:
            low, high = torch.minimum(low, self.low[transfer.id]), torch.maximum(
                high, self.high[transfer.id])
        self.low[transfer.id], self.high[transfer.id] = low, high
        return value


@torch.no_grad()
def profile_bounds(compiled: CompiledPlan, x: torch.Tensor) -> Bounds:
    """Per-channel min and max of every link tensor over clean inputs ``x``."""
    recorder = _Recorder()
    executor = LocalExecutor(compiled, [recorder])
    for chunk in torch.split(x, 1000):
        executor.run(chunk)
    return {k: (recorder.low[k], recorder.high[k]) for k in recorder.low}


class RangeGuard(Interceptor):
    """Clips each link tensor to its clean bounds; counts and flags what it clipped."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.clipped = 0
        self.flagged: list[torch.Tensor] = []  # per batch: (B,) samples with a clipped value


    def on_link(self, transfer: Transfer, value: torch.Tensor,
                traffic: Traffic) -> torch.Tensor:
        if transfer.id not in self.bounds:
            return value
        low, high = self.bounds[transfer.id]
        shape = (1, -1, *[1] * (value.dim() - 2))
        low, high = low.view(shape), high.view(shape)
        bad = ~torch.isfinite(value) | (value < low) | (value > high)
        self.clipped += int(bad.sum())
        self.flagged.append(bad.flatten(1).any(1))
        return torch.minimum(torch.maximum(torch.nan_to_num(value, nan=0.0), low), high)
