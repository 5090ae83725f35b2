"""Measured against predicted: a stream's latency, throughput and busy time per device,
beside the cost model's figures for the same plan on the same platform.

    fid = fidelity(bound, result, stats, window=32)
    print("\n".join(fid.lines())); json.dumps(fid.to_dict())

The cost model prices one request of one image alone (``latency_s``) and the period
of a stream (``period_s``: its busiest resource). With ``window`` requests in flight a
stream is a closed loop, so by Little's law its throughput is the smaller of
1 / period and window / latency, and a request's latency the larger of the latency
alone and window × period (it queues behind the others). Busy time is per image: a
worker's CPU time handling data messages (opening, checking, running its stages,
sealing, sending; ``busy_s`` in its stats) over the images streamed. Requests of more than one
image are priced as that many images one after another (an approximation: a batch
shares its messages' fixed costs).

Links emulated by the coordinator's relays (``emulate_links``) cost what the network
does not: each relayed message a little latency and some of the coordinator's time.
``estimate_run`` adds both as calibrated on this machine (``relay_hop_s``,
``relay_cpu_s``: ``runtime.calibrate``), so that a prediction for emulated links is
one for the emulator on this machine; with no calibration, nothing is added.

A machine shared with other work leaves the run's processes part of its cores. The
calibration measures the share of a core a lone busy thread gets (``core_share``), so
the others' runnable load (cores / share - 1); under a fair scheduler the run's k
processes (the devices used and the coordinator) get k / (others + k) of the cores
together, and ``estimate_run``'s period is no shorter than their busy time over that;
one request alone keeps one process busy at a time, on its share of a core: the
latency is that of devices so much slower.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..partition.bind import Bound
from ..partition.cost import PlanCost, estimate, host_share_s
from ..platform.host import cached_calibration
from ..platform.host import host_cores as machine_cores

CALIBRATED_PREFIX = "calibrated"
QUICK = "quick stand-in"  # a host figure measured without the calibration (platform.host)


@dataclass
class Fidelity:
    """Measured and predicted figures of one stream; ``ratio`` is measured / predicted."""

    window: int
    batch: int
    images: int
    measured: dict[str, Any]
    predicted: dict[str, Any]
    #: per device on a calibrated profile: figure → where it comes from
    calibrated: dict[str, dict[str, str]] = field(default_factory=dict)
    network: str = "loopback"

    @property
    def ratio(self) -> dict[str, Any]:
        m, p = self.measured, self.predicted
        return {"latency": _ratio(m["latency_s"], p["latency_in_flight_s"]),
                "throughput": _ratio(m["throughput"], p["throughput"]),
                "busy_s": {d: _ratio(m["busy_s"].get(d, 0.0), v)
                           for d, v in p["busy_s"].items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window, "batch": self.batch, "images": self.images,
                "network": self.network, "measured": self.measured,
                "predicted": self.predicted, "ratio": self.ratio,
                "calibrated": self.calibrated}

    def lines(self) -> list[str]:
        """The comparison as the ``run`` command prints it."""
        m, p, r = self.measured, self.predicted, self.ratio
        out = [f"measured vs predicted ({self.network}; {self.window} request(s) in flight, "
               f"{self.batch} image(s) each; ratio = measured / predicted):",
               f"  latency p50 {m['latency_s'] * 1e3:.2f} ms vs "
               f"{p['latency_in_flight_s'] * 1e3:.2f} ms (×{r['latency']:.2f}; alone "
               f"{p['latency_s'] * 1e3:.2f} ms)",
               f"  throughput {m['throughput']:.1f} vs {p['throughput']:.1f} images/s "
               f"(×{r['throughput']:.2f})"]
        for device, busy in p["busy_s"].items():
            out.append(f"  {device} busy {m['busy_s'].get(device, 0.0) * 1e3:.3f} vs "
                       f"{busy * 1e3:.3f} ms/image (×{r['busy_s'][device]:.2f})")
        sources = {k: v for figs in self.calibrated.values() for k, v in figs.items()}
        quick = sorted(k for k, v in sources.items() if QUICK in v)
        if sources:
            out.append(f"  calibrated on this machine: {', '.join(sorted(sources))}")
        hint = "(shardguard run --calibrate measures the host profile)"
        if quick:
            out.append(f"  quick stand-ins, not the workers' code paths: {', '.join(quick)} "
                       f"{hint}")
        elif not sources:
            out.append(f"  no figure is calibrated on this machine {hint}")
        return out


def _ratio(measured: float, predicted: float) -> float:
    return measured / predicted if predicted > 0 else float("nan")


def predicted(cost: PlanCost, window: int, batch: int = 1, images: int = 0) -> dict[str, Any]:
    """The cost model's figures for a stream of ``window`` requests of ``batch`` images in
    flight (see the module docstring); over ``images`` images, the stream's throughput
    counts its filling: the first answer after the latency alone, then one per period."""
    alone, period = cost.latency_s * batch, cost.period_s
    steady = min(1 / period if period > 0 else float("inf"),
                 window * batch / alone if alone > 0 else float("inf"))
    return {"latency_s": alone,
            "latency_in_flight_s": max(alone, window * batch * period),
            "throughput": (images / (alone + (images - batch) / steady) if images > batch
                           else steady),
            "period_s": period,
            "busy_s": {d: c.busy_s for d, c in cost.devices.items()},
            "coordinator_busy_s": cost.coordinator_busy_s,
            "host_share_s": cost.host_share_s}


def measured(result: Any, stats: dict[str, dict[str, Any]],
             before: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A stream's figures: median latency of its answered requests, images per second,
    and per device its busy seconds per image (since ``before``'s stats, if given)."""
    ok = result.latency_s[~np.isnan(result.latency_s)]
    images = max(1, result.samples)
    busy = {d: (s.get("busy_s", 0.0) - (before or {}).get(d, {}).get("busy_s", 0.0)) / images
            for d, s in stats.items()}
    return {"latency_s": float(np.median(ok)) if len(ok) else float("nan"),
            "throughput": result.throughput, "busy_s": busy}


def calibrated_figures(bound: Bound) -> dict[str, dict[str, str]]:
    """Per device the plan uses, its figures measured on this machine, with their source."""
    used = bound.compiled.plan.devices_used()
    return {d: {k: v for k, v in bound.platform.devices[d].sources.items()
                if v.startswith(CALIBRATED_PREFIX)} for d in used
            if any(v.startswith(CALIBRATED_PREFIX)
                   for v in bound.platform.devices[d].sources.values())}


def relay_figures() -> tuple[float, float]:
    """(latency a relay adds to a hop, coordinator seconds per relayed message), as
    calibrated on this machine; zeros without a calibration."""
    figures = cached_calibration() or {}
    return tuple(float(figures.get(k, {}).get("value", 0.0))  # type: ignore[return-value]
                 for k in ("relay_hop_s", "relay_cpu_s"))


def estimate_run(bound: Bound, vote: int = 1, emulated: bool = False) -> PlanCost:
    """The cost model's figures for ``bound`` run on this machine's workers: with
    ``emulated`` links, the relays' own costs added; the period stretched by the other
    processes' load on the cores (module docstring)."""
    hop, cpu = relay_figures() if emulated else (0.0, 0.0)
    platform = replace(bound.platform, devices={
        n: replace(d, hop_s=d.hop_s + hop) for n, d in bound.platform.devices.items()})
    cost = estimate(bound.compiled, platform, vote)
    alone = cores_left(1)  # one request at a time: one of the run's processes busy at once
    if alone < 1.0:
        slowed = replace(platform, devices={
            n: _slowed(d, alone) if d.profile == "host" else d
            for n, d in platform.devices.items()})
        cost.latency_s = estimate(bound.compiled, slowed, vote).latency_s
    relayed = sum(1 for t in cost.transfers if t.src_device != t.dst_device)
    cost.coordinator_busy_s += cpu * relayed
    cost.host_share_s = host_share_s(platform, cost.devices, cost.coordinator_busy_s)
    hosts = [d for n, d in cost.devices.items() if platform.devices[n].profile == "host"]
    if hosts:  # the run's processes together, on what the others leave of the cores
        together = sum(d.busy_s for d in hosts) + cost.coordinator_busy_s
        cost.period_s = max(cost.period_s, together / cores_left(len(hosts) + 1))
    return cost


def _slowed(device: Any, share: float) -> Any:
    """``device`` (a ``platform.Device``) on ``share`` of a core: its work takes longer."""
    return replace(device, mac_rate=device.mac_rate * share, clock_hz=device.clock_hz * share,
                   stage_s=device.stage_s / share, message_s=device.message_s / share,
                   crypto_fixed_s={a: v / share for a, v in device.crypto_fixed_s.items()})


def cores_left(busy: int) -> float:
    """The cores ``busy`` processes of ours get together, with the others' load as
    calibrated (``core_share``; all of them without a calibration)."""
    figures = cached_calibration() or {}
    alone = float(figures.get("core_share", {}).get("value", 1.0))
    cores = machine_cores()
    others = max(cores / alone - 1, 0.0) if alone > 0 else 0.0
    return cores * min(1.0, busy / (others + busy))


def fidelity(bound: Bound, result: Any, stats: dict[str, dict[str, Any]], *, window: int,
             batch: int = 1, vote: int = 1, emulated: bool = False, network: str = "loopback",
             before: dict[str, dict[str, Any]] | None = None) -> Fidelity:
    """``result`` (a ``StreamResult``) and the workers' ``stats`` against the cost model."""
    cost = estimate_run(bound, vote, emulated)
    return Fidelity(window, batch, result.samples, measured(result, stats, before),
                    predicted(cost, window, batch, result.samples), calibrated_figures(bound),
                    network)
