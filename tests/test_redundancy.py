"""M4 by redundancy: triplication masks a compromised device, duplication detects it."""

from __future__ import annotations

import pytest
import torch

from shardguard.defences.redundancy import Vote
from shardguard.errors import ConfigError
from shardguard.local import LocalExecutor
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.spec import Compromised, Crash

from .conftest import planned


def _planned(replicas):
    compiled = planned(replicas=replicas).compiled
    assert all(len(p.replicas) >= replicas - 1 for p in compiled.programs)
    return compiled


@pytest.fixture(scope="module")
def images(test_split):
    return test_split.tensors(500)


@pytest.mark.parametrize("mode", ["random", "sign", "scale"])
def test_triplication_masks_one_compromised_device_completely(images, mode):
    compiled = _planned(3)
    x, _ = images
    with torch.no_grad():
        clean = LocalExecutor(compiled).run(x)
        attacked = LocalExecutor(compiled, [ThreatInterceptor(Compromised(target="pi2",
                                                                          mode=mode))]).run(x)
        vote = Vote(copies=3)
        defended = LocalExecutor(compiled, [ThreatInterceptor(Compromised(target="pi2",
                                                                          mode=mode)), vote])
        outcome = defended.run_outcome(x)
    assert not torch.equal(attacked, clean)  # the attack does change the answers
    assert bool(outcome.answered.all())
    assert torch.equal(outcome.output, clean)  # the two honest copies outvote pi2, bit for bit
    hosting = [p for p in compiled.programs if "pi2" in [p.device, *p.replicas][:3]]
    assert vote.report()["masked"] == len(x) * len(hosting) and vote.report()["failed"] == 0


def test_duplication_detects_a_compromised_device_and_never_answers_wrongly(images):
    compiled = _planned(2)
    x, _ = images
    target = compiled.programs[0].replicas[0]  # the second copy of the first stage
    with torch.no_grad():
        clean = LocalExecutor(compiled).run(x)
        vote = Vote(copies=2)
        outcome = LocalExecutor(compiled, [ThreatInterceptor(Compromised(target=target)),
                                           vote]).run_outcome(x)
    assert not bool(outcome.answered.any())  # every sample was spoiled, so none is answered
    assert vote.report()["disagreed"] >= len(x) and vote.report()["masked"] == 0
    with torch.no_grad():  # and clean traffic is never flagged
        clean_vote = Vote(copies=2)
        clean_outcome = LocalExecutor(compiled, [clean_vote]).run_outcome(x)
    assert bool(clean_outcome.answered.all()) and torch.equal(clean_outcome.output, clean)
    assert clean_vote.report()["disagreed"] == 0


def test_a_crashed_copy_is_outvoted_by_the_other_two(images):
    compiled = _planned(3)
    x, _ = images
    with torch.no_grad():
        clean = LocalExecutor(compiled).run(x)
        outcome = LocalExecutor(compiled, [ThreatInterceptor(Crash(target="pi2")),
                                           Vote(copies=3)]).run_outcome(x)
    assert bool(outcome.answered.all()) and torch.equal(outcome.output, clean)


def test_voting_needs_replicas_on_distinct_devices(images):
    compiled = _planned(1)
    with pytest.raises(ConfigError, match="needs 2 replica"):
        LocalExecutor(compiled, [Vote(copies=3)]).run(images[0][:4])
