"""Threats acting for real on worker processes and on the bytes that cross the wire.

    result = run_under_threat(bound, threat, x)      # a StreamResult from real workers

* D1 crash: the device's worker is killed with SIGKILL while requests stream.
* D2 outage: SIGSTOP, then SIGCONT after ``seconds``.
* D3 straggler: the worker sleeps (k−1)× its compute time after each stage.
* D4 compromised (random, zero, scale, sign): the worker alters what it sends.
* L1–L4: an on-path attacker in the link's relay (the coordinator's hops included)
  rewrites, drops or replays the tensor frames it sees — with the same code the local executor uses
  (``ThreatInterceptor``), so simulation and reality differ only in what is random.

D4 ``adversarial`` and L5 need gradients, D5 and L6 change stored state or train a
model; they stay in the local executor (their rows say ``execution: local``).
"""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, MalformedMessage
from ..partition.bind import Bound
from ..partition.compile import Transfer
from ..runtime import wire
from ..runtime.cluster import Cluster, StreamResult
from ..runtime.local import Traffic
from .local import ThreatInterceptor
from .spec import Compromised, Crash, Outage, Straggler, Threat, simulation_only


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
            for interceptor in self.interceptors:
                assert value is not None
                value = interceptor.on_link(transfer, value, traffic)
                if value is None:
                    return None
            assert value is not None
            out.append(value.numpy().astype(array.dtype, copy=False).tobytes() + frame[nbytes:])
        out.extend(body[len(header.tensors):])  # a MAC's tag frame
        if any(bool(lost.any()) for lost in traffic.lost.values()):
            return None  # the message is lost whole
        return [out]


def run_under_threat(bound: Bound, threat: Threat, x: np.ndarray | Any, *, at_request: int = 0,
                     deadline_s: float = 5.0, max_attempts: int = 1, window: int = 16,
                     **cluster: Any) -> StreamResult:
    """Stream ``x`` (one image per request) through spawned workers while ``threat`` acts."""
    if simulation_only(threat):
        raise ConfigError(f"{threat.id} cannot act on real workers; use the local executor")
    link_threats = [threat] if threat.on_link else []
    with Cluster(bound, spawn_local=True, deadline_s=deadline_s, max_attempts=max_attempts,
                 window=window, attackers=link_threats,
                 fault_injection=isinstance(threat, (Straggler, Compromised)), **cluster) as c:
        devices = [d for d in c.handles if threat.target in ("every", d)]
        if isinstance(threat, Straggler):
            for d in devices:
                c.behave(d, slow=threat.factor)
        elif isinstance(threat, Compromised):
            for d in devices:
                c.behave(d, corrupt=threat.mode, factor=threat.factor, seed=threat.seed)
        hook = None
        if isinstance(threat, (Crash, Outage)):
            pids = [c.handles[d].process.pid for d in devices  # type: ignore[union-attr]
                    if c.handles[d].process is not None]

            def hook(index: int) -> None:
                if index != at_request:
                    return
                for pid in pids:
                    os.kill(pid, signal.SIGKILL if isinstance(threat, Crash) else signal.SIGSTOP)
                if isinstance(threat, Outage):
                    def resume() -> None:
                        for p in pids:
                            os.kill(p, signal.SIGCONT)

                    timer = threading.Timer(threat.seconds, resume)
                    timer.daemon = True
                    timer.start()

        return c.stream(np.asarray(x, dtype=np.float32), show_progress=False, on_request=hook)
