"""Pipeline partitioning: contiguous cuts of the topological order, optimal by dynamic programming.

A pipeline plan cuts the graph's nodes (in topological order) into stages and
puts each stage on its own device. Every tensor live at a cut (a residual
branch, say) travels on that cut's link. The DP finds, exactly under the cost
model (``partition/cost.py``), the cuts and the device of every stage that
minimise the objective, with every stage fitting its device's memory:

* ``latency``      Σ stage time + Σ link time (source and sink included)
* ``throughput``   max over stages and links of their time per request
* ``energy``       max over devices of active energy per inference
* ``energy-total`` Σ over devices of active energy per inference

State: (set of devices used, device of the last stage, position of the last
cut). Each step adds one stage on an unused device. Every (state, next device)
pair is one vectorised min-plus (or min-max) product over (cut, next cut), so
ResNet-50 on 8 devices plans in well under a second. Exact for point-to-point
links; on a shared medium the throughput objective counts each link alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import PlanningError
from ..graph import Graph
from ..platform import Device, Platform
from .build import Planned, assemble_plan, check_memory, whole
from .cost import algorithm
from .plan import ModelRef, Objective, SegmentSpec

SUM_OBJECTIVES = ("latency", "energy-total")


@dataclass(frozen=True)
class Tables:
    """Per-position quantities of a graph, for positions 0..N (cut j = after the j-th node)."""

    names: list[str]  # compute nodes, in order (node j is names[j - 1])
    macs: np.ndarray  # prefix sums, (N + 1,)
    params: np.ndarray  # prefix sums of parameter bytes, (N + 1,)
    cut: np.ndarray  # bytes live at each cut, (N + 1,)
    valid: np.ndarray  # whether only tensors are live at a cut, (N + 1,)
    peak: np.ndarray  # peak activation bytes of stage (i, j], (N + 1, N + 1)
    live: np.ndarray  # [cut j, producer t]: tensor t is live at cut j, (N + 1, N + 1) bool
    #: prefix sums of MACs per layer type (``Node.layer_type``), (N + 1,) each
    typed: dict[str, np.ndarray] = field(default_factory=dict)

    def seconds(self, spec: Device) -> np.ndarray:
        """[cut i, cut j]: seconds ``spec`` computes stage (i, j], at its rate per layer type."""
        busy: np.ndarray = (self.macs[None, :] - self.macs[:, None]) / spec.mac_rate
        for kind, macs in self.typed.items():
            if kind in spec.layer_speed:
                busy += (macs[None, :] - macs[:, None]) * (1 / spec.rate_for(kind)
                                                           - 1 / spec.mac_rate)
        return busy


def tables(graph: Graph) -> Tables:
    nodes = graph.compute_nodes
    n = len(nodes)
    where = {graph.nodes[0].name: 0, **{x.name: k + 1 for k, x in enumerate(nodes)},
             graph.nodes[-1].name: n + 1}
    producers = [graph.nodes[0], *nodes]  # position t produces producers[t]
    out = np.array([p.out_bytes for p in producers], dtype=np.float64)
    last_use = np.array([max((where[s] for s in graph.successors[p.name]), default=-1)
                         for p in producers])
    is_tensor = np.array([len(p.shape) > 0 and p.out_bytes > 0 for p in producers])
    pos = np.arange(n + 1)
    produced_by = pos[None, :] <= pos[:, None]  # [cut j, producer t]: t ≤ j
    live = produced_by & (last_use[None, :] > pos[:, None])
    cut = (live * out[None, :]).sum(1)
    valid = ~(live & ~is_tensor[None, :]).any(1)
    # live before node k (k = 1..N): produced before k, used at or after k
    before = ((pos[None, :] < pos[:, None]) & (last_use[None, :] >= pos[:, None])) * out[None, :]
    step = before.sum(1) + out  # working set while node k runs (index k)
    peak = np.full((n + 1, n + 1), np.inf)
    for i in range(n):
        peak[i, i + 1:] = np.maximum.accumulate(step[i + 1:])
    macs = np.concatenate([[0], np.cumsum([x.macs for x in nodes])]).astype(np.float64)
    params = np.concatenate([[0], np.cumsum([x.param_bytes for x in nodes])]).astype(np.float64)
    typed = {kind: np.concatenate([[0], np.cumsum([x.macs * (x.layer_type == kind)
                                                   for x in nodes])]).astype(np.float64)
             for kind in ("conv", "depthwise", "linear")}
    return Tables([x.name for x in nodes], macs, params, cut, valid, peak, live, typed)


def live_at(graph: Graph, t: Tables, cut: int) -> list[str]:
    """Names of the tensors live at ``cut`` (after ``cut`` compute nodes)."""
    producers = [graph.nodes[0].name, *t.names]
    return [producers[i] for i in np.flatnonzero(t.live[cut])]


@dataclass(frozen=True)
class PipelineSolution:
    cuts: list[int]  # stage k covers nodes (cuts[k], cuts[k + 1]]
    devices: list[str]
    value: float  # the objective, as the DP computed it


def solve(graph: Graph, platform: Platform, objective: str, *, protection: str = "none",
          devices: list[str] | None = None, t: Tables | None = None,
          start: int = 0, stages: int | None = None) -> PipelineSolution:
    """The optimal pipeline (cuts and devices) for ``objective`` on ``platform``.

    ``start`` > 0 plans only nodes after cut ``start`` (the rest of a split plan), with
    the tensors live at that cut arriving across the medium. ``stages``: exactly that
    many stages (on as many devices), else as many as is best.
    """
    t = t or tables(graph)
    names = devices or platform.names
    specs = [platform.devices[d] for d in names]
    n, nd = len(t.names), len(names)
    comb = np.add if objective in SUM_OBJECTIVES else np.maximum
    stage = _stage_values(t, platform, specs, objective, algorithm(protection))
    links = {(a, b): _link_value(t, platform, names[a], names[b], objective)
             for a in range(nd) for b in range(nd) if a != b}
    best, back = _best_chains(t, platform, stage, links, objective, start)
    final = [(comb(v[n], _edge_value(platform, objective, t.cut[n])), key)
             for key, v in best.items() if stages is None or bin(key[0]).count("1") == stages]
    value, key = min(final, key=lambda item: item[0]) if final else (np.inf, (0, -1))
    if not np.isfinite(value) and stages is not None:
        raise PlanningError(f"no pipeline of {stages} stages fits the devices' memory "
                            f"({nd} devices, {n - start} nodes to place)")
    if not np.isfinite(value):
        need = t.params[n] - t.params[start] + t.peak[start, n] + t.cut[start] + t.cut[n]
        largest = max(s.memory_bytes for s in specs)
        raise PlanningError(f"no pipeline fits the devices' memory (the whole model needs "
                            f"{need / 1e6:.1f} MB; the largest device has {largest / 1e6:.1f} MB)")
    cuts, chosen = [n], []
    mask, d, j = key[0], key[1], n
    while d >= 0:  # walk the back pointers from the last stage to the first
        chosen.append(names[d])
        prev_d, prev_i = back[(mask, d)][0][j], back[(mask, d)][1][j]
        mask, d, j = mask & ~(1 << d), int(prev_d), int(prev_i)
        cuts.append(j)
    cuts = cuts[::-1]
    cuts[0] = start
    return PipelineSolution(cuts, chosen[::-1], float(value))


def _stage_values(t: Tables, platform: Platform, specs: list[Device], objective: str,
                  alg: str) -> np.ndarray:
    """[device d, cut i, cut j]: the value of stage (i, j] on device d; inf where it is not a
    stage (j ≤ i, or a cut where a non-tensor is live) or does not fit d's memory."""
    n, medium = len(t.names), platform.medium
    i_idx, j_idx = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    upper = (j_idx > i_idx) & t.valid[:, None] & t.valid[None, :]
    sealed_in = np.where(np.arange(n + 1) > 0, t.cut, 0.0)  # bytes opened on receipt
    sealed_out = np.where(np.arange(n + 1) < n, t.cut, 0.0)  # bytes sealed to send
    stage = np.empty((len(specs), n + 1, n + 1))
    for d, spec in enumerate(specs):
        crypto = (0.0 if alg == "none" else
                  (sealed_in[:, None] + sealed_out[None, :]) * spec.crypto_cycles(alg)
                  / spec.clock_hz)
        busy = t.seconds(spec) + crypto
        memory = t.params[None, :] - t.params[:, None] + t.peak + t.cut[:, None] + t.cut[None, :]
        if objective in ("energy", "energy-total"):
            value = (spec.active_power_w * busy
                     + spec.radio_j_per_byte(medium, False) * t.cut[:, None]
                     + spec.radio_j_per_byte(medium, True) * t.cut[None, :])
        else:
            value = busy
        stage[d] = np.where(upper & (memory <= spec.memory_bytes), value, np.inf)
    return stage


def _link_value(t: Tables, platform: Platform, a: str, b: str, objective: str) -> np.ndarray:
    """Value of crossing each cut from device a to device b."""
    if objective in ("energy", "energy-total"):
        return np.zeros(len(t.names) + 1)
    lk = platform.link(a, b)
    occupancy = 8 * t.cut / lk.bandwidth_bps
    return occupancy + lk.latency_s if objective == "latency" else occupancy


def _edge_value(platform: Platform, objective: str, nbytes: float) -> float:
    """Value of source → first stage or last stage → sink, across the medium."""
    if objective in ("energy", "energy-total"):
        return 0.0
    medium = platform.medium
    occupancy = 8 * nbytes / medium.bandwidth_bps
    return occupancy + medium.latency_s if objective == "latency" else occupancy


Back = dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]


def _best_chains(t: Tables, platform: Platform, stage: np.ndarray,
                 links: dict[tuple[int, int], np.ndarray], objective: str,
                 start: int) -> tuple[dict[tuple[int, int], np.ndarray], Back]:
    """The DP: for each (devices used as a bit mask, device of the last stage), the best value
    of a chain of stages from cut ``start`` ending at each cut, and back pointers
    (previous device, previous cut) to recover it."""
    n, nd = stage.shape[1] - 1, stage.shape[0]
    comb = np.add if objective in SUM_OBJECTIVES else np.maximum
    best: dict[tuple[int, int], np.ndarray] = {}
    back: Back = {}  # (prev device, prev cut)
    for d in range(nd):
        best[(1 << d, d)] = comb(_edge_value(platform, objective, t.cut[start]), stage[d][start])
        back[(1 << d, d)] = (np.full(n + 1, -1), np.zeros(n + 1, dtype=int))
    for mask in sorted(range(1, 1 << nd), key=lambda m: bin(m).count("1")):
        for d in range(nd):
            value = best.get((mask, d))
            if value is None or not np.isfinite(value[start:n]).any():
                continue
            for d2 in range(nd):
                if mask >> d2 & 1:
                    continue
                arrive = comb(value, links[(d, d2)])  # (i,)
                cand = comb(arrive[:, None], stage[d2])  # (i, j)
                arg = cand.argmin(0)
                got = cand[arg, np.arange(n + 1)]
                key = (mask | 1 << d2, d2)
                if key not in best:
                    best[key] = np.full(n + 1, np.inf)
                    back[key] = (np.full(n + 1, -1), np.zeros(n + 1, dtype=int))
                better = got < best[key]
                best[key] = np.where(better, got, best[key])
                back[key][0][better] = d
                back[key][1][better] = arg[better]
    return best, back


def segments_for(graph: Graph, solution: PipelineSolution, prefix: str = "s",
                 first_index: int = 0) -> list[SegmentSpec]:
    """One unsplit segment per stage of ``solution``."""
    return [whole(graph, a, b - 1, f"{prefix}{first_index + k}", device)
            for k, (a, b, device) in enumerate(zip(solution.cuts, solution.cuts[1:],
                                                   solution.devices))]


def plan_pipeline(graph: Graph, model: ModelRef, platform: Platform, objective: Objective,
                  protection: str = "none", count: int | None = None) -> Planned:
    """The optimal pipeline plan (see ``solve``); ``count``: exactly that many stages."""
    solution = solve(graph, platform, objective, protection=protection, stages=count)
    planned = assemble_plan(graph, model, platform, "pipeline", objective,
                            segments_for(graph, solution), protection)
    check_memory(planned)
    return planned
