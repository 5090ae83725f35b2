"""Threats acting for real on worker processes and on the bytes that cross the wire.

    result = run_under_threat(bound, threat, x)      # a StreamResult from real workers

* D1 crash: the device's worker is killed with SIGKILL while requests stream.
* D2 outage: SIGSTOP, then SIGCONT after ``seconds``.
* D3 straggler: the worker sleeps (k−1)× its compute time after each stage.
* D4 compromised (random, zero, scale, sign): the worker alters what it sends.
* L1–L4: an on-path attacker in the link's relay (the coordinator's hops included)
  rewrites, drops or replays the tensor frames it sees (``threats/distributed.py``).

D4 ``adversarial`` and L5 need gradients, D5 and L6 change stored state or train a
model; they stay in the local executor (their rows say ``execution: local``).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..partition.bind import Bound
from ..threats.spec import Compromised, Crash, Outage, Straggler, Threat, simulation_only
from .cluster import Cluster, StreamResult


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
