"""A worker's data path for one deployment: receive, check, run stages, route what they send.

Each message is opened by the deployment's ``Inbox`` (header tag, replay window,
seal), checked against the plan's routes, passed to the hooks (``hooks.WorkerHook``:
the defences' and, on request, the threats' worker halves), voted on when its stage
is voted (M4), and gathered with the other pieces of its request;
when a stage has every input it runs (checking a Freivalds prover's claims, M4, if it
is a verifier) and its outputs go to the next stages' devices (through a relay where
the coordinator put one on the link). Every table here is bounded.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..defences.ballots import VoteFailed, copy_link, role
from ..hooks import WorkerHook
from ..protocol import wire
from ..protocol.control import COORDINATOR, OUTPUT, Alarm
from ._deployment import Deployment, Stage
from .linksec import Suspect

DONE_MEMORY = 8192  # (request, stage) pairs remembered to drop duplicates
MAX_PENDING = 4096  # requests waiting for more pieces

Transmit = Callable[[str, list[Any]], bool]  # (address, frames) -> sent


@dataclass
class Counters:
    """What a deployment's data path did (the ``stats`` reply; rejections are the inbox's)."""

    received: int = 0
    processed: int = 0
    duplicates: int = 0
    expired: int = 0
    send_failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: CPU time of the worker's thread handling data messages: open, check, run stages,
    #: seal, send (CPU, not wall time: waiting for a core another process holds is not
    #: being busy)
    busy_s: float = 0.0
    bytes_per_link: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class DataPlane:
    def __init__(self, name: str, deployment: Deployment, transmit: Transmit,
                 alarm: Callable[[Alarm], None], hooks: Sequence[WorkerHook] = ()) -> None:
        self.name, self.d, self.transmit, self.alarm = name, deployment, transmit, alarm
        self.hooks = [*deployment.hooks, *hooks]
        for hook in hooks:
            hook.on_load(s.stored for s in deployment.stages.values())
        self.counters = Counters()
        # (request, stage) → (first piece's arrival, pieces so far, route)
        self.pending: OrderedDict[tuple[int, str], tuple[float, dict[str, np.ndarray],
                                                         dict[str, str]]] = OrderedDict()
        self.done: OrderedDict[tuple[int, str], None] = OrderedDict()
        self.degraded: OrderedDict[int, None] = OrderedDict()  # requests answered degraded
        self.seq: dict[str, int] = defaultdict(int)
        self.rng = np.random.default_rng()  # a verifier's draws from its pool: unpredictable

    # -- receiving ------------------------------------------------------------------------
    def handle(self, frames: list[Any]) -> None:
        start = time.thread_time()
        try:
            self._handle(frames)
        finally:
            self.counters.busy_s += time.thread_time() - start

    def _handle(self, frames: list[Any]) -> None:
        self.counters.received += 1
        opened = self.d.inbox.open(frames, self.d.schema)
        if opened is None:
            return
        header, arrays = opened
        if not self.d.route_ok(header, self.name):
            self.d.inbox.count("misrouted", header.link, self.d.schema)
            return
        if header.flags & wire.FLAG_DEGRADED:
            _remember(self.degraded, header.req)
        size = sum(a.nbytes for a in arrays.values())
        for hook in self.hooks:
            arrays = hook.on_receive(header.link, arrays)
        self.counters.bytes_in += size
        self.counters.bytes_per_link[header.link] += size
        self.receive(header.req, header.link, arrays, dict(header.route))

    def tampered(self, suspect: Suspect) -> None:
        """A tampered message whose genuine one never came: alarm, and (policy degrade) go
        on with zeros for a rejected piece of a split tensor."""
        header = suspect.header
        self.alarm(Alarm(header.req, header.link, suspect.sender, self.name, suspect.detail))
        if self.d.message.on_reject != "degrade":
            return
        stage = self.d.by_link.get(header.link)
        if stage is None or not all(stage.is_piece(t.name) for t in header.tensors):
            return  # a whole tensor: without it the stage has nothing to compute on
        have = self.pending.get((header.req, stage.name), (0.0, {}, {}))[1]
        zeros = {t.name: np.zeros(t.shape, t.dtype) for t in header.tensors
                 if t.name not in have}  # never over a piece that did arrive
        _remember(self.degraded, header.req)
        self.deliver(header.req, header.link, zeros, dict(header.route))

    def add(self, hook: WorkerHook) -> None:
        """Add a hook to the running deployment (it sees the stored models now)."""
        self.hooks.append(hook)
        hook.on_load(s.stored for s in self.d.stages.values())

    def receive(self, req: int, link: str, arrays: dict[str, np.ndarray],
                route: dict[str, str]) -> None:
        """A checked message, off the wire or from a stage on this device: a voted stage's
        copies are voted on first (the sender of a failed vote is unknown: "?")."""
        if self.d.ballots.voted(link):
            try:
                decided = self.d.ballots.cast(req, link, arrays)
            except VoteFailed as exc:
                self.d.inbox.count("vote-failed", link, self.d.schema)
                self.alarm(Alarm(req, link, "?", self.name, f"vote failed: {exc}"))
                return
            if decided is None:
                return  # more copies to come
            link, arrays = decided
        self.deliver(req, link, arrays, route)

    def deliver(self, req: int, link: str, arrays: dict[str, np.ndarray],
                route: dict[str, str]) -> None:
        stage = self.d.by_link[link]
        key = (req, stage.name)
        if key in self.done:
            self.counters.duplicates += 1
            return
        first, have, _ = self.pending.get(key, (time.monotonic(), {}, route))
        if len({a.shape[0] for a in [*have.values(), *arrays.values()]}) > 1:
            self.d.inbox.count("batch-mismatch", link, self.d.schema)
            return  # pieces of one request must agree on its batch
        if key not in self.pending and len(self.pending) >= MAX_PENDING:
            self.d.inbox.count("overloaded", link, self.d.schema)
            return
        have.update(arrays)
        wanted = [p.tensor for p in stage.inputs]
        if not all(t in have for t in wanted):
            self.pending[key] = (first, have, route)
            return
        self.pending.pop(key, None)
        _remember(self.done, key)
        self.run(stage, req, [have[t] for t in wanted], route)

    # -- running and sending --------------------------------------------------------------
    def run(self, stage: Stage, req: int, inputs: list[np.ndarray], route: dict[str, str]) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        feeds = {p.name: x for p, x in zip(stage.inputs, inputs)}
        try:
            outputs = stage.session.run(None, feeds)
        except Exception:  # onnxruntime's own error types; the worker keeps serving
            self.d.inbox.count("stage-failed", None)
            return
        elapsed = time.perf_counter() - start
        stage.compute_s += elapsed
        stage.cpu_s += time.thread_time() - cpu
        stage.runs += 1
        self.counters.processed += 1
        if stage.check is not None and not self._verified(stage, req, feeds, outputs, route):
            return
        outputs = [np.asarray(o, dtype=np.int8 if p.dtype == "int8" else np.float32)
                   for p, o in zip(stage.outputs, outputs)]
        start = time.perf_counter()
        for hook in self.hooks:  # a straggler's delay counts as the stage's own time
            outputs = hook.on_stage(stage.name, outputs, elapsed)
        stage.compute_s += time.perf_counter() - start
        groups: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
        for port, value in zip(stage.outputs, outputs):
            groups[port.link].append((port.tensor, value))
        vote = self.d.vote
        me = role(stage.name, self.name, route, vote.get(stage.name, 1)) or 0
        relays, peers = self.d.message.relays, self.d.message.devices
        for base, arrays in groups.items():
            link = copy_link(base, me)  # a voted stage's copy j sends on "S@j>T"
            dst = base.split(">", 1)[1]
            copies = [route.get(dst, "")] + [route.get(f"{dst}@{j}", "")
                                             for j in range(1, vote.get(dst, 1))]
            for device in copies:
                relayed = f"{base}@{device}" in relays  # an attacker or emulator is there
                if device == self.name and link in self.d.schema and not relayed:  # here too
                    self.receive(req, link, dict(arrays), route)
                    continue
                if dst == OUTPUT:
                    address = relays.get(f"{base}@{OUTPUT}", self.d.message.sink)
                    device = COORDINATOR
                else:  # through the link's relay when the coordinator put one there
                    address = relays.get(f"{base}@{device}", peers.get(device, ""))
                self.send(address, req, link, route, arrays, device, stage.codecs)

    def _verified(self, stage: Stage, req: int, feeds: dict[str, np.ndarray],
                  outputs: list[Any], route: dict[str, str]) -> bool:
        """M4: check the prover's claims; on a failure nothing is sent on (fail closed)."""
        assert stage.check is not None
        start, n = time.perf_counter(), len(stage.outputs)
        zs = [np.asarray(z, dtype=np.float32) for z in outputs[n:]]
        del outputs[n:]  # what is sent: the stage's outputs, not the affine inputs
        bad = stage.check.bad(feeds, zs, self.rng)
        stage.compute_s += time.perf_counter() - start  # the check is the verifier's work
        if not bad.any():
            return True
        self.d.inbox.count("check-failed", stage.check.link, self.d.schema)
        self.alarm(Alarm(req, stage.check.link, route.get(stage.check.stage, "?"), self.name,
                         f"Freivalds check failed on {int(bad.sum())} of {len(bad)} sample(s)"))
        return False

    def send(self, address: str, req: int, link: str, route: dict[str, str],
             arrays: list[tuple[str, np.ndarray]], receiver: str,
             codecs: dict[str, wire.Codec] | None = None) -> None:
        if not address:
            self.counters.send_failed += 1
            return
        self.seq[link] += 1
        flags = wire.FLAG_DEGRADED if req in self.degraded else 0
        frames = self.d.security.encode(req, self.seq[link], link, route, arrays, flags,
                                        receiver=receiver, codecs=codecs)
        for hook in self.hooks:
            frames = hook.on_send(frames)
        if not self.transmit(address, frames):
            self.counters.send_failed += 1
            return
        self.counters.bytes_out += sum(a.nbytes for _, a in arrays)

    def expire(self, now: float) -> None:
        """Drop requests that waited past the deadline; act on suspects past their grace."""
        cutoff = now - self.d.message.deadline_s
        while self.pending:
            key, (first, _, _) = next(iter(self.pending.items()))
            if first >= cutoff:
                break
            del self.pending[key]
            self.counters.expired += 1
        for suspect in self.d.inbox.due(now):
            self.tampered(suspect)

    def stats(self) -> dict[str, Any]:
        c, inbox = self.counters, self.d.inbox
        return {"received": c.received, "processed": c.processed, "duplicates": c.duplicates,
                "expired": c.expired, "send_failed": c.send_failed, "busy_s": c.busy_s,
                "rejected": dict(inbox.rejected),
                "rejected_by_link": {k: dict(v) for k, v in inbox.rejected_by_link.items()},
                "clipped": 0, "flagged": 0, "bytes_in": c.bytes_in,
                "bytes_out": c.bytes_out, "bytes_per_link": dict(c.bytes_per_link),
                "pending": len(self.pending), "tables": self.tables(),
                "stages": {s.name: {"runs": s.runs, "compute_s": s.compute_s, "cpu_s": s.cpu_s}
                           for s in self.d.stages.values()},
                **{k: v for hook in self.hooks for k, v in hook.counters().items()}}

    def tables(self) -> dict[str, int]:
        """The size of every table that grows with traffic (each has a bound)."""
        ballots = self.d.ballots
        return {"pending": len(self.pending), "done": len(self.done),
                "degraded": len(self.degraded), "suspects": len(self.d.inbox.suspects),
                "windows": len(self.d.security.windows), "ballots_open": len(ballots.open),
                "ballots_decided": len(ballots.decided)}


def _remember(table: OrderedDict[Any, None], key: Any) -> None:
    table[key] = None
    if len(table) > DONE_MEMORY:
        table.popitem(last=False)
