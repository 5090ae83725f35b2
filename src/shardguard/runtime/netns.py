"""Real network stacks for one run: every member in a network namespace of its own.

    with Namespaces(["coordinator", "pi1", "pi2"], platform.medium) as net:
        net.address["pi1"]                   # "10.88.0.3", pi1's own address
        net.command("pi1", [sys.executable, "-m", "shardguard.runtime.worker", ...])
        with net.inside("coordinator"):      # this thread's new sockets live there
            ...

``run --network namespaces`` (``Cluster(..., network="namespaces")``). As root, with
``ip``, ``tc`` and ``nft``, a run gets:

* a hub namespace ``sg-PID-hub`` holding a bridge, and one namespace per member
  (``sg-PID-I-NAME``), each with ``lo`` and an ``eth0`` joined to the bridge by a veth
  pair (hub side ``sg-PID-I``), on 10.88.0.0/24: nothing is added to the root namespace;
* each device's link shaped to the medium's bandwidth by ``tc tbf``, both ways (its
  ``eth0`` for what it sends, the hub side for what it receives: a switch port); the
  coordinator's own link is not shaped, it is no device of the platform;
* the medium's loss as an nftables rule in each device's namespace dropping the packets
  that arrive on its link at random (``numgen random``), as a lossy wire would (TCP
  retransmits them); what the coordinator receives is not dropped;
* latency, which needs netem and this kernel has none, from the coordinator's relays
  (``relay.py``), which then carry latency only: bandwidth and loss are the kernel's.

Everything is removed when the block ends, by an exception or Ctrl-C/SIGTERM too:
processes still inside the namespaces are killed, then the namespaces go, and their
veths, bridge and nftables tables with them. A run killed outright (SIGKILL) leaves its
namespaces; the next run's ``sweep`` removes those whose process is gone.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any, Literal, Protocol

from ..errors import ConfigError, TransportError

__all__ = ["Namespaces", "Network", "check_available", "sweep", "uniform_link"]

Network = Literal["loopback", "namespaces"]
SUBNET = "10.88.0"  # one bridge per run, in its own hub: runs never see each other's
NETNS_DIR = "/run/netns"
LOSS_SCALE = 1_000_000  # loss drawn as numgen random mod LOSS_SCALE < loss * LOSS_SCALE
_CLONE_NEWNET = 0x40000000
_OURS = re.compile(r"^sg-(\d+)-")


class _LinkFigures(Protocol):
    @property
    def bandwidth_bps(self) -> float: ...
    @property
    def loss(self) -> float: ...


class _Platform(Protocol):
    @property
    def medium(self) -> Any: ...
    @property
    def overrides(self) -> dict[frozenset[str], Any]: ...


def uniform_link(platform: _Platform) -> Any:
    """The platform's medium, which every device's link is shaped to: ``ConfigError`` if a
    per-pair link has another bandwidth or loss (a device has one shaped link; latencies may
    differ per pair: the relays add them)."""
    medium = platform.medium
    for pair, link in platform.overrides.items():
        if (link.bandwidth_bps, link.loss) != (medium.bandwidth_bps, medium.loss):
            raise ConfigError(f"--network namespaces shapes each device's link to the medium; "
                              f"the link {' - '.join(sorted(pair))} has its own bandwidth or "
                              "loss: use --network loopback --emulate-links for this platform")
    return medium


def check_available() -> None:
    """``ConfigError`` in one line unless this process can make namespaces (root, tools)."""
    if os.geteuid() != 0:
        raise ConfigError("--network namespaces needs root (it creates network namespaces); "
                          "run as root or use --network loopback")
    missing = [tool for tool in ("ip", "tc", "nft") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(f"--network namespaces needs {', '.join(missing)} (packages iproute2 "
                          "and nftables); install them or use --network loopback")


def _run(*argv: str, stdin: str | None = None) -> str:
    """One ``ip``/``tc``/``nft`` command; its failure as one ``TransportError`` line."""
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TransportError(f"network set-up: {' '.join(argv)}: {exc}") from exc
    if done.returncode:
        why = [line for line in (done.stderr or done.stdout).splitlines() if "rror" in line]
        raise TransportError(f"network set-up: {' '.join(argv)} failed: "
                             f"{why[0].strip() if why else f'exit {done.returncode}'}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(namespace: str) -> None:
    """Kill what runs inside ``namespace``, then delete it (its links and rules go with it)."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                          timeout=30).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _run("ip", "netns", "del", namespace)


def sweep() -> list[str]:
    """Remove the namespaces of runs whose process no longer exists; their names."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=30).stdout.split("\n")
    stale = [line.split()[0] for line in listed if line.strip()]
    stale = [n for n in stale if (m := _OURS.match(n)) and int(m[1]) != os.getpid()
             and not _alive(int(m[1]))]
    for namespace in sorted(stale, key=lambda n: n.endswith("-hub")):  # the hub last
        _remove(namespace)
    return stale


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(path: str | int) -> None:
    fd = os.open(path, os.O_RDONLY) if isinstance(path, str) else path
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            raise TransportError(f"network set-up: setns({path}): "
                                 f"{os.strerror(ctypes.get_errno())}")
    finally:
        if isinstance(path, str):
            os.close(fd)


class Namespaces:
    """One run's namespaces, bridge, shaping and loss rules; see the module docstring."""

    def __init__(self, members: Sequence[str], link: _LinkFigures) -> None:
        if len(members) > 250:
            raise ConfigError(f"--network namespaces: at most 250 members, got {len(members)}")
        self.link = link
        self.prefix = f"sg-{os.getpid()}"
        self.hub = f"{self.prefix}-hub"
        self.namespace = {m: f"{self.prefix}-{i}-{m}" for i, m in enumerate(members)}
        self.address = {m: f"{SUBNET}.{i + 1}" for i, m in enumerate(members)}
        self.created: list[str] = []
        self._signals: dict[int, Any] = {}

    # -- set-up -------------------------------------------------------------------------------
    def __enter__(self) -> Namespaces:
        check_available()
        sweep()
        self._catch_sigterm()
        try:
            self._hub()
            for i, member in enumerate(self.namespace):
                self._member(i, member, shaped=i > 0)  # the first member: the coordinator
        except BaseException:
            self.close()
            raise
        return self

    def _hub(self) -> None:
        _run("ip", "netns", "add", self.hub)
        self.created.append(self.hub)
        _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.hub, "link", "set", "br0", "up")

    def _member(self, i: int, member: str, shaped: bool) -> None:
        ns, veth = self.namespace[member], f"{self.prefix}-{i}"
        _run("ip", "netns", "add", ns)
        self.created.append(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", self.hub, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
             "netns", ns)
        _run("ip", "-n", self.hub, "link", "set", veth, "master", "br0", "up")
        _run("ip", "-n", ns, "addr", "add", f"{self.address[member]}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        if shaped and self.link.bandwidth_bps < 1e12:
            for where, dev in ((ns, "eth0"), (self.hub, veth)):  # what it sends; receives
                _run("tc", "-n", where, "qdisc", "add", "dev", dev, "root",
                     *_tbf(self.link.bandwidth_bps))
        if shaped and self.link.loss > 0:
            below = round(self.link.loss * LOSS_SCALE)
            _run("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=(
                "table inet shardguard_loss { chain in { type filter hook input priority 0; "
                f'policy accept; iifname "eth0" numgen random mod {LOSS_SCALE} < {below} '
                "drop; }; }\n"))

    def _catch_sigterm(self) -> None:
        """SIGTERM ends the run as Ctrl-C does, so that ``close`` runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        self._signals[signal.SIGTERM] = signal.signal(signal.SIGTERM, stop)

    # -- use ----------------------------------------------------------------------------------
    def command(self, member: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``member``'s namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace[member], *argv]

    @contextmanager
    def inside(self, member: str) -> Iterator[None]:
        """This thread in ``member``'s namespace for the block (sockets made in it stay)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(f"{NETNS_DIR}/{self.namespace[member]}")
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)

    # -- teardown -----------------------------------------------------------------------------
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(raise_errors=kind is None)

    def close(self, raise_errors: bool = False) -> None:
        """Everything this run made, removed (Ctrl-C and SIGTERM ignored until it is done)."""
        held: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            held = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
            held.update(self._signals)  # back to what they were before this run
            self._signals = {}
        failed: list[TransportError] = []
        try:
            for ns in sorted(self.created, key=lambda n: n == self.hub):  # the hub last
                try:
                    _remove(ns)
                except TransportError as exc:
                    failed.append(exc)
            self.created = []
        finally:
            for signum, handler in held.items():
                signal.signal(signum, handler)
        if failed and raise_errors:
            raise failed[0]


def _tbf(bandwidth_bps: float) -> list[str]:
    """``tc`` arguments of a token bucket at ``bandwidth_bps``: a burst of 1 ms of traffic,
    at least one full frame (an idle link sends that much at once, the rest at the rate),
    and a queue of at most 200 ms before it drops."""
    burst = max(1_600, int(bandwidth_bps / 8 * 0.001))
    return ["tbf", "rate", f"{int(bandwidth_bps)}bit", "burst", str(burst), "latency", "200ms"]
