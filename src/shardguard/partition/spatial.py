"""Spatial partitioning: fused tiles of a convolutional prefix (DeepThings-style).

The longest prefix of the graph made of layers that act locally in space
(convolutions, pooling, batch norm, activations, residual adds, channel
concatenations) is cut into a grid of output tiles, one per device. Each device
computes its tile through the whole fused prefix from the input region it needs
(the tile's receptive field, halos included, computed exactly from kernel,
stride, padding and dilation), so the stitched result equals the unpartitioned
one. Tile sizes follow device speed. Where the prefix ends (a global pooling, a
fully connected layer, a gate), the plan gathers and the rest is planned as a
pipeline.
"""

from __future__ import annotations

from ..graph import Graph
from ..platform import Platform
from . import pipeline
from ._segment import SegmentBuilder
from .build import Planned, assemble_plan, check_memory
from .plan import ModelRef, Objective, SegmentSpec, StageSpec
from .regions import split_evenly


def prefix_ends(graph: Graph, t: pipeline.Tables) -> list[int]:
    """Positions e (1-based) where nodes 1..e can be fused tiles and only node e is live."""
    builder = SegmentBuilder(graph, t.names, [graph.nodes[0].name], [], "none", "spatial")
    ends = []
    for e, name in enumerate(t.names, start=1):
        if builder.local_kind(name) is None:
            break
        if pipeline.live_at(graph, t, e) == [name]:
            ends.append(e)
    return ends


def grids(n: int) -> list[tuple[int, int]]:
    """(rows, cols) grids of n tiles."""
    return [(r, n // r) for r in range(1, n + 1) if n % r == 0]


def tile_stages(devices: list[str], rates: list[float], height: int, width: int,
                rows: int, cols: int, prefix: str = "t") -> list[StageSpec]:
    """A rows × cols grid of tiles; row heights follow the summed speed of each row's devices."""
    per_row = [devices[r * cols:(r + 1) * cols] for r in range(rows)]
    row_rates = [sum(rates[r * cols:(r + 1) * cols]) for r in range(rows)]
    stages = []
    for r, (r0, r1) in enumerate(split_evenly(height, row_rates)):
        col_spans = split_evenly(width, rates[r * cols:(r + 1) * cols])
        for c, (c0, c1) in enumerate(col_spans):
            stages.append(StageSpec(name=f"{prefix}{r}{c}", device=per_row[r][c],
                                    rows=[r0, r1], cols=[c0, c1]))
    return stages


def plan_spatial(graph: Graph, model: ModelRef, platform: Platform, objective: Objective,
                 protection: str = "none", count: int | None = None,
                 max_candidates: int = 12) -> Planned:
    """The best fused-tile plan found over prefix lengths and tile grids; ``count``:
    exactly that many tiles (devices) in the tiled prefix."""
    t = pipeline.tables(graph)
    ends = prefix_ends(graph, t)
    if not ends:  # nothing can be tiled: the pipeline plan is the spatial plan
        planned = pipeline.plan_pipeline(graph, model, platform, objective, protection, count)
        planned.plan.strategy = "spatial"
        return planned
    # keep the longest prefixes, and a spread of shorter ones
    step = max(1, len(ends) // max_candidates)
    candidates = sorted(set(ends[::-1][:max_candidates // 2] + ends[::step]))
    devices = sorted(platform.names, key=lambda d: -platform.devices[d].mac_rate)
    rates = [platform.devices[d].mac_rate for d in devices]
    best: Planned | None = None
    for e in candidates:
        last = graph.by_name[t.names[e - 1]]
        _, height, width = last.shape[1:]
        # the pipeline after the prefix depends only on where the prefix ends: solve it once
        rest = (pipeline.solve(graph, platform, objective, protection=protection, t=t, start=e)
                if e < len(t.names) else None)
        for k in ([count] if count else range(2, len(devices) + 1)):
            for rows, cols in grids(k):
                if rows > height or cols > width:
                    continue
                stages = tile_stages(devices[:k], rates[:k], height, width, rows, cols)
                segments = [SegmentSpec(first=t.names[0], last=t.names[e - 1], split="spatial",
                                        stages=stages)]
                if rest is not None:
                    segments += pipeline.segments_for(graph, rest)
                planned = assemble_plan(graph, model, platform, "spatial", objective, segments,
                                        protection)
                if planned.cost.overflows():
                    continue
                if best is None or (planned.cost.objective(objective)
                                    < best.cost.objective(objective)):
                    best = planned
    if best is None:
        planned = pipeline.plan_pipeline(graph, model, platform, objective, protection, count)
        planned.plan.strategy = "spatial"
        return planned
    check_memory(best)
    return best
