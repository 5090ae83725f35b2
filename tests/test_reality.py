"""Simulation agrees with reality: the local executor and real workers under the same threats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shardguard.analysis.metrics import wilson
from shardguard.defences.sealed import SealedLinks
from shardguard.local import LocalExecutor
from shardguard.partition import bind
from shardguard.protocol.control import MAX_ATTEMPTS
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


def _difference(a: int, b: int, n: int) -> tuple[float, float]:
    """95 % interval of a/n - b/n (Newcombe's, from the two Wilson intervals)."""
    (la, ua), (lb, ub), d = wilson(a, n), wilson(b, n), (a - b) / n
    return (d - float(np.hypot(a / n - la, ub - b / n)),
            d + float(np.hypot(ua - a / n, b / n - lb)))


def test_a_sealed_link_under_replay_loses_as_many_requests_in_simulation_as_for_real(
        tmp_path, data):
    """Each retry meets the same attacker; after MAX_ATTEMPTS tampered submissions the
    request fails, in the local model as on workers (about 0.3**3 of them)."""
    x, y = data
    sealed = bind(write_plan(tmp_path, planned(), "aead:chacha20-poly1305", name="sealed"))
    threat = parse_threat({"id": "L4", "target": _link(sealed), "rate": 0.3, "seed": 5})
    seal = SealedLinks("retry")
    with torch.no_grad():
        outcome = LocalExecutor(sealed.compiled,
                                seal.around([ThreatInterceptor(threat)])).run_outcome(x)
    real = run_under_threat(sealed, threat, x.numpy(), max_attempts=MAX_ATTEMPTS,
                            on_reject="retry")
    lost_sim, lost_real = int((~outcome.answered).sum()), len(real.errors)
    low, high = _difference(lost_sim, lost_real, SAMPLES)
    assert low <= 0.0 <= high, (lost_sim, lost_real, low, high)
    right_sim = int((outcome.answered & (outcome.output.argmax(1) == y)).sum())
    answered = ~np.isnan(real.outputs).any(axis=1)
    right_real = int((answered & (real.outputs.argmax(1) == y.numpy())).sum())
    low, high = _difference(right_sim, right_real, SAMPLES)
    assert low <= 0.0 <= high, (right_sim, right_real, low, high)
    assert lost_real > 0  # the attacker did win some requests


#: chi-square 99th percentiles by degrees of freedom (any statistics table)
CHI2_99 = {1: 6.635, 2: 9.210, 3: 11.345, 4: 13.277, 5: 15.086, 6: 16.812, 7: 18.475,
           8: 20.090, 9: 21.666}


def _homogeneity(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Chi-square statistic that two class counts come from one distribution, and its
    degrees of freedom (classes seen fewer than 10 times in all are pooled)."""
    keep = (a + b) >= 10
    a = np.append(a[keep], a[~keep].sum())
    b = np.append(b[keep], b[~keep].sum())
    a, b = a[(a + b) > 0], b[(a + b) > 0]
    expected = np.outer([a.sum(), b.sum()], (a + b) / (a.sum() + b.sum()))
    return float((((np.stack([a, b]) - expected) ** 2) / expected).sum()), len(a) - 1


@pytest.mark.parametrize("target", ["every", "first"])
def test_random_outputs_of_compromised_devices_give_the_same_classes_for_real(
        bound, data, target):
    x, y = data
    device = bound.compiled.programs[0].device if target == "first" else "every"
    threat = parse_threat({"id": "D4", "target": device, "mode": "random", "seed": 3})
    local, _ = _local(bound, threat, x)
    real = run_under_threat(bound, threat, x.numpy()).outputs.argmax(1)
    counts = np.bincount(local, minlength=10), np.bincount(real, minlength=10)
    statistic, dof = _homogeneity(*counts)
    assert dof >= 1 and statistic < CHI2_99[dof], counts
    if target == "every":  # the last stage's outputs are noise: any class, not one
        assert (counts[1] >= 10).sum() >= 8, counts
    right = int((local == y.numpy()).sum()), int((real == y.numpy()).sum())
    low, high = _difference(*right, SAMPLES)
    assert low <= 0.0 <= high, right


def test_random_outputs_give_the_same_classes_for_real_on_images_of_mixed_contrast(
        bound, data):
    """A worker gets one image per message, so its noise is as large as that image's own
    spread; the local executor runs the whole batch at once and must draw the same. Half the
    images dimmed to 2% contrast make the spreads differ by about fifty times: noise scaled
    by the batch's spread (8038711's local executor) drowns the dim images' first stage and
    predicts class 0 for nearly all of them, while real workers spread them over several
    classes. The counts are compared by a chi-square homogeneity test at its 99th percentile
    (a 1% chance of failing were they two independent samples of one distribution; here they
    draw the same streams, so they agree more closely than that)."""
    x, _ = data
    x = x.clone()
    x[::2] *= 0.02  # dim every other image
    device = bound.compiled.programs[0].device
    threat = parse_threat({"id": "D4", "target": device, "mode": "random", "seed": 3})
    local, _ = _local(bound, threat, x)
    real = run_under_threat(bound, threat, x.numpy()).outputs.argmax(1)
    for name, pick in (("dim", slice(0, None, 2)), ("all", slice(None))):
        counts = np.bincount(local[pick], minlength=10), np.bincount(real[pick], minlength=10)
        statistic, dof = _homogeneity(*counts)
        assert dof >= 1 and statistic < CHI2_99[dof], (name, counts, statistic)
