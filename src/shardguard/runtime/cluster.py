"""The coordinator: deploy a plan to workers, stream requests through them, fail over.

    with shardguard.cluster("plan.yaml", spawn_local=True) as c:
        y = c.infer(x)                         # one request
        result = c.stream(x_all)               # many in flight, with failover

Workers are reached over CurveZMQ-authenticated control sockets. Each request
carries its route (stage → device); when a device fails (ZeroMQ heartbeats and
connection events tell), requests in flight through it are resubmitted along a
route through the stage's replicas, and results are deduplicated by request id.
Every request ends as a result or an explicit error, within its deadline.

``Cluster`` is a façade over three parts, each in its own module:

* ``_fleet``: keys, worker processes, control connections, relays, deploy, close;
* ``_routing``: routes, distrust, retry and failover, and a stream's books;
* ``_collect``: results opened, voted, held to their witnesses, assembled.

A defence that changes the plan (Freivalds' verifier stages) is applied to it
before they are built; its options are ``ClusterOptions``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from .._progress import progress
from ..defences.ballots import copy_link
from ..defences.verifier import SUFFIX, Verifier
from ..errors import ConfigError, TransportError
from ..partition.bind import Bound
from ..partition.compile import OUTPUT, CompiledPlan
from ..protections import strongest
from ..protocol.control import COORDINATOR, MAX_ATTEMPTS, Behave
from ._collect import Collector
from ._fleet import Fleet, Handle, planned_link
from ._options import ClusterOptions
from ._routing import Flight, Router
from .linksec import Inbox, LinkSecurity
from .netns import Network
from .relay import Tamper

__all__ = ["Cluster", "ClusterOptions", "Handle", "StreamResult", "cluster"]

MAX_ALARMS_KEPT = 10_000  # alarms a stream keeps in its result (the rest are only counted)


@dataclass
class StreamResult:
    """What came back from a stream: one row per request."""

    outputs: np.ndarray  # (N, ...) — NaN rows where a request failed
    errors: dict[int, str]  # request index → why it failed
    latency_s: np.ndarray  # per request (NaN when failed)
    ended_s: np.ndarray  # per request: time from first submission to its result or error
    accepted: np.ndarray  # per request: how many results were accepted (1, or 0 if failed)
    elapsed_s: float
    samples: int
    resubmitted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # sealed messages refused
    degraded: np.ndarray | None = None  # per request: answered with a piece missing
    worker_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_devices: list[str] = field(default_factory=list)  # lost while streaming
    routed_around: list[str] = field(default_factory=list)  # distrusted: traffic moved away
    alarms: int = 0  # alarms acted on (``rejected`` keeps the first MAX_ALARMS_KEPT)

    @property
    def answered(self) -> int:
        return len(self.latency_s) - len(self.errors)

    def percentiles(self) -> dict[str, float]:
        ok = self.latency_s[~np.isnan(self.latency_s)]
        if not len(ok):
            return {}
        return {f"p{q}": float(np.percentile(ok, q)) for q in (50, 95, 99)}

    @property
    def throughput(self) -> float:
        return self.samples / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Cluster:
    """Workers running one plan; see the module docstring."""

    def __init__(self, bound: Bound, *, workers: dict[str, str] | None = None,
                 spawn_local: bool = False, keys: Path | None = None, window: int = 32,
                 deadline_s: float = 10.0, max_attempts: int = MAX_ATTEMPTS,
                 emulate_links: bool = False, threads: int = 1, advertise: str = "127.0.0.1",
                 seed: int = 0,
                 attackers: Sequence[Any] = (), on_reject: str = "failover",
                 guards: dict[str, tuple[Any, Any]] | None = None, vote: int = 1,
                 freivalds: int = 0, taps: dict[str, Sequence[Tamper]] | None = None,
                 fault_injection: bool = False, network: Network = "loopback") -> None:
        self.options = options = ClusterOptions(
            workers=workers, spawn_local=spawn_local, keys=keys, window=window,
            deadline_s=deadline_s, max_attempts=max_attempts, emulate_links=emulate_links,
            threads=threads, advertise=advertise, seed=seed, attackers=attackers,
            on_reject=on_reject, guards=guards, vote=vote, freivalds=freivalds, taps=taps,
            fault_injection=fault_injection, network=network)
        self.bound = bound
        _refuse_unquantized(bound.compiled, options.freivalds)
        # M4 by Freivalds: each stage proves its affine layers to a verifier stage elsewhere
        self.compiled: CompiledPlan = bound.compiled
        self.verifiers: dict[str, Verifier] = {}
        if options.freivalds:
            from ..defences.freivalds import checked_plan

            self.compiled, self.verifiers = checked_plan(bound.compiled, rounds=options.freivalds)
        # M4: every stage runs on ``vote`` devices; whoever receives its outputs votes
        self.vote = _voting_copies(bound.compiled, options.vote)
        self.security = LinkSecurity(COORDINATOR, _protection_of_copies(
            _protection(bound.plan.links, self.compiled), self.vote))
        self.fleet = Fleet(bound, self.compiled, self.verifiers, self.security, options,
                           self.vote)
        self.router = Router(self.compiled, self.vote, self.security, self.fleet, options)
        self.collector = Collector(self.compiled, self.verifiers, self.vote, self.security,
                                   bound.graph.output_shape[1:], self.fleet.alarm)

    @classmethod
    def from_options(cls, bound: Bound, options: ClusterOptions) -> Cluster:
        """The same as ``Cluster(bound, **keywords)``, from a ``ClusterOptions``."""
        return cls(bound, **options.keywords())

    # what callers reach through the façade
    @property
    def handles(self) -> dict[str, Handle]:
        return self.fleet.handles

    @property
    def ctx(self) -> zmq.Context[Any]:
        return self.fleet.ctx

    @property
    def keys(self) -> Path | None:
        return self.fleet.keys

    @property
    def sink(self) -> zmq.Socket[Any]:
        return self.fleet.sink

    @property
    def inbox(self) -> Inbox:
        return self.collector.inbox

    @property
    def next_req(self) -> int:
        return self.router.next_req

    @property
    def window(self) -> int:
        return self.options.window

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Keys, workers, relays and the deploy: see ``Fleet.start``."""
        self.fleet.start()

    def close(self) -> None:
        self.fleet.close()

    # -- control ----------------------------------------------------------------------------
    def call(self, device: str, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send a control message to ``device`` and wait for its reply (matched by id)."""
        return self.fleet.call(device, message, timeout)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {d: self.call(d, {"kind": "stats"}) for d, h in self.handles.items() if h.alive}

    def verify(self) -> dict[str, dict[str, bool]]:
        """M7 on demand: per live device, whether each stored stage still matches its digest."""
        return {d: dict(self.call(d, {"kind": "verify"})["stages"])
                for d, h in self.handles.items() if h.alive}

    def behave(self, device: str, **behaviour: Any) -> None:
        """Make a worker misbehave (threat experiments; needs ``fault_injection=True``, which
        starts spawned workers with ``--allow-fault-injection``): slow=k,
        corrupt=zero|scale|sign|random (stages=[...]: only in what those of its stages send),
        flip_stored=n (D5 at rest: n bit flips in each stored stage model), garble_wire=True
        (one bit of every message it sends flips after sealing, as on a faulty link)."""
        fields: dict[str, Any] = {k: tuple(v) if k == "stages" else v
                                  for k, v in behaviour.items()}
        self.call(device, Behave(**fields).to_wire())

    # -- data -------------------------------------------------------------------------------
    def infer(self, x: np.ndarray | Any) -> np.ndarray:
        """Run one request (a batch) through the cluster; raise if it fails."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        result = self.stream(x, batch=len(x), show_progress=False)
        if result.errors:
            raise TransportError(next(iter(result.errors.values())))
        return result.outputs

    def stream(self, x: np.ndarray | Any, *, batch: int = 1, show_progress: bool = True,
               on_request: Any = None) -> StreamResult:
        """Stream ``x`` (N, C, H, W) in requests of ``batch`` samples, ``window`` in flight.

        ``on_request(k)`` is called just before request ``k`` is sent, so that whatever it
        does (a fault injected, say) acts on request ``k`` and every later one."""
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        starts = list(range(0, len(x), batch))
        outputs = np.full((len(x), *self.bound.graph.output_shape[1:]), np.nan, dtype=np.float32)
        self.router.begin()
        poller = zmq.Poller()
        poller.register(self.sink, zmq.POLLIN)
        began = time.perf_counter()
        with progress() as bar:
            task = bar.add_task("streaming", total=len(starts), info="")
            if not show_progress:
                bar.update(task, visible=False)
            flight = Flight(starts, outputs, bar, task, MAX_ALARMS_KEPT)
            while not flight.done():
                self._admit(flight, x, batch, on_request)
                self._fail_over(flight)
                if poller.poll(20):
                    self.collector.drain(self.sink, flight)
                self._act_on_alarms(flight)
                self.router.overdue(flight)
                flight.mark_ended()
        return self._result(flight, len(x), time.perf_counter() - began)

    def _admit(self, flight: Flight, x: np.ndarray, batch: int, on_request: Any) -> None:
        """Submit new requests until ``window`` are in flight or none is left."""
        while len(flight.inflight) < self.window and flight.next_index < len(flight.starts):
            s = flight.starts[flight.next_index]
            if on_request is not None:  # before it is sent: what it does, request k sees
                on_request(flight.next_index)
            self.router.admit(flight, x[s:s + batch])

    def _fail_over(self, flight: Flight) -> None:
        """A device whose connection was lost since: what went through it goes elsewhere."""
        for handle in self.handles.values():
            was = handle.alive
            self.fleet.watch(handle)
            if was and not handle.alive:
                self.router.lost(handle.device, flight)

    def _act_on_alarms(self, flight: Flight) -> None:
        """Rejections seen here and reported by workers: counted, then ``on_reject`` acts."""
        self.collector.suspects()
        for alarm in self.fleet.take_alarms():
            flight.note(alarm)
            self.router.on_alarm(alarm, flight)

    def _result(self, flight: Flight, samples: int, elapsed: float) -> StreamResult:
        failed, avoided = self.router.failed, self.router.avoided
        return StreamResult(flight.outputs, flight.errors, flight.latency, flight.ended,
                            flight.accepted, elapsed, samples, flight.resubmitted,
                            flight.duplicates, flight.rejected, flight.degraded,
                            failed_devices=list(failed),
                            routed_around=[d for d in avoided if d not in failed],
                            alarms=flight.alarms)


def _protection(links: Sequence[Any], compiled: CompiledPlan) -> dict[str, str]:
    """Each link's protection from the plan, for the links ``compiled`` has.

    A Freivalds prover's claims (``S>S~check``: its affine layers' outputs, as revealing
    as any activation) are sealed with the strongest protection of the stage's own links,
    outgoing first, then incoming (a last stage sends only to the coordinator), then of
    the whole plan (``protections.strongest``: an AEAD over a MAC over a keyless check over
    none). A checked last stage's outputs, from its prover and its verifier, with the
    plan's strongest: the coordinator must know which device sent each copy it compares.
    """
    planned = {f"{link.src}>{link.dst}": link.protection for link in links}

    checked = {p.name.removesuffix(SUFFIX) for p in compiled.programs if p.name.endswith(SUFFIX)}
    out = {}
    for src, dst in compiled.links():
        link = planned_link(src, dst)
        stage, _, other = link.partition(">")
        if other == OUTPUT and stage in checked:  # both copies the coordinator compares:
            out[f"{src}>{dst}"] = strongest(list(planned.values()))  # authenticated
            continue
        if stage != other:
            out[f"{src}>{dst}"] = planned.get(link, "none")
            continue
        outgoing = strongest([p for k, p in planned.items() if k.startswith(f"{stage}>")])
        incoming = strongest([p for k, p in planned.items() if k.endswith(f">{stage}")])
        out[f"{src}>{dst}"] = next((p for p in (outgoing, incoming) if p != "none"),
                                   strongest(list(planned.values())))
    return out


def _refuse_unquantized(compiled: CompiledPlan, freivalds: int) -> None:
    int8 = [p.name for p in compiled.programs if p.precision == "int8"]
    if int8 and compiled.quantized is None:
        raise ConfigError(f"stage {int8[0]} is int8: quantize the plan first "
                          "(runtime.quantize.calibrate)")
    if int8 and freivalds:
        raise ConfigError("Freivalds checks of int8 stages are not supported")


def _voting_copies(compiled: CompiledPlan, vote: int) -> dict[str, int]:
    """Stage → the copies that vote on its outputs (none when ``vote`` is 1)."""
    short = [p.name for p in compiled.programs if len(p.replicas) < vote - 1]
    if short:
        raise ConfigError(f"voting with {vote} copies needs {vote - 1} replica(s) of every "
                          f"stage; {', '.join(short)} lack them (plan with --replicas {vote})")
    return {p.name: vote for p in compiled.programs} if vote > 1 else {}


def _protection_of_copies(protection: dict[str, str], vote: dict[str, int]) -> dict[str, str]:
    """``protection`` with each voting copy's own links protected as the stage's."""
    for link, p in list(protection.items()):
        for j in range(1, vote.get(link.split(">", 1)[0], 1)):
            protection[copy_link(link, j)] = p
    return protection


def cluster(plan: Bound | Any, **options: Any) -> Cluster:
    """A ``Cluster`` for ``plan`` (a plan file, a ``Plan`` or a bound plan), for a ``with`` block.

        with shardguard.cluster("plan.yaml", spawn_local=True) as c:
            logits = c.infer(images)        # (B, 1, 28, 28) float32 → (B, 10)
    """
    if not isinstance(plan, Bound):
        from ..partition.bind import bind

        plan = bind(plan)
    return Cluster(plan, **options)
