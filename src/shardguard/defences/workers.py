"""The defences' worker halves that act as hooks, built from a deploy message (numpy only).

    hooks = worker_hooks(deploy)          # [Clip(...)] when the plan guards its links

A defence that acts on what a worker receives, computes or sends (``hooks.WorkerHook``)
adds its line here; ``stored_intact`` is the weight-digest check (M7). Sealing
(``seal.py``, through ``protections.py``), votes (``ballots.py``) and Freivalds
checks (``verifier.py``) route messages, so the data path calls them itself.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..hooks import WorkerHook
from ..protocol.control import Deploy
from .clipping import Clip


def worker_hooks(message: Deploy) -> list[WorkerHook]:
    hooks: list[WorkerHook] = []
    if message.guards:  # M5: per-channel clean ranges of link tensors
        hooks.append(Clip({name: (np.asarray(low, np.float32), np.asarray(high, np.float32))
                           for name, (low, high) in message.guards.items()}))
    return hooks


def stored_intact(stored: bytes | bytearray, sha256: str) -> bool:
    """M7 on a worker: whether a stored stage model still matches the digest it was
    deployed with (checked on demand: the ``verify`` control message)."""
    return hashlib.sha256(stored).hexdigest() == sha256
