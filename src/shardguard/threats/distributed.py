"""L1–L4 for real: an on-path attacker in a link's relay, on the bytes that cross the wire.

    Cluster(bound, spawn_local=True, attackers=[BitFlips(target="s0>s1", ber=1e-4)])

The coordinator puts a relay on each attacked link (the coordinator's hops included);
``RelayAttacker`` is its hook: it rewrites, drops or replays the tensor frames it
sees, with the same code the local executor uses (``ThreatInterceptor``), so
simulation and reality differ only in what is random. ``runtime/threatened.py``
runs every threat that can act on real workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import MalformedMessage
from ..hooks import Traffic
from ..partition.compile import Transfer
from ..protocol import wire
from .local import ThreatInterceptor
from .spec import Threat


class RelayAttacker:
    """A relay tamper hook that applies link threats to each message's tensor frames."""

    def __init__(self, threats: Sequence[Threat]) -> None:
        self.interceptors = [ThreatInterceptor(t) for t in threats]

    def __call__(self, frames: list[bytes]) -> list[list[bytes]] | None:
        try:
            header = wire.parse_header(frames[0])
        except MalformedMessage:
            return [frames]  # not a data message it understands: pass it on
        src, _, dst = header.link.partition(">")
        traffic = Traffic(header.tensors[0].shape[0] if header.tensors else 1, {})
        out = [frames[0]]
        body = frames[1:]
        for spec, frame in zip(header.tensors, body):
            # A sealed frame is the tensor's size in ciphertext, then a tag: the attacker
            # rewrites the same bytes it would in the clear (a stream cipher passes a bit
            # flip straight through), and leaves the tag as it is.
            dtype = np.dtype(spec.dtype).newbyteorder("<")
            nbytes = math.prod(spec.shape) * dtype.itemsize
            if len(frame) < nbytes:
                return [frames]  # not what its header says: the receiver will refuse it
            array = np.frombuffer(frame[:nbytes], dtype=dtype)
            value: torch.Tensor | None = torch.from_numpy(array.reshape(spec.shape).copy())
            transfer = Transfer(src, dst, spec.name.split(":", 1)[-1],
                                tuple((0, d) for d in spec.shape[1:]), array.itemsize)
            # an int8 tensor's zero point, where the header carries one (else 0: symmetric)
            zero_point = int(getattr(spec, "zero_point", 0) or 0)
            for interceptor in self.interceptors:
                assert value is not None
                interceptor.zero_points[transfer.id] = zero_point
                value = interceptor.on_link(transfer, value, traffic)
                if value is None:
                    return None
            assert value is not None
            out.append(value.numpy().astype(array.dtype, copy=False).tobytes() + frame[nbytes:])
        out.extend(body[len(header.tensors):])  # a MAC's tag frame
        if any(bool(lost.any()) for lost in traffic.lost.values()):
            return None  # the message is lost whole
        return [out]
