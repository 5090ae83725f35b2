"""Freivalds over the integers (M4 on int8 stages): exact, so the tolerance is zero.

    holds = check_matmul(a, w, acc, rounds=2, rng=rng)           # acc claims (a−za)(w−zw)
    holds = check_conv(x, w, acc, stride=1, padding=1, rng=rng)   # acc claims ConvInteger

An int8 kernel (onnxruntime's MatMulInteger / ConvInteger, the core of QLinearConv and
QLinearMatMul) accumulates (a − a_zero_point)·(w − w_zero_point) in int32 before it
rescales. Over the integers nothing rounds: a claimed accumulator ``acc`` is checked by
``<s, acc r> = <s, (a−za) ((w−zw) r)>`` in int64 (no overflow: a product of centred int8
values is below 2¹⁶, and K of them below 2⁶³ for any real K), with equality, not a bound. A
claim wrong by ``e`` ≠ 0 anywhere passes a round with probability at most 1/2 over ``r`` in
{0, 1}ⁿ (Freivalds 1977), ``2**-rounds`` over ``rounds`` rounds, with no false alarm ever. A
single wrong accumulator, off by one, is caught like any other lie.

Convolutions (groups 1) are checked per sample with a vector ``s`` over output channels:
``sᵀ acc[n] = (sᵀ W) cols(x[n])``, ``cols`` the input's patches, so a round costs
O·L + O·CK² + CK²·L multiply-adds instead of the layer's O·CK²·L. Wiring it into int8
stages (the claims of a quantized ONNX stage) comes with the int8 executor.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _centred(x: np.ndarray, zero_point: int) -> np.ndarray:
    return np.asarray(x, np.int64) - np.int64(zero_point)


def check_matmul(a: np.ndarray, w: np.ndarray, acc: np.ndarray, rounds: int = 2,
                 rng: np.random.Generator | None = None, a_zero_point: int = 0,
                 w_zero_point: int = 0) -> bool:
    """Whether the int32 accumulators ``acc`` (M, N) are (a − za)(w − zw) for int8 ``a``
    (M, K) and ``w`` (K, N): ``rounds`` Freivalds rounds, exact (tolerance zero)."""
    rng = rng if rng is not None else np.random.default_rng()
    a64, w64, acc64 = _centred(a, a_zero_point), _centred(w, w_zero_point), _centred(acc, 0)
    for _ in range(rounds):
        r = rng.integers(0, 2, acc64.shape[1], dtype=np.int64)
        if not np.array_equal(acc64 @ r, a64 @ (w64 @ r)):
            return False
    return True


def patches(x: np.ndarray, kernel: tuple[int, int], stride: int, padding: int) -> np.ndarray:
    """(N, C, H, W) → (N, C, H', W', kh, kw): the input under each output position."""
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(padded, kernel, axis=(2, 3))
    return windows[:, :, ::stride, ::stride]


def check_conv(x: np.ndarray, w: np.ndarray, acc: np.ndarray, stride: int = 1,
               padding: int = 0, rounds: int = 2, rng: np.random.Generator | None = None,
               x_zero_point: int = 0, w_zero_point: int = 0) -> bool:
    """Whether int32 ``acc`` (N, O, H', W') is the convolution of int8 ``x`` (N, C, H, W)
    by int8 ``w`` (O, C, kh, kw), zero points removed (padding adds the zero point, i.e.
    0 after centring), as ConvInteger computes it: exact Freivalds rounds."""
    rng = rng if rng is not None else np.random.default_rng()
    cols = patches(_centred(x, x_zero_point), w.shape[2:], stride, padding)
    w64, acc64 = _centred(w, w_zero_point), _centred(acc, 0)
    if cols.shape[2:4] != acc64.shape[2:]:
        return False  # not even the shape the layer makes
    for _ in range(rounds):
        s = rng.integers(0, 2, (len(x), w.shape[0]), dtype=np.int64)  # per sample
        claimed = np.einsum("no,nohw->nhw", s, acc64)
        u = np.einsum("no,ocij->ncij", s, w64)  # sᵀW, per sample
        if not np.array_equal(claimed, np.einsum("ncij,nchwij->nhw", u, cols)):
            return False
    return True
