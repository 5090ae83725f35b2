"""Issue 15, point 3: range guards clip int8 link tensors in the quantized domain, their
float bounds mapped to codes through the tensor's scale and zero point."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shardguard.defences.clipping import Clip, quantized_bounds
from shardguard.defences.guards import RangeGuard
from shardguard.hooks import Traffic
from shardguard.partition.compile import Transfer

LINK = Transfer("s0", "s1", "relu1", ((0, 2), (0, 4), (0, 4)), 1)
LOW, HIGH = torch.tensor([0.0, -1.0]), torch.tensor([2.0, 0.5])  # per channel, in float
SCALE, ZP = 0.02, -20


def quantize(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(v / SCALE) + ZP, -128, 127).to(torch.int8)


def clean_and_struck(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    u = torch.rand(n, 2, 4, 4, generator=g)
    clean = quantize(LOW.view(1, -1, 1, 1) + u * (HIGH - LOW).view(1, -1, 1, 1))
    struck = clean.clone()
    struck[:, 0, 0, 0] = 127  # a flipped sign bit's worth above channel 0's bound
    struck[:, 1, 1, 1] = -128  # below channel 1's
    return clean, struck


def test_bounds_map_to_codes_and_no_clean_code_falls_outside():
    low, high = quantized_bounds(LOW.numpy(), HIGH.numpy(), SCALE, ZP)
    assert low.dtype == np.int8 and list(low) == [-20, -70] and list(high) == [80, 5]
    clean, _ = clean_and_struck()
    guard = RangeGuard({LINK.id: (LOW, HIGH)}, quant={LINK.id: (SCALE, ZP)})
    out = guard.on_link(LINK, clean, Traffic(len(clean), {}))
    assert torch.equal(out, clean) and guard.clipped == 0


def test_the_local_guard_clips_int8_codes_to_the_quantized_bounds():
    _, struck = clean_and_struck()
    guard = RangeGuard({LINK.id: (LOW, HIGH)}, quant={LINK.id: (SCALE, ZP)})
    out = guard.on_link(LINK, struck, Traffic(len(struck), {}))
    assert out.dtype == torch.int8
    assert (out[:, 0, 0, 0] == 80).all() and (out[:, 1, 1, 1] == -70).all()
    assert guard.clipped == 2 * len(struck)
    assert bool(torch.cat(guard.flagged).all())


def test_the_worker_guard_clips_int8_codes_the_same_way():
    clean, struck = clean_and_struck()
    clip = Clip({"relu1": (LOW.numpy(), HIGH.numpy())}, quant={"relu1": (SCALE, ZP)})
    out = clip.on_receive("s0>s1", {"relu1": struck.numpy()})["relu1"]
    local = RangeGuard({LINK.id: (LOW, HIGH)}, quant={LINK.id: (SCALE, ZP)})
    assert out.dtype == np.int8
    assert np.array_equal(out, local.on_link(LINK, struck, Traffic(50, {})).numpy())
    assert clip.counters() == {"clipped": 100, "flagged": 50}
    assert np.array_equal(clip.on_receive("s0>s1", {"relu1": clean.numpy()})["relu1"],
                          clean.numpy())


def test_an_int8_tensor_without_its_scale_is_refused_not_clipped_as_floats():
    _, struck = clean_and_struck()
    with pytest.raises(ValueError, match="no scale and zero point"):
        RangeGuard({LINK.id: (LOW, HIGH)}).on_link(LINK, struck, Traffic(50, {}))
    with pytest.raises(ValueError, match="no scale and zero point"):
        Clip({"relu1": (LOW.numpy(), HIGH.numpy())}).on_receive("l", {"relu1": struck.numpy()})
