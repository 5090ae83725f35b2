"""Channel partitioning: the output channels of convolutions split across devices, then gathered.

Each convolution (ordinary or depthwise), with the batch norm, activation and
pooling that act on its channels one by one, becomes a segment split into
channel groups sized to device speed; a device computes its group from the whole
input (a depthwise group from its own input channels only). Everything else — a
residual add, a fully connected layer, a global pooling, a gate — gathers the
channels on one leader device and runs there whole.
"""

from __future__ import annotations

from ..graph import Graph
from ..platform import Platform
from . import pipeline
from ._segment import SegmentBuilder
from .build import Planned, assemble_plan, check_memory, whole
from .plan import ModelRef, Objective, SegmentSpec, StageSpec
from .regions import split_evenly


def chains(graph: Graph, min_macs: float = 0.0) -> list[tuple[int, int]]:
    """Spans [a, b] (0-based, inclusive) of compute nodes that form channel-splittable chains."""
    names = [n.name for n in graph.compute_nodes]
    t = pipeline.tables(graph)
    found: list[tuple[int, int]] = []
    a = 0
    while a < len(names):
        node = graph.by_name[names[a]]
        best = None
        if node.kind == "conv" and node.macs >= min_macs and t.valid[a]:
            live_in = pipeline.live_at(graph, t, a)
            for b in range(a, len(names)):
                live_out = pipeline.live_at(graph, t, b + 1)
                builder = SegmentBuilder(graph, names[a:b + 1], live_in, live_out, "none", "")
                builder.split = "channel"
                if not builder.channel_chain_ok():
                    break
                best = b
        if best is None:
            a += 1
            continue
        found.append((a, best))
        a = best + 1
    return found


def channel_segments(graph: Graph, devices: list[str], rates: list[float], leader: str,
                     min_macs: float = 0.0) -> list[SegmentSpec]:
    """Channel segments over ``devices`` (group sizes ∝ ``rates``), gathers on ``leader``.

    Group 0 of every split segment also forwards the tensors that skip it (a residual
    branch); it is the leader's, so that losing any other device loses only its channels.
    """
    names = [n.name for n in graph.compute_nodes]
    if leader in devices:  # the leader computes group 0, which also carries the tensors
        order = [devices.index(leader), *[i for i, d in enumerate(devices) if d != leader]]
        devices, rates = [devices[i] for i in order], [rates[i] for i in order]
    segments: list[SegmentSpec] = []
    position = 0

    def gather(upto: int) -> None:
        nonlocal position
        if upto > position:
            segments.append(whole(graph, position, upto - 1, f"g{len(segments)}", leader))
        position = upto

    for a, b in chains(graph, min_macs):
        gather(a)
        channels = graph.by_name[names[a]].shape[1]
        parts = min(len(devices), channels)
        spans = split_evenly(channels, rates[:parts])
        k = len(segments)
        segments.append(SegmentSpec(first=names[a], last=names[b], split="channel", stages=[
            StageSpec(name=f"c{k}.{i}", device=devices[i], channels=[c0, c1])
            for i, (c0, c1) in enumerate(spans)]))
        position = b + 1
    gather(len(names))
    return segments


def plan_channel(graph: Graph, model: ModelRef, platform: Platform, objective: Objective,
                 protection: str = "none", count: int | None = None) -> Planned:
    """The best channel plan over leader devices and which convolutions to split;
    ``count``: split over exactly that many devices (the fastest)."""
    devices = sorted(platform.names, key=lambda d: -platform.devices[d].mac_rate)[:count]
    rates = [platform.devices[d].mac_rate for d in devices]
    biggest = max((n.macs for n in graph.compute_nodes if n.kind == "conv"), default=0)
    best: Planned | None = None
    for fraction in (0.0, 0.1, 0.5):
        for leader in devices:
            segments = channel_segments(graph, devices, rates, leader, fraction * biggest)
            planned = assemble_plan(graph, model, platform, "channel", objective, segments,
                                    protection)
            if planned.cost.overflows():
                continue
            if best is None or planned.cost.objective(objective) < best.cost.objective(objective):
                best = planned
    if best is None:  # nothing fits split this way: fall back to the pipeline plan
        planned = pipeline.plan_pipeline(graph, model, platform, objective, protection, count)
        planned.plan.strategy = "channel"
        return planned
    check_memory(best)
    return best
