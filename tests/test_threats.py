"""Threats in the local executor: exact float32 flips, and the findings the analysis reproduces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shardguard.graph import trace
from shardguard.local import LocalExecutor
from shardguard.partition import ModelRef, make_plan
from shardguard.platform import load_platform
from shardguard.threats.bits import flip_at, flip_bits
from shardguard.threats.local import ThreatInterceptor, weight_flips
from shardguard.threats.spec import parse_threat
from shardguard.zoo import load_model


@settings(max_examples=200, deadline=None)
@given(value=st.floats(width=32, allow_nan=False), bit=st.integers(0, 31))
def test_a_flip_changes_exactly_that_float32_bit_and_twice_restores_it(value, bit):
    x = torch.tensor([value], dtype=torch.float32)
    once = flip_at(x, torch.tensor([0]), torch.tensor([bit]))
    diff = int(x.view(torch.int32)[0] ^ once.view(torch.int32)[0]) & 0xFFFFFFFF
    assert diff == 1 << bit
    twice = flip_at(x, torch.tensor([0, 0]), torch.tensor([bit, bit]))
    assert torch.equal(twice.view(torch.int32), x.view(torch.int32))


def test_flips_at_a_rate_are_seeded_and_near_the_expected_count():
    x = torch.rand(1000, 100)
    a = flip_bits(x, 1e-3, "exponent", np.random.default_rng(4))
    b = flip_bits(x, 1e-3, "exponent", np.random.default_rng(4))
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    flipped = int((a != x).sum())
    assert abs(flipped - 800) < 5 * np.sqrt(800)
    assert flip_bits(x, 0.0, "all").equal(x)


#: The tests that read ``setup`` run on one xdist worker (make test runs ``--dist
#: loadgroup``), which makes the plans once.
SETUP = pytest.mark.xdist_group("threats-setup")


@pytest.fixture(scope="module")
def setup(test_split):
    model = load_model("resnet-small").module
    graph = trace(model, (1, 28, 28))
    platform = load_platform("rpi4x4-ethernet")
    ref = ModelRef(ref="resnet-small", input_shape=[1, 28, 28])
    plans = {s: make_plan(graph, ref, platform, strategy=s, objective="energy")
             for s in ("pipeline", "spatial", "channel")}
    x, y = test_split.tensors(2000)
    return plans, x, y


def _accuracy(planned, x, y, *threats):
    executor = LocalExecutor(planned.compiled, [ThreatInterceptor(t) for t in threats])
    with torch.no_grad():
        outcome = executor.run_outcome(x)
    correct = (outcome.output.argmax(1) == y) & outcome.answered
    return float(correct.float().mean()), outcome


@SETUP
def test_high_exponent_flips_cost_far_more_than_mantissa_flips(setup):
    plans, x, y = setup
    clean, _ = _accuracy(plans["pipeline"], x, y)
    rates = {}
    for bits in ("exponent-high", "mantissa"):
        threat = parse_threat({"id": "L1", "target": "every", "ber": 1e-4, "bits": bits})
        rates[bits], _ = _accuracy(plans["pipeline"], x, y, threat)
    assert rates["mantissa"] > clean - 0.01  # mantissa flips at 1e-4: harmless
    assert rates["exponent-high"] < rates["mantissa"] - 0.3  # bit 30: catastrophic


@SETUP
def test_random_flips_are_harmless_at_low_rates_and_ruinous_at_high(setup):
    plans, x, y = setup
    clean, _ = _accuracy(plans["pipeline"], x, y)
    curve = {}
    for ber in (1e-9, 1e-6, 1e-3):
        threat = parse_threat({"id": "L1", "target": "every", "ber": ber, "bits": "all"})
        curve[ber], _ = _accuracy(plans["pipeline"], x, y, threat)
    assert curve[1e-9] >= clean - 0.002
    assert curve[1e-3] < 0.5 * clean
    assert curve[1e-9] >= curve[1e-6] >= curve[1e-3]


@SETUP
def test_losing_a_pipeline_device_fails_every_request(setup):
    plans, x, y = setup
    for device in {p.device for p in plans["pipeline"].compiled.programs}:
        accuracy, outcome = _accuracy(plans["pipeline"], x, y,
                                      parse_threat({"id": "D1", "target": device}))
        assert accuracy == 0.0 and not outcome.answered.any()


def _split_plan(strategy: str):
    """Split work across devices, everything unsplit on pi1: a lost pi2 loses only its piece."""
    from shardguard.partition.build import assemble_plan, whole
    from shardguard.partition.channel import channel_segments
    from shardguard.partition.pipeline import tables
    from shardguard.partition.plan import SegmentSpec
    from shardguard.partition.spatial import prefix_ends, tile_stages

    graph = trace(load_model("resnet-small").module, (1, 28, 28))
    platform = load_platform("rpi4x4-ethernet")
    devices = ["pi2", "pi3", "pi4"]
    if strategy == "channel":
        segments = channel_segments(graph, ["pi1", *devices], [1.0] * 4, leader="pi1")
    else:
        names = [n.name for n in graph.compute_nodes]
        end = max(prefix_ends(graph, tables(graph)))
        _, h, w = graph.by_name[names[end - 1]].shape[1:]
        segments = [SegmentSpec(first=names[0], last=names[end - 1], split="spatial",
                                stages=tile_stages(devices, [1.0] * 3, h, w, 3, 1)),
                    whole(graph, end, len(names) - 1, "rest", "pi1")]
    return assemble_plan(graph, ModelRef(ref="resnet-small", input_shape=[1, 28, 28]),
                         platform, strategy, "latency", segments)


@SETUP
@pytest.mark.parametrize("strategy", ["spatial", "channel"])
def test_losing_one_device_of_a_split_segment_degrades_instead_of_failing(setup, strategy):
    _, x, y = setup
    planned = _split_plan(strategy)
    clean, _ = _accuracy(planned, x, y)
    accuracy, outcome = _accuracy(planned, x, y, parse_threat({"id": "D1", "target": "pi2"}))
    assert outcome.answered.all() and outcome.degraded.all()
    assert 0.0 < accuracy < clean
    _, lost_leader = _accuracy(planned, x, y, parse_threat({"id": "D1", "target": "pi1"}))
    assert not lost_leader.answered.any()


@SETUP
def test_weight_flips_are_applied_and_restored(setup):
    plans, x, y = setup
    planned = plans["pipeline"]
    clean, _ = _accuracy(planned, x, y)
    threat = parse_threat({"id": "D5", "target": "every", "ber": 1e-3, "bits": "exponent-high"})
    with weight_flips(planned.compiled, threat) as touched:
        hit, _ = _accuracy(planned, x, y)
    assert touched > 0 and hit < clean - 0.3
    assert _accuracy(planned, x, y)[0] == clean


@SETUP
@pytest.mark.parametrize("spec", [
    {"id": "L2", "snr_db": 0.0}, {"id": "L3", "mode": "channels", "rate": 0.5},
    {"id": "L4", "rate": 1.0}, {"id": "D4", "mode": "random"},
])
def test_strong_link_and_device_attacks_cost_accuracy(setup, spec):
    plans, x, y = setup
    clean, _ = _accuracy(plans["pipeline"], x, y)
    hit, _ = _accuracy(plans["pipeline"], x, y, parse_threat(spec))
    assert hit < clean - 0.2, (spec, clean, hit)


@SETUP
def test_dropped_messages_leave_those_requests_unanswered(setup):
    plans, x, y = setup
    _, outcome = _accuracy(plans["pipeline"], x, y,
                           parse_threat({"id": "L3", "mode": "message", "rate": 0.3}))
    links = plans["pipeline"].compiled.links()  # the coordinator's hops among them
    expected = 1 - 0.7 ** len(links)  # a request is lost if any of its messages is
    unanswered = float((~outcome.answered).float().mean())
    assert abs(unanswered - expected) < 5 * np.sqrt(expected * (1 - expected) / len(x))
    assert torch.isnan(outcome.output[~outcome.answered]).all()


@SETUP
def test_adversarial_tampering_on_a_link_costs_more_than_noise_of_the_same_size(setup):
    from shardguard.threats.attacks import adversarial_link

    plans, x, y = setup
    planned = plans["pipeline"]
    x, y = x[:500], y[:500]
    link = next(f"{t.src}>{t.dst}" for p in planned.compiled.programs for t in p.inputs
                if t.src != "input")
    clean, _ = _accuracy(planned, x, y)
    fgsm = adversarial_link(planned.compiled, parse_threat(
        {"id": "L5", "target": link, "method": "fgsm", "epsilon": 0.02}), x, y)
    pgd = adversarial_link(planned.compiled, parse_threat(
        {"id": "L5", "target": link, "method": "pgd", "epsilon": 0.02, "steps": 5}), x, y)
    accuracy = {k: float((o.output.argmax(1) == y).float().mean())
                for k, o in (("fgsm", fgsm), ("pgd", pgd))}
    assert accuracy["pgd"] <= accuracy["fgsm"] < clean - 0.2
    noisy, _ = _accuracy(planned, x, y, parse_threat({"id": "L2", "target": link,
                                                      "snr_db": 30}))
    assert noisy > accuracy["fgsm"] + 0.2
    targeted = adversarial_link(planned.compiled, parse_threat(
        {"id": "L5", "target": link, "method": "pgd", "epsilon": 0.05, "steps": 5,
         "target_class": 3}), x, y)
    assert float((targeted.output.argmax(1) == 3).float().mean()) > 0.3


def test_an_eavesdropper_rebuilds_the_input_better_from_a_shallow_cut(train_split, test_split):
    from shardguard.partition.build import assemble_plan, whole
    from shardguard.threats.eavesdrop import eavesdrop

    graph = trace(load_model("resnet-small").module, (1, 28, 28))
    names = [n.name for n in graph.compute_nodes]
    platform = load_platform("rpi4x4-ethernet")
    train_x, _ = train_split.tensors(3000)
    test_x, _ = test_split.tensors(300)
    scores = {}
    for label, cut in (("shallow", names.index("stem_2")), ("deep", names.index("pool"))):
        planned = assemble_plan(graph, ModelRef(ref="resnet-small", input_shape=[1, 28, 28]),
                                platform, "manual", "latency",
                                [whole(graph, 0, cut, "a", "pi1"),
                                 whole(graph, cut + 1, len(names) - 1, "b", "pi2")])
        scores[label] = eavesdrop(planned.compiled, "a>b", train_x, test_x, epochs=2)
    assert scores["shallow"].psnr_db > scores["deep"].psnr_db + 3
    assert scores["shallow"].ssim > scores["deep"].ssim
    assert 0 < scores["deep"].ssim < scores["shallow"].ssim <= 1


@SETUP
def test_an_adversarial_device_hurts_more_than_a_random_one_of_the_same_budget(setup):
    from shardguard.threats.attacks import adversarial_device

    plans, x, y = setup
    planned = plans["pipeline"]
    x, y = x[:300], y[:300]
    device = planned.compiled.programs[0].device
    threat = parse_threat({"id": "D4", "target": device, "mode": "adversarial"})
    hit = adversarial_device(planned.compiled, threat, x, y, epsilon=0.05, steps=5)
    accuracy = float(((hit.output.argmax(1) == y) & hit.answered).float().mean())
    noisy, _ = _accuracy(planned, x, y, parse_threat({"id": "L2", "target": "every",
                                                      "snr_db": 26}))
    assert accuracy < noisy - 0.3
    with pytest.raises(ValueError, match="needs gradients"):
        _accuracy(planned, x, y, threat)


class _Normalised(torch.nn.Module):
    """A model that takes normalised inputs (mean 0.5, std 0.25) and undoes it first."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x * 0.25 + 0.5)


def test_an_eavesdropper_is_scored_on_pixels_whatever_the_models_normalisation(
        train_split, test_split):
    from shardguard.data import Preprocess
    from shardguard.partition.build import assemble_plan, whole
    from shardguard.threats.eavesdrop import eavesdrop

    platform = load_platform("rpi4x4-ethernet")
    pre = Preprocess(mean=[0.5], std=[0.25])
    train_x, _ = train_split.tensors(1000)
    test_x, _ = test_split.tensors(200)
    scores = {}
    for label, module, scale in (("pixels", load_model("lenet5").module, lambda x: x),
                                 ("normalised", _Normalised(load_model("lenet5").module),
                                  lambda x: (x - 0.5) / 0.25)):
        graph = trace(module, (1, 28, 28))
        names = [n.name for n in graph.compute_nodes]
        cut = next(i for i, name in enumerate(names) if name.endswith("features_2"))  # pool1
        planned = assemble_plan(graph, ModelRef(ref="lenet5", input_shape=[1, 28, 28]),
                                platform, "manual", "latency",
                                [whole(graph, 0, cut, "a", "pi1"),
                                 whole(graph, cut + 1, len(names) - 1, "b", "pi2")])
        scores[label] = eavesdrop(planned.compiled, "a>b", scale(train_x), scale(test_x),
                                  epochs=2, pixels=pre.to_pixels if label != "pixels" else None)
        if label == "normalised":  # scored on the normalised scale, as before: far off
            unscaled = eavesdrop(planned.compiled, "a>b", scale(train_x), scale(test_x),
                                 epochs=2)
    assert abs(scores["normalised"].psnr_db - scores["pixels"].psnr_db) < 0.5
    assert abs(scores["normalised"].ssim - scores["pixels"].ssim) < 0.02
    assert unscaled.psnr_db < scores["pixels"].psnr_db - 3
