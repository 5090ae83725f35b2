"""Simulation agrees with reality: the local executor and real workers under the same threats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shardguard.local import LocalExecutor
from shardguard.partition import bind
from shardguard.runtime.threatened import run_under_threat
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.spec import parse_threat

from .conftest import planned, write_plan

pytestmark = pytest.mark.slow
SAMPLES = 400


@pytest.fixture(scope="module")
def bound(tmp_path_factory):
    return bind(write_plan(tmp_path_factory.mktemp("plan"), planned()))


@pytest.fixture(scope="module")
def data(test_split):
    x, y = test_split.tensors(SAMPLES)
    return x, y


def _local(bound, threat, x):
    with torch.no_grad():
        outcome = LocalExecutor(bound.compiled, [ThreatInterceptor(threat)]).run_outcome(x)
    return outcome.output.argmax(1).numpy(), outcome.answered.numpy()


def _link(bound):
    return next(f"{t.src}>{t.dst}" for p in bound.compiled.programs for t in p.inputs
                if t.src != "input")


@pytest.mark.parametrize("spec", [
    {"id": "L1", "bits": 30, "elements": [0, 7, 100, 513]},  # chosen float32 flips
    {"id": "L3", "mode": "channels", "channels": [0, 3, 5]},  # chosen channels erased
])
def test_deterministic_link_threats_give_the_same_predictions_for_real(bound, data, spec):
    x, _ = data
    threat = parse_threat({**spec, "target": _link(bound)})
    local, _ = _local(bound, threat, x)
    real = run_under_threat(bound, threat, x.numpy())
    assert not real.errors
    assert np.array_equal(real.outputs.argmax(1), local)
    with torch.no_grad():
        clean = LocalExecutor(bound.compiled).run(x).argmax(1).numpy()
    assert (local != clean).any()  # the threat did change something


def test_a_crash_fails_the_same_requests_for_real(bound, data):
    x, _ = data
    device = bound.compiled.programs[-1].device
    threat = parse_threat({"id": "D1", "target": device})
    _, answered = _local(bound, threat, x)
    real = run_under_threat(bound, threat, x.numpy(), at_request=0)
    assert not answered.any()
    assert len(real.errors) == SAMPLES


def test_random_bit_flips_give_the_same_accuracy_within_sampling_error(bound, data):
    x, y = data
    threat = parse_threat({"id": "L1", "target": _link(bound), "ber": 3e-5,
                           "bits": "exponent", "seed": 5})
    local, _ = _local(bound, threat, x)
    real = run_under_threat(bound, threat, x.numpy())
    p_local = float((local == y.numpy()).mean())
    p_real = float((real.outputs.argmax(1) == y.numpy()).mean())
    sigma = np.sqrt(p_local * (1 - p_local) / SAMPLES * 2) + 1e-3
    assert abs(p_local - p_real) < 4 * sigma, (p_local, p_real)
