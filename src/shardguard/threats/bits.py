"""Real bit flips, in float32 (IEEE-754) or int8 (two's complement) values: at a bit-error
rate over chosen bit positions, or exactly.

float32: bit 31 is the sign, bits 30..23 the exponent (30 the highest), bits 22..0 the
mantissa. Flips are applied to the float32 bit pattern itself (not to a quantised
copy), so an exponent flip can turn 0.5 into 1.7e38 exactly as a memory or link fault
would.

int8 (a quantized tensor or weight, stored as q with value (q − zero point) · scale): 8
bits an element. Bit 7 is the sign bit, worth −128 in two's complement, so flipping it
moves q by 128; ``msb`` is bit 6, the highest magnitude bit (±64); ``lsb`` bit 0 (±1).
The classes of one type make no sense on the other (an int8 value has no exponent):
asking for them is a ``ConfigError`` naming both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ConfigError

BIT_CLASSES: dict[str, tuple[int, ...]] = {
    "sign": (31,),
    "exponent": tuple(range(23, 31)),
    "exponent-high": (30,),
    "mantissa": tuple(range(0, 23)),
    "mantissa-high": tuple(range(16, 23)),
    "all": tuple(range(32)),
}
INT8_BIT_CLASSES: dict[str, tuple[int, ...]] = {
    "sign": (7,), "msb": (6,), "lsb": (0,), "all": tuple(range(8)),
}
WIDTH = {torch.float32: 32, torch.int8: 8}  # bits an element
_AS_BITS = {torch.float32: torch.int32, torch.int8: torch.uint8}  # the view flips act on


def bit_positions(bits: str | int | Sequence[int], dtype: str = "float32") -> tuple[int, ...]:
    """``"exponent"`` → (23, ..., 30); ``30`` → (30,); a list → itself (each in 0..31 for
    float32, 0..7 for int8). Without ``dtype`` "any": a class or position of either type."""
    classes = INT8_BIT_CLASSES if dtype == "int8" else BIT_CLASSES
    width = 8 if dtype == "int8" else 32
    if isinstance(bits, str):
        if dtype == "any" and bits in INT8_BIT_CLASSES:
            return INT8_BIT_CLASSES[bits]
        if bits in classes:
            return classes[bits]
        if dtype == "int8" and bits in BIT_CLASSES:
            raise ConfigError(f"bit class {bits!r} is for float32 values; an int8 tensor has "
                              f"{', '.join(INT8_BIT_CLASSES)} or positions 0..7")
        if dtype != "int8" and bits in INT8_BIT_CLASSES:
            raise ConfigError(f"bit class {bits!r} is for int8 values; a float32 tensor has "
                              f"{', '.join(BIT_CLASSES)} or positions 0..31")
        known = ", ".join(dict.fromkeys([*BIT_CLASSES, *INT8_BIT_CLASSES]))
        raise ValueError(f"unknown bit class {bits!r} (known: {known})")
    positions = (bits,) if isinstance(bits, int) else tuple(bits)
    if not positions or any(not 0 <= b <= 31 for b in positions):
        raise ValueError(f"bit positions must be in 0..31, got {positions}")
    if any(b >= width for b in positions):
        raise ConfigError(f"bit positions {positions} do not fit an int8 value (0..7)")
    return positions


def dtype_name(x: torch.Tensor) -> str:
    """``float32`` or ``int8``: the two types bits flip in (others are a TypeError)."""
    if x.dtype not in WIDTH:
        raise TypeError(f"bits flip in float32 or int8 tensors, got {x.dtype}")
    return str(x.dtype).removeprefix("torch.")


def flip_bits(x: torch.Tensor, ber: float, bits: str | int | Sequence[int] = "all",
              rng: np.random.Generator | None = None) -> torch.Tensor:
    """A copy of ``x`` (float32 or int8) where each bit at ``bits`` flips with probability
    ``ber``.

    The number of flips is drawn from Binomial(n·|bits|, ber), then their places
    uniformly, so very low rates on large tensors cost almost nothing. Seeded by ``rng``.
    """
    rng = rng if rng is not None else np.random.default_rng()
    positions = np.asarray(bit_positions(bits, dtype_name(x)), dtype=np.int64)
    total = x.numel() * len(positions)
    count = int(rng.binomial(total, ber)) if ber > 0 else 0
    if count == 0:
        return x.clone()
    slots = rng.integers(0, total, count)
    return flip_at(x, torch.from_numpy(slots // len(positions)),
                   torch.from_numpy(positions[slots % len(positions)]))


def flip_at(x: torch.Tensor, elements: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` (float32 or int8) with bit ``bits[i]`` of flat element
    ``elements[i]`` flipped.

    A bit flipped twice is restored, as it would be by two faults.
    """
    dtype_name(x)  # float32 or int8
    width = WIDTH[x.dtype]
    flat = x.detach().clone().contiguous().view(_AS_BITS[x.dtype]).reshape(-1)
    pairs, counts = torch.unique(elements.to(torch.int64) * width + bits.to(torch.int64),
                                 return_counts=True)
    odd = pairs[counts % 2 == 1]
    if odd.numel():
        masks = torch.bitwise_left_shift(torch.ones_like(odd), odd % width)
        combined = torch.zeros(flat.numel(), dtype=torch.int64).index_add_(0, odd // width,
                                                                            masks)
        hit = combined.nonzero().squeeze(1)
        signed = combined[hit]
        if width == 32:
            signed = torch.where(signed >= 2**31, signed - 2**32, signed)
        flat[hit] = torch.bitwise_xor(flat[hit], signed.to(flat.dtype))
    return flat.view(x.dtype).reshape(x.shape)


def flip_array(a: np.ndarray, ber: float, bits: str | int | Sequence[int] = "all",
               rng: np.random.Generator | None = None) -> np.ndarray:
    """``flip_bits`` on a numpy array (an ONNX initializer, a tensor a worker holds)."""
    flipped: np.ndarray = flip_bits(torch.from_numpy(np.array(a, copy=True)), ber, bits,
                                    rng).numpy()
    return flipped
