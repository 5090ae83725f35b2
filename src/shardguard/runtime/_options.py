"""How a ``Cluster`` runs: its keywords as one typed, checked record.

    options = ClusterOptions(spawn_local=True, vote=3)
    with Cluster.from_options(bound, options) as c:      # or Cluster(bound, spawn_local=True, …)
        ...

Checks that need only the options run here, in the order ``Cluster`` always ran
them; those that need the plan (replicas for voting, a verifier's device, a worker
address per device) run when the coordinator is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..protocol.control import MAX_ATTEMPTS, POLICIES
from .netns import Network
from .relay import Tamper


@dataclass
class ClusterOptions:
    """The keywords of ``Cluster(bound, ...)``; see the module docstring."""

    workers: dict[str, str] | None = None
    """Device → control address (``tcp://HOST:PORT``) of a worker already running."""
    spawn_local: bool = False
    """Start one worker process per device on this machine instead."""
    keys: Path | None = None
    """The key directory; None: fresh keys in a temporary one (spawned workers only)."""
    window: int = 32
    """Requests in flight at once."""
    deadline_s: float = 10.0
    """How long a request may go unanswered before it is resubmitted or fails."""
    max_attempts: int = MAX_ATTEMPTS
    """Submissions of one request, the first included, before it fails."""
    emulate_links: bool = False
    """Carry every link through a relay with the platform's latency, bandwidth and loss."""
    threads: int = 1
    """onnxruntime threads in each spawned worker."""
    advertise: str = "127.0.0.1"
    """The host the coordinator's result port binds to: workers must reach it there."""
    seed: int = 0
    """Seed of the emulated links' losses."""
    attackers: Sequence[Any] = ()
    """Link threats, each acting in the relays of the links it targets."""
    on_reject: str = "failover"
    """What a rejected message does to its request (``protocol.POLICIES``): drop (fail
    it), retry, failover (retry, avoiding the sender for a while) or degrade (the
    receiver fills the piece)."""
    guards: dict[str, tuple[Any, Any]] | None = None
    """M5: link tensor → its clean per-channel (low, high), as
    ``defences.guards.profile_bounds`` finds them; kept as float32 lists."""
    vote: int = 1
    """M4: copies of every stage, compared by whoever receives them: 1 (off), 2 (detect
    a disagreement) or 3 (outvote one bad copy)."""
    freivalds: int = 0
    """M4: Freivalds rounds a verifier stage on another device checks (0: off)."""
    taps: dict[str, Sequence[Tamper]] | None = None
    """Link → on-path hooks in its relays (tests, red teams)."""
    fault_injection: bool = False
    """Start spawned workers with ``--allow-fault-injection``, so they obey ``behave``."""
    network: Network = "loopback"
    """Where spawned workers talk: ``loopback``, or ``namespaces`` (root): each worker and
    the coordinator in a network namespace of its own on the platform's shaped links
    (``netns.py``); it spawns the workers itself."""

    def __post_init__(self) -> None:
        if self.network not in ("loopback", "namespaces"):
            raise ConfigError(f"network must be loopback or namespaces, got {self.network!r}")
        if self.network == "namespaces":
            if self.workers:
                raise ConfigError("--network namespaces starts its own workers in namespaces: "
                                  "give no --workers")
            if self.emulate_links:
                raise ConfigError("--network namespaces shapes the links in the kernel: "
                                  "drop --emulate-links")
            self.spawn_local = True
        if not self.spawn_local and not self.workers:
            raise ConfigError("give worker addresses (--workers) or spawn them locally")
        if self.on_reject not in POLICIES:
            raise ConfigError(f"on_reject must be one of {', '.join(POLICIES)}, "
                              f"got {self.on_reject!r}")
        self.guards = {name: (np.asarray(low, np.float32).tolist(),
                              np.asarray(high, np.float32).tolist())
                       for name, (low, high) in (self.guards or {}).items()}
        if self.vote not in (1, 2, 3):
            raise ConfigError(f"vote must be 1 (off), 2 (detect) or 3 (mask), got {self.vote}")
        if self.freivalds and self.vote > 1:
            raise ConfigError("voting and Freivalds checks both guard against a compromised "
                              "device: choose one")

    def keywords(self) -> dict[str, Any]:
        """These options as ``Cluster``'s keywords."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
