"""Where the coordinator's requests go: routes, distrust, retry and failover.

    router = Router(compiled, vote, security, fleet, options)
    r = router.admit(flight, x[s:s + batch])     # a new request, submitted or failed
    router.lost(device, flight)                  # resubmit what went through it
    router.on_alarm(alarm, flight)               # a rejected message: the policy acts
    router.overdue(flight)                       # past their deadline: resubmit

Each request carries its route (stage → device): the stage's first live device,
a distrusted one (its messages were rejected) only if nothing else is left. A
resubmitted request gets a new id, so a late answer to the old one is dropped as
a duplicate; after ``max_attempts`` it fails with the reason. ``Flight`` keeps one
stream's books, so every request ends as a result or an explicit error.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from ..partition.compile import INPUT, OUTPUT, CompiledPlan
from ..partition.regions import crop, full
from ._fleet import Fleet
from ._options import ClusterOptions
from .linksec import LinkSecurity
from .quantize import quantize

DISTRUST_S = 30.0  # how long failover avoids a sender named by a rejected message


@dataclass
class Request:
    req: int
    index: int
    x: np.ndarray
    deadline: float
    started: float
    attempts: int = 1
    route: dict[str, str] = field(default_factory=dict)
    pieces: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Flight:
    """One stream's books: requests in flight, and how each of them ended."""

    starts: list[int]  # per request: its first sample
    outputs: np.ndarray  # (N, ...) NaN until answered
    bar: Any  # the stream's progress bar, and its task
    task: Any
    keep: int  # alarms kept in ``rejected``; the rest are only counted
    next_index: int = 0  # the next request to admit
    inflight: dict[int, Request] = field(default_factory=dict)  # request id → request
    finished: set[int] = field(default_factory=set)  # answered requests' indices
    errors: dict[int, str] = field(default_factory=dict)  # failed: index → why
    first_submit: dict[int, float] = field(default_factory=dict)  # until it ends
    resubmitted: int = 0
    duplicates: int = 0
    alarms: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # the first alarms

    def __post_init__(self) -> None:
        n = len(self.starts)
        self.latency = np.full(n, np.nan)
        self.ended = np.full(n, np.nan)
        self.accepted = np.zeros(n, dtype=np.int64)
        self.degraded = np.zeros(n, dtype=bool)

    def done(self) -> bool:
        return len(self.finished) + len(self.errors) >= len(self.starts)

    def fail(self, r: Request, why: str) -> None:
        self.errors[r.index] = why
        self.bar.advance(self.task)

    def answer(self, r: Request, output: np.ndarray) -> None:
        del self.inflight[r.req]
        self.finished.add(r.index)
        s = self.starts[r.index]
        self.outputs[s:s + len(r.x)] = output
        self.latency[r.index] = time.perf_counter() - r.started
        self.accepted[r.index] += 1
        self.bar.advance(self.task)

    def note(self, alarm: dict[str, Any]) -> None:
        self.alarms += 1
        if len(self.rejected) < self.keep:
            self.rejected.append(alarm)

    def mark_ended(self) -> None:
        """Each request that ended since: its time from first submission to the end."""
        for index in [i for i in self.first_submit if i in self.finished or i in self.errors]:
            self.ended[index] = time.perf_counter() - self.first_submit.pop(index)


class Router:
    """Routes, submits and resubmits requests; see the module docstring."""

    def __init__(self, compiled: CompiledPlan, vote: dict[str, int], security: LinkSecurity,
                 fleet: Fleet, options: ClusterOptions) -> None:
        self.compiled, self.vote, self.security, self.fleet = compiled, vote, security, fleet
        self.deadline_s, self.max_attempts = options.deadline_s, options.max_attempts
        self.on_reject = options.on_reject
        self.distrusted: dict[str, float] = {}  # sender → until when (failover), monotonic s
        self.link_seq: dict[str, int] = defaultdict(int)
        self.failed: dict[str, None] = {}  # devices lost, in order
        self.avoided: dict[str, None] = {}  # devices traffic was moved away from
        # request ids start at a random point: a forger cannot guess live ones
        self.next_req = int.from_bytes(os.urandom(6), "big")

    def begin(self) -> None:
        """A new stream: it reports only the devices lost or avoided during it."""
        self.failed.clear()
        self.avoided.clear()

    def route(self) -> tuple[dict[str, str], str | None]:
        route: dict[str, str] = {}
        handles = self.fleet.handles
        for p in self.compiled.programs:
            live = [d for d in [p.device, *p.replicas] if handles[d].alive]
            # a device whose messages were rejected goes last: used only if nothing else is
            now = time.monotonic()
            live = sorted(live, key=lambda d: self.distrusted.get(d, 0.0) > now)
            if not live:
                failed = ", ".join([p.device, *p.replicas])
                return route, (f"stage {p.name} has no live device ({failed} failed"
                               f"{'' if p.replicas else '; no replica'})")
            route[p.name] = live[0]
            copies = self.vote.get(p.name, 1)
            if len(live) < copies:
                return route, (f"stage {p.name} has {len(live)} live device(s) for "
                               f"{copies} voting copies")
            for j in range(1, copies):
                route[f"{p.name}@{j}"] = live[j]
        route[OUTPUT] = "coordinator"
        return route, None

    def submit(self, r: Request) -> str | None:
        """Send ``r``'s input pieces along a fresh route; why not, if no route is left."""
        route, error = self.route()
        if error:
            return error
        r.route, r.pieces = route, {}
        codecs = self.compiled.quantized.codecs if self.compiled.quantized else {}
        for t in self.compiled.input_transfers:
            piece = np.ascontiguousarray(crop(r.x, full(r.x.shape[1:]), t.region))
            if t.id in codecs:  # to an int8 stage: sent quantized, with its scale
                piece = quantize(piece, codecs[t.id])
            link = f"{INPUT}>{t.dst}"
            for j in range(self.vote.get(t.dst, 1)):  # every copy of a voted stage
                device = route[t.dst if j == 0 else f"{t.dst}@{j}"]
                self.link_seq[link] += 1
                frames = self.security.encode(r.req, self.link_seq[link], link, route,
                                              [(t.id, piece)], receiver=device,
                                              codecs={t.id: codecs[t.id]} if t.id in codecs
                                              else None)
                try:
                    self.fleet.push(self.fleet.input_address(link, device)).send_multipart(
                        frames, copy=False, flags=zmq.NOBLOCK)
                except zmq.Again:
                    pass  # the device is unreachable: the deadline will resubmit
        return None

    def admit(self, flight: Flight, x: np.ndarray) -> Request:
        """The next request of ``flight`` (samples ``x``), in flight or failed."""
        r = Request(self.next_req, flight.next_index, x, time.monotonic() + self.deadline_s,
                    time.perf_counter())
        flight.first_submit[r.index] = r.started
        self.next_req += 1
        flight.next_index += 1
        error = self.submit(r)
        if error:
            flight.fail(r, error)
        else:
            flight.inflight[r.req] = r
        return r

    def retry(self, r: Request, flight: Flight, why: str) -> None:
        """Resubmit ``r`` under a new request id along a live route, or fail it explicitly."""
        del flight.inflight[r.req]
        if r.attempts >= self.max_attempts:
            flight.fail(r, f"{why}; gave up after {r.attempts} attempts")
            return
        r.req, self.next_req = self.next_req, self.next_req + 1
        r.attempts += 1
        r.deadline = time.monotonic() + self.deadline_s
        error = self.submit(r)
        if error:
            flight.fail(r, f"{why}; {error}")
            return
        flight.inflight[r.req] = r
        flight.resubmitted += 1

    def lost(self, device: str, flight: Flight) -> None:
        """``device`` failed: fail over what was going through it."""
        self.failed[device] = None
        for r in [r for r in flight.inflight.values() if device in r.route.values()]:
            self.retry(r, flight, f"device {device} failed")

    def on_alarm(self, alarm: dict[str, Any], flight: Flight) -> None:
        """A message of a request in flight was rejected: act as ``on_reject`` says."""
        r = flight.inflight.get(alarm["req"])
        if r is None:
            return  # already answered, or a forged request id
        src = alarm["link"].split(">", 1)[0]
        if src != INPUT and r.route.get(src) != alarm["sender"] and alarm["sender"] != "?":
            return  # names a sender this request did not use: forged
        why = f"message on {alarm['link']} rejected: {alarm['reason']}"
        if self.on_reject == "degrade":
            return  # the receiving worker filled the piece, or it times out
        if self.on_reject == "drop":
            del flight.inflight[r.req]
            flight.fail(r, why)
            return
        if self.on_reject == "failover" and alarm["sender"] in self.fleet.handles:
            # the header named it, so it may be innocent: distrusted for a while
            self.distrusted[alarm["sender"]] = time.monotonic() + DISTRUST_S
            self.avoided[alarm["sender"]] = None
        self.retry(r, flight, why)

    def overdue(self, flight: Flight) -> None:
        """Resubmit (or fail) every request past its deadline."""
        now = time.monotonic()
        for r in [r for r in flight.inflight.values() if r.deadline < now]:
            self.retry(r, flight, f"no answer within {self.deadline_s:.1f} s")
