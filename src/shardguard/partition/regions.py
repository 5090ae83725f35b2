"""Regions of per-sample tensors and the receptive-field arithmetic of fused tiles.

A region is one ``(start, stop)`` per non-batch dimension, e.g. ``((0, 64), (0, 14),
(7, 28))`` for channels, rows and columns of a (C, H, W) tensor. Which input region
a layer needs for a given output region follows from its kernel, stride,
padding and dilation; regions may extend past the tensor (into padding) before
they are clipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TypeVar

Region = tuple[tuple[int, int], ...]
T = TypeVar("T")


def full(shape: Sequence[int]) -> Region:
    """The whole of a per-sample tensor of ``shape`` (no batch dimension)."""
    return tuple((0, int(d)) for d in shape)


def sizes(region: Region) -> tuple[int, ...]:
    return tuple(b - a for a, b in region)


def numel(region: Region) -> int:
    return math.prod(sizes(region))


def intersect(a: Region, b: Region) -> Region | None:
    out = tuple((max(x0, y0), min(x1, y1)) for (x0, x1), (y0, y1) in zip(a, b))
    return out if all(s < e for s, e in out) else None


def hull(regions: Iterable[Region]) -> Region:
    regions = list(regions)
    return tuple((min(r[i][0] for r in regions), max(r[i][1] for r in regions))
                 for i in range(len(regions[0])))


def clip(region: Region, shape: Sequence[int]) -> Region:
    return tuple((max(a, 0), min(b, int(d))) for (a, b), d in zip(region, shape))


def contains(outer: Region, inner: Region) -> bool:
    return all(o0 <= i0 and i1 <= o1 for (o0, o1), (i0, i1) in zip(outer, inner))


def relative(inner: Region, outer: Region) -> Region:
    """``inner`` in the coordinates of a tensor that covers ``outer``."""
    return tuple((i0 - o0, i1 - o0) for (i0, i1), (o0, _) in zip(inner, outer))


def crop(x: T, have: Region, want: Region) -> T:
    """Cut a batched array or tensor that covers ``have`` down to ``want`` (no copy)."""
    if have == want:
        return x
    if not contains(have, want):
        raise ValueError(f"region {want} is not inside {have}")
    rel = relative(want, have)
    return x[(slice(None), *[slice(a, b) for a, b in rel])]  # type: ignore[index, no-any-return]


def window_input(out: tuple[int, int], kernel: int, stride: int, padding: int,
                 dilation: int) -> tuple[int, int]:
    """Input span (unclipped, in unpadded coordinates) a sliding window needs for output span."""
    start, stop = out
    return start * stride - padding, (stop - 1) * stride - padding + dilation * (kernel - 1) + 1


def split_evenly(length: int, weights: Sequence[float]) -> list[tuple[int, int]]:
    """Split ``range(length)`` into contiguous spans proportional to ``weights`` (none empty)."""
    if len(weights) > length:
        raise ValueError(f"cannot split {length} into {len(weights)} non-empty parts")
    total = float(sum(weights))
    bounds = [0]
    acc = 0.0
    for w in weights[:-1]:
        acc += w
        bounds.append(round(length * acc / total))
    bounds.append(length)
    # keep every span non-empty
    for i in range(1, len(bounds)):
        bounds[i] = max(bounds[i], bounds[i - 1] + 1)
    bounds[-1] = length
    for i in range(len(bounds) - 2, 0, -1):
        bounds[i] = min(bounds[i], bounds[i + 1] - 1)
    return [(bounds[i], bounds[i + 1]) for i in range(len(weights))]
