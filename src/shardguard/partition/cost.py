"""The cost model: latency, throughput, memory and energy per device of a compiled plan.

Per stage: compute time = the device's fixed time per stage run (``stage_s``) + MACs /
its effective MAC rate (per layer type, for the types the device has a rate for:
``Device.rate_for``); crypto time = protected bytes × cycles per byte / clock + a fixed
time per message (``crypto_fixed_s``), paid by the sender (seal) and the receiver
(open); message time = the device's fixed time per message (``message_s``), paid by both
ends as well. Per transfer: link time = latency + bytes / bandwidth + the software's
latency per hop (``hop_s``, the device end's; zero between stages on one device). The
coordinator is priced as the devices it talks to (on a ``host`` platform it runs on this
machine): its sealing and opening as theirs, and its work per message it sends or
receives (``coordinator_s``), which it is busy with, not the hop (whose ``hop_s``
includes the coordinator's framing where it was measured). End-to-end latency is the
critical path of one request (stages on one device run one at a time). When requests
stream, the period is the busiest resource: a device's compute + crypto + messages, the
coordinator, or a link's serialisation time (a shared medium carries all transfers);
and, for the ``host`` devices (worker processes on this machine, with the coordinator),
their busy time together over this machine's cores (``host_share_s``). Bytes are those
actually sent: a tensor out of an int8 stage, 1 byte an element; int8 stages compute at
the device's ``int8_mac_rate``. The figures other
than MACs and bytes are zero unless measured (``host``). Per device and inference,
energy = active power × busy time + radio energy per byte sent and received + idle power
× the rest of the period. *Active* energy (compute, crypto, radio) is what the planners
minimise; idle energy depends on the period and is reported beside it. The platform's
boards that the plan does not use are powered all the same: each pays idle power for the
whole period (``idle_boards``), and ``total_energy_j`` is the platform's, theirs
included.

Replicas are on standby (failover): they cost memory, not time. With ``vote=k``
the first ``k`` devices of each stage (its device, then its replicas) all run it,
as the workers do for M4 voting: every copy computes, receives its inputs from
every copy of the stages before (the coordinator sends the input to each copy of
the first stages), and sends its outputs to every copy of the stages after (the
coordinator receives each copy of the last stages' outputs); each such message
is sealed by its sender and opened by its receiver, and crosses the link. A
receiver starts once every copy's message is in (the worst case: a masking vote
may go on with two agreeing copies).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field

from ..errors import PlanningError
from ..platform import Device, Platform
from ..platform.host import host_cores
from .compile import INPUT, OUTPUT, CompiledPlan, StageProgram, Transfer

SOURCE = "source"  # where inputs come from and outputs go: across the platform's medium


def algorithm(protection: str) -> str:
    """``"aead:aes-128-gcm"`` → ``"aes-128-gcm"``; ``"none"`` → ``"none"``."""
    return protection.split(":", 1)[1] if ":" in protection else protection


@dataclass
class DeviceCost:
    device: str
    stages: list[str]
    replicas: list[str]
    compute_s: float = 0.0
    crypto_s: float = 0.0
    message_s: float = 0.0  # fixed per-message work (framing, sockets), both ends
    bytes_sent: int = 0
    bytes_received: int = 0
    memory_bytes: int = 0
    memory_limit: float = 0.0
    compute_j: float = 0.0
    crypto_j: float = 0.0
    radio_j: float = 0.0
    idle_j: float = 0.0

    @property
    def busy_s(self) -> float:
        return self.compute_s + self.crypto_s + self.message_s

    @property
    def active_j(self) -> float:
        return self.compute_j + self.crypto_j + self.radio_j

    @property
    def energy_j(self) -> float:
        return self.active_j + self.idle_j


@dataclass
class TransferCost:
    """One link's message per request: every tensor piece from one stage to another."""

    src: str  # stage, or "input"
    dst: str  # stage, or "output"
    tensors: list[Transfer]
    nbytes: int
    src_device: str
    dst_device: str
    protection: str
    seconds: float  # latency + serialisation
    occupancy_s: float  # serialisation only (what limits throughput)


@dataclass
class PlanCost:
    latency_s: float
    period_s: float
    devices: dict[str, DeviceCost]
    transfers: list[TransferCost]
    stage_compute_s: dict[str, float]
    stage_finish_s: dict[str, float] = field(default_factory=dict)
    stage_start_s: dict[str, float] = field(default_factory=dict)
    #: platform devices the plan does not use → their idle energy over the period (J)
    idle_boards: dict[str, float] = field(default_factory=dict)
    #: the ``host`` devices' and the coordinator's busy time over this machine's cores
    host_share_s: float = 0.0
    coordinator_busy_s: float = 0.0  # the coordinator's work per inference

    @property
    def throughput(self) -> float:
        return 1.0 / self.period_s if self.period_s > 0 else float("inf")

    @property
    def max_active_j(self) -> float:
        return max(d.active_j for d in self.devices.values())

    @property
    def total_active_j(self) -> float:
        return sum(d.active_j for d in self.devices.values())

    @property
    def total_energy_j(self) -> float:
        """The whole platform's energy per inference: every used device's active and idle
        energy, and the idle energy of the boards the plan leaves unused."""
        return sum(d.energy_j for d in self.devices.values()) + sum(self.idle_boards.values())

    def objective(self, name: str) -> float:
        return {"latency": self.latency_s, "throughput": self.period_s,
                "energy": self.max_active_j, "energy-total": self.total_active_j}[name]

    def overflows(self) -> list[tuple[str, float]]:
        """Devices whose memory is exceeded, with the excess in bytes."""
        return [(d.device, d.memory_bytes - d.memory_limit) for d in self.devices.values()
                if d.memory_bytes > d.memory_limit]


def copy_name(stage: str, j: int) -> str:
    """Copy ``j`` of a stage, named as the workers name it: ``s1``, ``s1@1``, ``s1@2``."""
    return stage if j == 0 else f"{stage}@{j}"


def _hosts(compiled: CompiledPlan, vote: int) -> dict[str, list[str]]:
    """Per stage, the devices running a copy of it (``input``/``output``: the source)."""
    hosts: dict[str, list[str]] = {INPUT: [SOURCE], OUTPUT: [SOURCE]}
    for p in compiled.programs:
        hosts[p.name] = [p.device, *p.replicas][:max(1, vote)]
        if len(hosts[p.name]) < vote:
            raise PlanningError(f"stage {p.name}: vote:{vote} needs {vote} devices, it has "
                                f"{len(hosts[p.name])} ({', '.join(hosts[p.name])}); give it "
                                f"{vote - 1} replicas")
    return hosts


def estimate(compiled: CompiledPlan, platform: Platform, vote: int = 1) -> PlanCost:
    """Cost of ``compiled`` on ``platform`` for one inference (one sample); with ``vote``
    copies of every stage running (1: replicas on standby)."""
    devices = _placed(compiled, platform)
    hosts = _hosts(compiled, vote)
    compute = {copy_name(p.name, j): compute_seconds(compiled, p, platform.devices[d])
               for p in compiled.programs for j, d in enumerate(hosts[p.name])}
    transfers, crypto_of, message_of, coordinator = _transfers(compiled, platform, devices,
                                                               hosts)
    for p in compiled.programs:
        for j, d in enumerate(hosts[p.name]):
            name, dev, spec = copy_name(p.name, j), devices[d], platform.devices[d]
            dev.compute_s += compute[name]
            dev.crypto_s += crypto_of[name]
            dev.message_s += message_of[name]
            dev.compute_j += spec.active_power_w * compute[name]
            dev.crypto_j += spec.active_power_w * (crypto_of[name] + message_of[name])
    work = {name: crypto_of[name] + message_of[name] for name in compute}
    latency, finish, start_s = _critical_path(compiled, transfers, compute, work, hosts)
    # streaming period: the busiest device or link
    link_busy: dict[object, float] = defaultdict(float)
    for tc in transfers:
        if tc.src_device == tc.dst_device:
            continue
        key = "medium" if platform.medium.shared else (tc.src_device, tc.dst_device)
        link_busy[key] += tc.occupancy_s
    share = host_share_s(platform, devices, coordinator)
    period = max([d.busy_s for d in devices.values()] + list(link_busy.values())
                 + [share, coordinator])
    for name, dev in devices.items():
        dev.idle_j = platform.devices[name].idle_power_w * max(0.0, period - dev.busy_s)
    idle_boards = {name: spec.idle_power_w * period for name, spec in platform.devices.items()
                   if name not in devices}
    stage_compute = {p.name: compute[p.name] for p in compiled.programs}
    return PlanCost(latency, period, devices, transfers, stage_compute, finish, start_s,
                    idle_boards, share, coordinator)


def host_share_s(platform: Platform, devices: dict[str, DeviceCost], coordinator: float
                 ) -> float:
    """The used ``host`` devices' busy time per inference, and the coordinator's, over this
    machine's cores: however the processes are scheduled, the period is no shorter."""
    busy = [d.busy_s for name, d in devices.items() if platform.devices[name].profile == "host"]
    return (sum(busy) + coordinator) / host_cores() if busy else 0.0


def compute_seconds(compiled: CompiledPlan, p: StageProgram, device: Device) -> float:
    """Seconds ``device`` computes stage ``p``: its MACs at the device's rate for each layer
    type (a piece of a layer, a tile or channel group, in proportion), at its int8 rate
    for an int8 stage."""
    kind = p.precision
    rate = device.rate_for(None, kind)
    if not device.layer_speed or not p.macs:
        return device.stage_s + p.macs / rate
    nodes = [compiled.graph.by_name[n] for n in p.nodes]
    whole = sum(n.macs for n in nodes)
    seconds = sum(n.macs / device.rate_for(n.layer_type, kind) for n in nodes)
    return device.stage_s + (p.macs * seconds / whole if whole else p.macs / rate)


def _placed(compiled: CompiledPlan, platform: Platform) -> dict[str, DeviceCost]:
    """Each used device with its stages, standby replicas and their memory."""
    devices: dict[str, DeviceCost] = {}
    for name in compiled.plan.devices_used():
        if name not in platform.devices:
            raise PlanningError(f"plan uses device {name!r}, not in platform {platform.name}")
        devices[name] = DeviceCost(name, [], [], memory_limit=platform.devices[name].memory_bytes)
    for p in compiled.programs:
        devices[p.device].stages.append(p.name)
        devices[p.device].memory_bytes += p.memory_bytes
        for r in p.replicas:
            devices[r].replicas.append(p.name)
            devices[r].memory_bytes += p.memory_bytes
    return devices


def _transfers(compiled: CompiledPlan, platform: Platform, devices: dict[str, DeviceCost],
               hosts: dict[str, list[str]]
               ) -> tuple[list[TransferCost], dict[str, float], dict[str, float], float]:
    """One message per (src copy, dst copy) of each pair of stages, and request (latency
    once, bytes summed), with the radio energy each end pays; per stage copy, its seconds
    sealing and opening, and its fixed seconds per message sent or received; and the
    coordinator's seconds on its messages."""
    plan = compiled.plan
    transfers: list[TransferCost] = []
    crypto_of: dict[str, float] = defaultdict(float)  # stage copy → seal/open seconds
    message_of: dict[str, float] = defaultdict(float)  # stage copy → per-message seconds
    at_coordinator = 0.0
    for (src_stage, dst_stage), group in compiled.links().items():
        nbytes = sum(t.nbytes for t in group)  # what is sealed and sent (int8: 1 B an element)
        protection = plan.protection(src_stage, dst_stage)  # the coordinator's hops too
        alg = algorithm(protection)
        for (i, src), (j, dst) in itertools.product(enumerate(hosts[src_stage]),
                                                    enumerate(hosts[dst_stage])):
            sender, receiver = copy_name(src_stage, i), copy_name(dst_stage, j)
            link = platform.medium if SOURCE in (src, dst) else platform.link(src, dst)
            same = src == dst
            coordinator = 0.0  # the coordinator's sealing or opening: priced as the device's
            for end, name in ((src, sender), (dst, receiver)):
                if same:
                    break
                other = dst if end == src else src
                spec = platform.devices[other if end == SOURCE else end]
                if end == SOURCE:
                    coordinator = spec.crypto_seconds(alg, nbytes)
                    at_coordinator += coordinator + spec.coordinator_s
                else:
                    crypto_of[name] += spec.crypto_seconds(alg, nbytes)
                    message_of[name] += spec.message_s
            hop = 0.0 if same else platform.devices[src if dst == SOURCE else dst].hop_s
            transfers.append(TransferCost(
                sender, receiver, group, nbytes, src, dst, protection,
                0.0 if same else link.seconds(nbytes) + coordinator + hop,
                0.0 if same else 8 * nbytes / link.bandwidth_bps))
            if same:
                continue
            if src != SOURCE:
                devices[src].radio_j += platform.devices[src].radio_j_per_byte(link, True) * nbytes
                devices[src].bytes_sent += nbytes
            if dst != SOURCE:
                devices[dst].radio_j += (platform.devices[dst].radio_j_per_byte(link, False)
                                         * nbytes)
                devices[dst].bytes_received += nbytes
    return transfers, crypto_of, message_of, at_coordinator


def _critical_path(compiled: CompiledPlan, transfers: list[TransferCost],
                   compute: dict[str, float], work: dict[str, float],
                   hosts: dict[str, list[str]]
                   ) -> tuple[float, dict[str, float], dict[str, float]]:
    """One request's latency, each stage copy's finish and start; a device runs one stage
    at a time."""
    by_dst: dict[str, list[TransferCost]] = defaultdict(list)
    for tc in transfers:
        by_dst[tc.dst].append(tc)
    free: dict[str, float] = defaultdict(float)
    start_s: dict[str, float] = {}
    finish: dict[str, float] = {INPUT: 0.0}
    for p in compiled.programs:
        for j, device in enumerate(hosts[p.name]):
            name = copy_name(p.name, j)
            ready = max((finish[tc.src] + tc.seconds for tc in by_dst[name]), default=0.0)
            start_s[name] = max(ready, free[device])
            finish[name] = start_s[name] + compute[name] + work[name]
            free[device] = finish[name]
    latency = max(finish[tc.src] + tc.seconds for tc in by_dst[OUTPUT])
    return latency, finish, start_s
