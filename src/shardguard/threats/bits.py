"""Real IEEE-754 float32 bit flips: at a bit-error rate over chosen bit positions, or exactly.

Bit 31 is the sign, bits 30..23 the exponent (30 the highest), bits 22..0 the
mantissa. Flips are applied to the float32 bit pattern itself (not to a
quantised copy), so an exponent flip can turn 0.5 into 1.7e38 exactly as a
memory or link fault would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

BIT_CLASSES: dict[str, tuple[int, ...]] = {
    "sign": (31,),
    "exponent": tuple(range(23, 31)),
    "exponent-high": (30,),
    "mantissa": tuple(range(0, 23)),
    "mantissa-high": tuple(range(16, 23)),
    "all": tuple(range(32)),
}


def bit_positions(bits: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"exponent"`` → (23, ..., 30); ``30`` → (30,); a list → itself (each in 0..31)."""
    if isinstance(bits, str):
        if bits not in BIT_CLASSES:
            raise ValueError(f"unknown bit class {bits!r} (known: {', '.join(BIT_CLASSES)})")
        return BIT_CLASSES[bits]
    positions = (bits,) if isinstance(bits, int) else tuple(bits)
    if not positions or any(not 0 <= b <= 31 for b in positions):
        raise ValueError(f"bit positions must be in 0..31, got {positions}")
    return positions


def flip_bits(x: torch.Tensor, ber: float, bits: str | int | Sequence[int] = "all",
              rng: np.random.Generator | None = None) -> torch.Tensor:
    """A copy of float32 ``x`` where each bit at ``bits`` flips with probability ``ber``.

    The number of flips is drawn from Binomial(n·|bits|, ber), then their places
    uniformly, so very low rates on large tensors cost almost nothing. Seeded by ``rng``.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"flip_bits needs float32, got {x.dtype}")
    rng = rng if rng is not None else np.random.default_rng()
    positions = np.asarray(bit_positions(bits), dtype=np.int64)
    total = x.numel() * len(positions)
    count = int(rng.binomial(total, ber)) if ber > 0 else 0
    if count == 0:
        return x.clone()
    slots = rng.integers(0, total, count)
    return flip_at(x, torch.from_numpy(slots // len(positions)),
                   torch.from_numpy(positions[slots % len(positions)]))


def flip_at(x: torch.Tensor, elements: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """A copy of float32 ``x`` with bit ``bits[i]`` of flat element ``elements[i]`` flipped.

    A bit flipped twice is restored, as it would be by two faults.
    """
    flat = x.detach().clone().contiguous().view(torch.int32).reshape(-1)
    pairs, counts = torch.unique(elements.to(torch.int64) * 32 + bits.to(torch.int64),
                                 return_counts=True)
    odd = pairs[counts % 2 == 1]
    if odd.numel():
        masks = torch.bitwise_left_shift(torch.ones_like(odd), odd % 32)
        combined = torch.zeros(flat.numel(), dtype=torch.int64).index_add_(0, odd // 32, masks)
        hit = combined.nonzero().squeeze(1)
        signed = combined[hit]
        signed = torch.where(signed >= 2**31, signed - 2**32, signed).to(torch.int32)
        flat[hit] = torch.bitwise_xor(flat[hit], signed)
    return flat.view(torch.float32).reshape(x.shape)
