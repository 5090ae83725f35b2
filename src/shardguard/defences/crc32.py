"""check:crc32 — a CRC-32 over each message, against accidental corruption on a link.

    shardguard plan ... --protection check:crc32

The tag frame is zlib's CRC-32 over the header, the sequence number and every
tensor frame (each with its length), so a flipped bit anywhere in the message is
caught at the receiver, which rejects the message and raises an alarm. It has no
key: an attacker on the link can recompute it, so it detects faults (a bad cable,
a flaky radio, ``behave garble_wire``), not tampering — use a MAC or an AEAD for
that. Its cost is the devices' ``crypto_cycles_per_byte.crc32`` figure; no built-in
profile has one (none is sourced), so a platform that prices it gives its own.

The whole defence is this module and its line in ``protections.py``: the local
executor's sealed-link model, the workers' and the coordinator's sealing, and the
cost model pick it up from there.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

Buffer = bytes | bytearray | memoryview


def tag(key: bytes, header: bytes, seq: int, frames: Sequence[Buffer]) -> bytes:
    """The 4-byte tag frame of one message (``key`` is empty: the check is keyless)."""
    crc = zlib.crc32(struct.pack(">IQI", len(header), seq, len(frames)))
    crc = zlib.crc32(header, crc)
    for frame in frames:
        view = memoryview(frame).cast("B")
        crc = zlib.crc32(view, zlib.crc32(struct.pack(">Q", view.nbytes), crc))
    return struct.pack(">I", crc)
