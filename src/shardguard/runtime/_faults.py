"""Fault injection on a worker (threat experiments): D3 straggling, D4 wrong outputs, D5 bit
flips at rest, and a faulty wire. A worker builds one only when it was started with
``--allow-fault-injection``; without the flag a ``behave`` message is refused and this
code is never reached from the network.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from .protocol import Behave


class Faults:
    """One ``behave`` message's faults, acting on what the worker computes and sends."""

    def __init__(self, behave: Behave) -> None:
        self.behave = behave
        # D4 random: fresh noise for every message, from this worker's own stream
        self.rng = np.random.default_rng(behave.seed)

    def straggle(self, elapsed_s: float) -> None:
        """D3: take ``slow``× as long as the stage did."""
        if self.behave.slow > 1.0:
            time.sleep(elapsed_s * (self.behave.slow - 1.0))

    def corrupt(self, stage: str, x: np.ndarray) -> np.ndarray:
        """D4: what a compromised device sends instead of a stage's output ``x``."""
        b = self.behave
        if b.corrupt is None or (b.stages is not None and stage not in b.stages):
            return x
        if b.corrupt == "zero":
            return np.zeros_like(x)
        if b.corrupt == "scale":
            return x * np.float32(b.factor)
        if b.corrupt == "sign":
            return -x
        # random: Gaussian noise as large as the tensor's own spread
        return (self.rng.standard_normal(x.shape) * (float(x.std()) or 1.0)).astype(np.float32)

    def garble(self, frames: list[Any]) -> list[Any]:
        """A faulty wire: one bit of the last tensor frame flips after sealing (the header
        and its tag arrive intact, so the receiver sees an altered payload)."""
        if not self.behave.garble_wire or len(frames) < 3:
            return frames
        payload = bytearray(frames[-2])
        payload[len(payload) // 2] ^= 0x10
        return [*frames[:-2], payload, frames[-1]]

    def flip_stored(self, stored: Iterable[bytearray]) -> None:
        """D5 at rest: ``flip_stored`` bits flip in each stored model, seen at the next load."""
        if not self.behave.flip_stored:
            return
        rng = np.random.default_rng(self.behave.seed)
        for model in stored:
            for bit in rng.integers(0, len(model) * 8, self.behave.flip_stored):
                model[bit // 8] ^= 1 << (bit % 8)
