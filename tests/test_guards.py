"""Activation guards (M5): clipping to clean ranges recovers what exponent flips cost."""

from __future__ import annotations

import torch

from shardguard.defences.guards import RangeGuard, profile_bounds
from shardguard.local import LocalExecutor
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.spec import parse_threat

from .conftest import planned


def test_range_guards_recover_the_accuracy_lost_to_exponent_flips(train_split, test_split):
    compiled = planned().compiled
    bounds = profile_bounds(compiled, train_split.tensors(5000)[0])
    x, y = test_split.tensors(2000)
    # guards bound activations between stages: the attacker is on the link between them
    threat = parse_threat({"id": "L1", "target": "s0>s1", "ber": 1e-3, "bits": "exponent-high",
                           "seed": 1})

    def accuracy(*hooks):
        with torch.no_grad():
            return float((LocalExecutor(compiled, list(hooks)).run(x).argmax(1) == y)
                         .float().mean())

    clean = accuracy()
    attacked = accuracy(ThreatInterceptor(threat))
    guard = RangeGuard(bounds)
    guarded = accuracy(ThreatInterceptor(threat), guard)
    # measured here: clean 93.6 %, attacked 25.0 %, guarded 93.7 % (2000 test images)
    assert attacked < clean - 0.5
    recovered = (guarded - attacked) / (clean - attacked)
    assert recovered >= 0.95
    assert float(torch.cat(guard.flagged).float().mean()) > 0.8  # the attack is noticed
    clean_guard = RangeGuard(bounds)
    assert accuracy(clean_guard) >= clean - 0.005  # clipping clean traffic costs nothing
    assert float(torch.cat(clean_guard.flagged).float().mean()) < 0.05  # few false alarms
