"""Issue 15, point 3: threats on int8 tensors and weights. L1 and D5 flip the 8 bits of
int8 values (classes sign, msb, lsb, all; positions 0..7); L2, L3, L4 and D4 act on int8
link tensors as they travel and keep them int8, saturating to [-128, 127]."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from shardguard.errors import ConfigError
from shardguard.hooks import Traffic
from shardguard.partition.compile import Transfer
from shardguard.threats.bits import flip_at, flip_bits
from shardguard.threats.faults import compromise
from shardguard.threats.local import ThreatInterceptor
from shardguard.threats.quantized import flip_int8_initializers
from shardguard.threats.spec import parse_threat

LINK = Transfer("s0", "s1", "conv1", ((0, 4), (0, 5), (0, 5)), 1)


def codes(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-100, 100, (n, 4, 5, 5), generator=g, dtype=torch.int8)


def on_link(threat: dict, value: torch.Tensor, zero_point: int = 0) -> torch.Tensor:
    interceptor = ThreatInterceptor(parse_threat(threat), {LINK.id: zero_point})
    out = interceptor.on_link(LINK, value, Traffic(len(value), {}))
    assert out is not None
    return out


@settings(max_examples=200, deadline=None)
@given(value=st.integers(-128, 127), bit=st.integers(0, 7))
def test_a_flip_changes_exactly_that_int8_bit_and_twice_restores_it(value, bit):
    x = torch.tensor([value], dtype=torch.int8)
    once = flip_at(x, torch.tensor([0]), torch.tensor([bit]))
    assert once.dtype == torch.int8
    assert (int(x.view(torch.uint8)[0]) ^ int(once.view(torch.uint8)[0])) == 1 << bit
    assert torch.equal(flip_at(x, torch.tensor([0, 0]), torch.tensor([bit, bit])), x)


def test_int8_bit_classes_move_a_value_by_their_weight():
    x = torch.tensor([5], dtype=torch.int8)
    sign, msb, lsb = (flip_bits(x, 1.0, c) for c in ("sign", "msb", "lsb"))
    assert (int(sign), int(msb), int(lsb)) == (5 - 128, 5 + 64, 4)


def test_random_int8_flips_hit_8_bits_an_element_at_the_rate():
    x = codes(2000)
    a = flip_bits(x, 1e-3, "all", np.random.default_rng(4))
    assert torch.equal(a, flip_bits(x, 1e-3, "all", np.random.default_rng(4)))  # seeded
    bits = int(np.unpackbits((a.view(torch.uint8) ^ x.view(torch.uint8)).numpy()).sum())
    expected = x.numel() * 8 * 1e-3
    assert abs(bits - expected) < 5 * np.sqrt(expected)
    lsb = flip_bits(x, 1e-2, "lsb", np.random.default_rng(1))
    assert set((lsb.int() - x.int()).unique().tolist()) == {-1, 0, 1}


def test_float_bit_classes_on_int8_are_one_clear_config_error():
    x = codes(2)
    with pytest.raises(ConfigError, match="'exponent' is for float32 values; an int8 tensor"):
        flip_bits(x, 1e-3, "exponent")
    with pytest.raises(ConfigError, match=r"do not fit an int8 value \(0..7\)"):
        on_link({"id": "L1", "target": "every", "bits": 12, "elements": [0]}, x)
    with pytest.raises(ConfigError, match="'msb' is for int8 values"):
        flip_bits(torch.zeros(3), 1e-3, "msb")


def test_l1_on_an_int8_link_flips_the_chosen_bits_of_the_chosen_elements():
    x = codes(8)
    out = on_link({"id": "L1", "target": "s0>s1", "bits": "sign", "elements": [3]}, x)
    assert out.dtype == torch.int8
    changed = (out != x).flatten(1)
    assert changed[:, 3].all() and changed.sum() == len(x)
    assert torch.equal(out.flatten(1)[:, 3].int(), x.flatten(1)[:, 3].int() ^ -128)
    flipped = on_link({"id": "L1", "target": "every", "ber": 1e-2, "bits": "msb"}, x)
    assert flipped.dtype == torch.int8 and not torch.equal(flipped, x)


def test_l2_noise_on_int8_stays_int8_at_the_snr_of_the_values_and_saturates():
    x, zp = codes(500), 7
    out = on_link({"id": "L2", "target": "every", "snr_db": 20}, x, zp)
    assert out.dtype == torch.int8
    signal = (x.float() - zp).pow(2).mean()
    noise = (out.float() - x.float()).pow(2).mean()
    assert 10 * torch.log10(signal / noise) == pytest.approx(20, abs=1.0)
    loud = on_link({"id": "L2", "target": "every", "snr_db": -20}, x, zp)
    assert loud.dtype == torch.int8
    assert (loud == 127).any() and (loud == -128).any()


def test_l3_erases_int8_elements_to_the_zero_point():
    x, zp = codes(50), -12
    out = on_link({"id": "L3", "target": "every", "rate": 0.3}, x, zp)
    assert out.dtype == torch.int8
    erased = out != x
    assert 0.25 < float(erased.float().mean()) < 0.35
    assert (out[erased] == zp).all()
    chans = on_link({"id": "L3", "target": "every", "mode": "channels", "channels": [1]}, x, zp)
    assert (chans[:, 1] == zp).all() and torch.equal(chans[:, 0], x[:, 0])


def test_l4_replays_int8_messages_as_they_were():
    interceptor = ThreatInterceptor(parse_threat({"id": "L4", "target": "every", "lag": 1}))
    first, second = codes(1, 1), codes(1, 2)
    interceptor.on_link(LINK, first, Traffic(1, {}))
    out = interceptor.on_link(LINK, second, Traffic(1, {}))
    assert out is not None and out.dtype == torch.int8 and torch.equal(out, first)


def test_d4_compromises_int8_outputs_in_value_and_saturates():
    x, zp, rng = codes(4).numpy(), 3, np.random.default_rng(0)
    assert (compromise(x, "zero", 10, rng, zp) == zp).all()
    scaled = compromise(x, "scale", 10.0, rng, zp)
    assert scaled.dtype == np.int8
    want = np.clip((x.astype(np.float32) - zp) * 10 + zp, -128, 127)
    assert np.array_equal(scaled, want.astype(np.int8))
    flipped = compromise(x, "sign", 1, rng, zp)
    assert np.array_equal(flipped, np.clip(2 * zp - x.astype(np.int32), -128, 127))
    noisy = compromise(x, "random", 1, rng, zp)
    assert noisy.dtype == np.int8 and not np.array_equal(noisy, x)


def test_d5_flips_bits_of_the_int8_weights_of_a_quantized_onnx_model():
    w = np.arange(-64, 64, dtype=np.int8).reshape(8, 16)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "scale"], ["y"])], "stage", [],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [8, 16])],
        [numpy_helper.from_array(w, "w"),
         numpy_helper.from_array(np.array(0.1, np.float32), "scale")])
    model = helper.make_model(graph)
    assert flip_int8_initializers(model, 0.2, "lsb", np.random.default_rng(0)) == 1
    after = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert set(np.unique(after["w"] ^ w).tolist()) == {0, 1}  # lsb flips, and only those
    assert after["scale"] == np.float32(0.1)  # the float scale untouched
    with pytest.raises(ConfigError):
        flip_int8_initializers(model, 1e-3, "mantissa")
