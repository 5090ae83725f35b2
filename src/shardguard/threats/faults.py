"""Fault injection on a worker (threat experiments): D3 straggling, D4 wrong outputs, D5 bit
flips at rest, and a faulty wire, as one ``WorkerHook`` built from a ``behave`` message.

A worker loads this module only when it was started with ``--allow-fault-injection``
(``runtime/_deployment.py``, ``fault_injection``); without the flag a ``behave``
message is refused and no code that corrupts outputs is loaded at all.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..hooks import WorkerHook
from ..protocol.control import Behave


def device_stream(seed: int, device: str) -> np.random.Generator:
    """D4 random's noise on ``device``: one stream per (seed, device), drawn from message
    after message, the same on a worker (``Faults``) and in the local executor."""
    key = int.from_bytes(hashlib.blake2b(device.encode(), digest_size=8).digest(), "big")
    return np.random.default_rng(np.random.SeedSequence([seed, key]))


def compromise(x: np.ndarray, mode: str, factor: float, rng: np.random.Generator,
               zero_point: int = 0) -> np.ndarray:
    """D4: what a compromised device sends instead of a stage's output ``x`` (B, ...).

    An int8 output (q, with value (q − ``zero_point``) · scale) is compromised in value:
    the same rule acts on q − zero_point, and the result is quantized back, saturating
    to [−128, 127] (``zero`` sends the zero point, the code of 0.0)."""
    if x.dtype == np.int8:
        wrong = compromise(x.astype(np.float32) - np.float32(zero_point), mode, factor, rng)
        return saturate(wrong + np.float32(zero_point))
    if mode == "zero":
        return np.zeros_like(x)
    if mode == "scale":
        return x * np.float32(factor)
    if mode == "sign":
        return -x
    if mode == "random":  # Gaussian noise as large as each sample's own spread
        rows = x.reshape(len(x), -1) if x.ndim > 1 else x.reshape(1, -1)
        spread = rows.std(axis=1) if rows.shape[1] > 1 else np.ones(len(rows))
        spread = np.where(spread > 0, spread, 1.0).reshape(-1, *[1] * (x.ndim - 1))
        return (rng.standard_normal(x.shape) * spread).astype(np.float32)
    raise ConfigError(f"D4 mode {mode!r} cannot act on a worker (zero, scale, sign, random)")


def saturate(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to the nearest int8, values beyond [−128, 127] clamped to its ends."""
    out: np.ndarray = np.clip(np.rint(np.nan_to_num(x)), -128, 127).astype(np.int8)
    return out


class Faults(WorkerHook):
    """One ``behave`` message's faults, acting on what the worker computes and sends."""

    def __init__(self, behave: Behave, worker: str) -> None:
        self.behave = behave  # its corrupt mode is one of CORRUPT_MODES (Behave checks it)
        # D4 random: fresh noise for every message, from this worker's own stream
        self.rng = device_stream(behave.seed, worker)

    def on_stage(self, stage: str, outputs: list[np.ndarray],
                 elapsed_s: float) -> list[np.ndarray]:
        b = self.behave
        if b.slow > 1.0:  # D3: take ``slow``× as long as the stage did
            time.sleep(elapsed_s * (b.slow - 1.0))
        if b.corrupt is None or (b.stages is not None and stage not in b.stages):
            return outputs
        return [compromise(o, b.corrupt, b.factor, self.rng) for o in outputs]

    def on_send(self, frames: list[Any]) -> list[Any]:
        """A faulty wire: one bit of the last tensor frame flips after sealing (the header
        and its tag arrive intact, so the receiver sees an altered payload)."""
        if not self.behave.garble_wire or len(frames) < 3:
            return frames
        payload = bytearray(frames[-2])
        payload[len(payload) // 2] ^= 0x10
        return [*frames[:-2], payload, frames[-1]]

    def on_load(self, stored: Iterable[bytearray]) -> None:
        """D5 at rest: ``flip_stored`` bits flip in each stored model, seen at the next load."""
        if not self.behave.flip_stored:
            return
        rng = np.random.default_rng(self.behave.seed)
        for model in stored:
            for bit in rng.integers(0, len(model) * 8, self.behave.flip_stored):
                model[bit // 8] ^= 1 << (bit % 8)
