"""Range guards on a worker (M5): clip what a stage receives to its clean per-channel range.

    Clip({"conv1:0": (low, high)})        # a WorkerHook; bounds from guards.profile_bounds

The worker half of ``guards.py`` (numpy only): the same rule as ``RangeGuard`` —
values outside the clean range, or not finite, are clipped to it (NaN to 0 first),
counted (``clipped``), and each sample with one is counted once (``flagged``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..hooks import WorkerHook


class Clip(WorkerHook):
    def __init__(self, bounds: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.bounds = dict(bounds)  # tensor name -> (low, high), one value per channel
        self.clipped = 0  # values clipped
        self.flagged = 0  # samples with a clipped value

    def on_receive(self, link: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: self._clip(name, x) for name, x in arrays.items()}

    def _clip(self, name: str, x: np.ndarray) -> np.ndarray:
        bounds = self.bounds.get(name)
        if bounds is None or x.ndim < 2 or bounds[0].shape != (x.shape[1],):
            return x
        shape = (1, -1, *[1] * (x.ndim - 2))
        low, high = bounds[0].reshape(shape), bounds[1].reshape(shape)
        bad = ~np.isfinite(x) | (x < low) | (x > high)
        if not bad.any():
            return x
        self.clipped += int(bad.sum())
        self.flagged += int(bad.reshape(len(x), -1).any(1).sum())
        clipped: np.ndarray = np.clip(np.nan_to_num(x, nan=0.0), low, high)
        return clipped

    def counters(self) -> dict[str, int]:
        return {"clipped": self.clipped, "flagged": self.flagged}
