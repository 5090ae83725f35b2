"""Issue 15, point 3: Freivalds on integer arithmetic is exact. The int8 check holds with
tolerance zero on honest int32 accumulators, and catches one accumulator off by one."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from shardguard.defences._freivalds_int import check_conv, check_matmul


def int8(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(-128, 128, shape).astype(np.int8)


def test_an_int8_matmul_checks_exactly_and_one_wrong_accumulator_is_caught():
    rng = np.random.default_rng(0)
    a, w, za, zw = int8(rng, 16, 300), int8(rng, 300, 24), 5, -3
    acc = ((a.astype(np.int64) - za) @ (w.astype(np.int64) - zw)).astype(np.int32)
    assert check_matmul(a, w, acc, rounds=30, rng=rng, a_zero_point=za, w_zero_point=zw)
    wrong = acc.copy()
    wrong[7, 11] += 1  # one accumulator off by one: a float check's tolerance would hide it
    assert not check_matmul(a, w, wrong, rounds=30, rng=rng, a_zero_point=za,
                            w_zero_point=zw)
    # one round catches it with probability 1/2 (Freivalds): over 400 rounds, 200 ± 5 sd
    caught = sum(not check_matmul(a, w, wrong, rounds=1, rng=rng, a_zero_point=za,
                                  w_zero_point=zw) for _ in range(400))
    assert abs(caught - 200) < 5 * 10


def test_an_int8_convolution_checks_exactly_and_one_wrong_accumulator_is_caught():
    rng = np.random.default_rng(1)
    x, w, zx = int8(rng, 2, 3, 9, 9), int8(rng, 4, 3, 3, 3), 10
    # the reference: in float64 every integer here is exact (|acc| < 2^53)
    ref = F.conv2d(torch.from_numpy(x.astype(np.float64) - zx),
                   torch.from_numpy(w.astype(np.float64)), stride=2, padding=1)
    acc = ref.numpy().astype(np.int32)
    assert check_conv(x, w, acc, stride=2, padding=1, rounds=30, rng=rng, x_zero_point=zx)
    wrong = acc.copy()
    wrong[1, 2, 3, 4] -= 1
    assert not check_conv(x, w, wrong, stride=2, padding=1, rounds=30, rng=rng,
                          x_zero_point=zx)
    assert not check_conv(x, w, acc[:, :, :-1], stride=2, padding=1, rng=rng,
                          x_zero_point=zx)  # a claim of the wrong shape
