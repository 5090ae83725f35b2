"""M4 by randomised checks: Freivalds on affine layers catches a compromised device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shardguard.defences.freivalds import Freivalds
from shardguard.runtime.local import LocalExecutor
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.spec import Compromised

from .conftest import planned


@pytest.fixture(scope="module")
def compiled():
    compiled = planned().compiled
    assert len(compiled.programs) >= 2
    return compiled


def test_clean_stages_pass_every_check_and_answer_exactly(compiled, test_split):
    x, _ = test_split.tensors(500)
    check = Freivalds(rounds=2)
    with torch.no_grad():
        clean = LocalExecutor(compiled).run(x)
        outcome = LocalExecutor(compiled, [check]).run_outcome(x)
    assert check.report()["caught"] == 0 and check.report()["checked"] == 500 * len(
        compiled.programs)
    assert bool(outcome.answered.all()) and torch.equal(outcome.output, clean)
    assert check.report()["verifier_work_ratio"] < 0.1  # two dot products, not the MACs


@pytest.mark.parametrize("mode", ["random", "scale", "sign", "zero"])
def test_a_compromised_device_is_caught_and_never_answers(compiled, test_split, mode):
    x, _ = test_split.tensors(300)
    device = compiled.programs[0].device
    check = Freivalds(rounds=2)
    with torch.no_grad():
        outcome = LocalExecutor(compiled, [ThreatInterceptor(Compromised(target=device,
                                                                         mode=mode)),
                                           check]).run_outcome(x)
    assert check.report()["caught"] == 300  # every sample through the device
    assert not bool(outcome.answered.any())


def test_one_round_misses_a_one_element_error_half_the_time():
    """The stated error probability, measured: at most 1/2 per round, here exactly 1/2."""
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    z = torch.randn(1, 64)
    with torch.no_grad():
        y = layer(z)
    y[0, 5] += 1.0
    for rounds, expected in ((1, 0.5), (2, 0.75), (3, 0.875)):
        check = Freivalds(rounds=rounds, seed=rounds)
        caught = sum(bool(any(check._fails(layer, z, y) for _ in range(rounds)))
                     for _ in range(4000))
        assert abs(caught / 4000 - expected) < 0.03, (rounds, caught)


def test_the_error_bound_holds_on_a_large_layer_too():
    """The tolerance follows rounding, not layer size: a 64x56x56 conv is checked as well."""
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, padding=1)
    z = torch.randn(8, 64, 56, 56)
    with torch.no_grad():
        y = conv(z)
    bad = y.clone()
    bad[:, 3, 10, 10] += 10 * y.abs().mean()  # one element, ten times the mean magnitude
    check = Freivalds(rounds=1, seed=1)
    clean = sum(int(check._fails(conv, z, y).sum()) for _ in range(50))
    caught = sum(int(check._fails(conv, z, bad).sum()) for _ in range(50))
    assert clean == 0 and abs(caught / 400 - 0.5) < 0.08  # measured: 207 of 400
