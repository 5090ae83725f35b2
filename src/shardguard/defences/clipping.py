"""Range guards on a worker (M5): clip what a stage receives to its clean per-channel range.

    Clip({"conv1:0": (low, high)})        # a WorkerHook; bounds from guards.profile_bounds

The worker half of ``guards.py`` (numpy only): the same rule as ``RangeGuard`` —
values outside the clean range, or not finite, are clipped to it (NaN to 0 first),
counted (``clipped``), and each sample with one is counted once (``flagged``).

An int8 tensor (codes q, value (q − zero point) · scale, from an int8 stage) is clipped in
the quantized domain: its float bounds are mapped to codes (``quantized_bounds``) with the
tensor's ``quant`` parameters (name → (scale, zero point)), and q is clipped to them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..hooks import WorkerHook


def quantized_bounds(low: np.ndarray, high: np.ndarray, scale: float, zero_point: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Float bounds as int8 codes: round(b / scale) + zero point, within [−128, 127].
    Rounding is monotone, so every clean value's code lies inside: none is clipped."""
    def code(b: np.ndarray) -> np.ndarray:
        q: np.ndarray = np.clip(np.rint(np.asarray(b, np.float64) / scale) + zero_point,
                                -128, 127).astype(np.int8)
        return q
    return code(low), code(high)


class Clip(WorkerHook):
    def __init__(self, bounds: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 quant: Mapping[str, tuple[float, int]] | None = None) -> None:
        self.bounds = dict(bounds)  # tensor name -> (low, high), one value per channel
        self.quant = dict(quant or {})  # int8 tensor name -> (scale, zero point)
        self.clipped = 0  # values clipped
        self.flagged = 0  # samples with a clipped value

    def on_receive(self, link: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: self._clip(name, x) for name, x in arrays.items()}

    def _clip(self, name: str, x: np.ndarray) -> np.ndarray:
        bounds = self.bounds.get(name)
        if bounds is None or x.ndim < 2 or bounds[0].shape != (x.shape[1],):
            return x
        shape = (1, -1, *[1] * (x.ndim - 2))
        if x.dtype == np.int8:
            if name not in self.quant:
                raise ValueError(f"int8 tensor {name}: no scale and zero point to map its "
                                 "float bounds to codes")
            bounds = quantized_bounds(*bounds, *self.quant[name])
        low, high = bounds[0].reshape(shape), bounds[1].reshape(shape)
        bad = ~np.isfinite(x) | (x < low) | (x > high)
        if not bad.any():
            return x
        self.clipped += int(bad.sum())
        self.flagged += int(bad.reshape(len(x), -1).any(1).sum())
        clipped: np.ndarray = np.clip(np.nan_to_num(x, nan=0.0), low, high).astype(x.dtype)
        return clipped

    def counters(self) -> dict[str, int]:
        return {"clipped": self.clipped, "flagged": self.flagged}
