"""D4 "random" draws fresh noise per message from each worker's own stream, and the local
executor draws the same: a batch of B samples gets what B one-sample messages would."""

from __future__ import annotations

import numpy as np
import torch

from shardguard.hooks import Traffic
from shardguard.partition.compile import StageProgram
from shardguard.protocol.control import Behave
from shardguard.threats.faults import Faults, compromise
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.spec import Compromised


def _sent(worker: str, messages: np.ndarray, seed: int = 7) -> np.ndarray:
    """What a compromised worker sends for each one-sample message, in order."""
    faults = Faults(Behave(corrupt="random", seed=seed), worker)
    return np.concatenate([faults.on_stage("s0", [m[None]], 0.0)[0] for m in messages])


def test_each_message_gets_fresh_noise_and_each_worker_its_own_stream():
    x = np.ones((50, 4, 3, 3), np.float32) * np.arange(36, dtype=np.float32).reshape(4, 3, 3)
    pi1 = _sent("pi1", x)
    assert len({row.tobytes() for row in pi1}) == len(x)  # never the same pattern twice
    np.testing.assert_array_equal(pi1, _sent("pi1", x))  # reproducible from the seed
    pi2 = _sent("pi2", x)
    assert abs(np.corrcoef(pi1.ravel(), pi2.ravel())[0, 1]) < 0.05  # independent workers
    assert not np.array_equal(_sent("pi1", x, seed=8), pi1)


def test_the_local_executor_draws_what_the_workers_send():
    x = np.random.default_rng(0).standard_normal((40, 4, 3, 3)).astype(np.float32)
    interceptor = ThreatInterceptor(Compromised(target="every", mode="random", seed=7))
    for device in ("pi1", "pi2"):  # each device's stream, as its worker's
        program = StageProgram(name="s0", segment=0, split="none", device=device, replicas=[],
                               nodes=[], module=None)
        batch = interceptor.on_stage(program, [torch.from_numpy(x)], Traffic(len(x), {}))
        assert batch is not None
        np.testing.assert_allclose(batch[0].numpy(), _sent(device, x), rtol=1e-6)


def test_the_noise_is_as_large_as_each_samples_own_spread():
    x = np.random.default_rng(1).standard_normal((200, 64)).astype(np.float32)
    x[100:] *= 100.0  # half the messages a hundred times larger
    noise = compromise(x, "random", 1.0, np.random.default_rng(2))
    ratio = noise[100:].std() / noise[:100].std()
    assert 80 < ratio < 125, ratio
