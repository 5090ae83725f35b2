"""Reading IDX files (the MNIST family's format), with every field validated.

Format (big-endian): two zero bytes, a type code, the number of dimensions,
one uint32 per dimension, then the data. Only unsigned bytes (type 0x08) are
accepted: that is what every MNIST-family file uses.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

_UBYTE = 0x08


def read_idx(path: Path, *, ndim: int, count: int | None = None,
             shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read one (optionally gzipped) IDX file of unsigned bytes.

    ``ndim`` is the number of dimensions the file must declare; ``count`` the
    number of items (first dimension) and ``shape`` the item shape it must hold,
    when given. Any mismatch raises ``DataError`` naming the file.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype_code, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != _UBYTE or dims != ndim:
        magic = int.from_bytes(raw[:4], "big")
        expected = (_UBYTE << 8) | ndim
        raise DataError(f"{path}: bad magic number 0x{magic:08x}, expected 0x{expected:08x}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path}: truncated header")
    sizes = struct.unpack(f">{dims}I", raw[4:header])
    if count is not None and sizes[0] != count:
        raise DataError(f"{path}: holds {sizes[0]} items, expected {count}")
    if shape is not None and tuple(sizes[1:]) != shape:
        raise DataError(f"{path}: items of shape {tuple(sizes[1:])}, expected {shape}")
    expected_bytes = header + int(np.prod(sizes))
    if len(raw) != expected_bytes:
        raise DataError(f"{path}: {len(raw)} bytes after decompression, expected {expected_bytes}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(sizes)
