"""The sealed-link model in the local executor asks again as the runtime does.

A tampered sample is sent again; the retransmission crosses the same attacker, who
tampers with it as often as with the first message, and after the runtime's
``MAX_ATTEMPTS`` submissions in all the request fails. With attack probability p and
k submissions a sample is lost with probability p**k.
"""

from __future__ import annotations

import pytest
import torch

from shardguard.analysis.metrics import wilson
from shardguard.defences.sealed import SealedLinks
from shardguard.hooks import Traffic
from shardguard.partition.compile import Transfer
from shardguard.protocol.control import MAX_ATTEMPTS
from shardguard.runtime._options import ClusterOptions
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.spec import Erasure, Replay

LINK = Transfer("s0", "s1", "t", ((0, 4), (0, 6), (0, 6)), 4)
SAMPLES = 20_000


def _cross(sealed: SealedLinks, threat, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What arrives of ``x`` (one message of SAMPLES samples) and which samples were lost."""
    traffic = Traffic(len(x), {})
    value: torch.Tensor | None = x
    for hook in sealed.around([ThreatInterceptor(threat)]):
        assert value is not None
        value = hook.on_link(LINK, value, traffic)
    assert value is not None
    return value, traffic.lost.get(LINK.id, torch.zeros(len(x), dtype=torch.bool))


@pytest.mark.parametrize(("rate", "attempts"), [(0.3, MAX_ATTEMPTS), (0.5, 2), (0.6, 1)])
def test_a_sample_is_lost_when_every_attempt_is_tampered_with(rate, attempts):
    x = torch.randn(SAMPLES, 4, 6, 6)
    sealed = SealedLinks("retry", attempts=attempts)
    value, lost = _cross(sealed, Replay(target="s0>s1", rate=rate, seed=3), x)
    low, high = wilson(int(lost.sum()), SAMPLES)
    assert low <= rate ** attempts <= high, (int(lost.sum()), rate ** attempts)
    # the first message was tampered with as often as the attacker says, and every
    # sample that did arrive arrived intact
    low, high = wilson(int(sealed.flagged[0].sum()), SAMPLES)
    assert low <= rate <= high
    assert torch.equal(value[~lost], x[~lost])


def test_a_retransmission_changed_by_any_threat_is_asked_again_too():
    x = torch.randn(SAMPLES, 4, 6, 6)
    sealed = SealedLinks("retry", attempts=2)
    threat = Erasure(target="s0>s1", mode="elements", rate=0.002, seed=1)
    _, lost = _cross(sealed, threat, x)
    p = 1 - (1 - 0.002) ** x[0].numel()  # a sample loses at least one element
    low, high = wilson(int(lost.sum()), SAMPLES)
    assert low <= p ** 2 <= high


def test_the_model_asks_as_often_as_the_runtime_does():
    assert ClusterOptions(spawn_local=True).max_attempts == MAX_ATTEMPTS
    assert SealedLinks().attempts == MAX_ATTEMPTS
