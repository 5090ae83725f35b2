"""Compile a Plan against its model's graph into one program per stage.

Every stage becomes a ``torch.fx.GraphModule`` that takes the pieces of tensors
it receives (one argument per incoming transfer) and returns the pieces it sends
(one result per outgoing transfer). Pieces are regions of per-sample tensors:
whole tensors for ``split: none``, tiles with exact halos for ``spatial``,
channel groups for ``channel``. The same programs run in the local executor,
are exported to ONNX for workers, and feed the cost model, so what is measured
is what runs.

Tensors live across segment boundaries by *forwarding*: a segment receives every
tensor that is live at its start and sends every tensor live at its end (the
first stage of a split segment carries tensors it does not itself use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import fx

from ..errors import ConfigError, PlanningError
from ..graph import Graph
from . import regions
from ._segment import Piece, SegmentBuilder
from .plan import Plan, SegmentSpec, StageSpec
from .regions import Region

INPUT, OUTPUT = "input", "output"


@dataclass(frozen=True)
class Transfer:
    """A piece of one tensor sent from one stage to another (per sample)."""

    src: str  # stage name or "input"
    dst: str  # stage name or "output"
    tensor: str  # graph node whose output this is a piece of
    region: Region
    itemsize: int

    @property
    def id(self) -> str:
        return f"{self.src}>{self.dst}:{self.tensor}"

    @property
    def shape(self) -> tuple[int, ...]:
        return regions.sizes(self.region)

    @property
    def nbytes(self) -> int:
        return regions.numel(self.region) * self.itemsize


@dataclass
class StageProgram:
    """What one stage computes, on which device, and what it receives and sends."""

    name: str
    segment: int
    split: str
    device: str
    replicas: list[str]
    nodes: list[str]
    module: fx.GraphModule | None  # None until ``CompiledPlan.build()``
    inputs: list[Transfer] = field(default_factory=list)
    outputs: list[Transfer] = field(default_factory=list)
    macs: int = 0
    param_bytes: int = 0
    activation_bytes: int = 0  # peak live activations while it runs, one sample
    precision: str = "fp32"  # "int8": runs quantized; the tensors it sends are int8

    @property
    def bytes_in(self) -> int:
        return sum(t.nbytes for t in self.inputs)

    @property
    def bytes_out(self) -> int:
        return sum(t.nbytes for t in self.outputs)

    @property
    def memory_bytes(self) -> int:
        """Weights + peak activations + receive and send buffers (double buffering)."""
        return self.param_bytes + self.activation_bytes + self.bytes_in + self.bytes_out


@dataclass
class Quantized:
    """An int8 plan's quantized stages (``runtime/quantize.py``)."""

    codecs: dict[str, tuple[float, int]]  # int8 transfer id → (scale, zero point)
    runners: dict[str, Callable[[list[torch.Tensor]], list[torch.Tensor]]]  # onnxruntime
    artifacts: dict[str, Any]  # stage → its ONNX artifact (``protocol.control.StageArtifact``)


@dataclass
class CompiledPlan:
    plan: Plan
    graph: Graph
    programs: list[StageProgram]  # in execution order
    _pending: list[tuple[SegmentBuilder, int, StageSpec, Piece]] = field(default_factory=list,
                                                                         repr=False)
    # an int8 plan's quantized stages (``runtime/quantize.py`` sets it): ONNX artifacts,
    # onnxruntime runners for the local executor, and each int8 transfer's (scale, zero point)
    quantized: Quantized | None = None

    def build(self) -> CompiledPlan:
        """Emit every stage's GraphModule (once)."""
        for builder, q, stage, piece in self._pending:
            prog = self.by_name[stage.name]
            prog.module = builder.build(stage, q, piece, prog.inputs, prog.outputs)
        self._pending = []
        return self

    @cached_property
    def by_name(self) -> dict[str, StageProgram]:
        return {p.name: p for p in self.programs}

    @property
    def transfers(self) -> list[Transfer]:
        out = [t for p in self.programs for t in p.inputs]
        return out + [t for p in self.programs for t in p.outputs if t.dst == OUTPUT]

    @property
    def input_transfers(self) -> list[Transfer]:
        return [t for p in self.programs for t in p.inputs if t.src == INPUT]

    @property
    def output_transfers(self) -> list[Transfer]:
        return [t for p in self.programs for t in p.outputs if t.dst == OUTPUT]

    def links(self) -> dict[tuple[str, str], list[Transfer]]:
        """Transfers grouped by (src stage, dst stage)."""
        grouped: dict[tuple[str, str], list[Transfer]] = {}
        for t in self.transfers:
            grouped.setdefault((t.src, t.dst), []).append(t)
        return grouped


@dataclass
class _Segment:
    spec: SegmentSpec
    index: int
    nodes: list[str]
    inputs: list[str]  # tensors live at the segment's start
    outputs: list[str]  # tensors live at its end


def _resolve_segments(plan: Plan, graph: Graph) -> list[_Segment]:
    order = [n.name for n in graph.compute_nodes]
    pos = {name: i for i, name in enumerate(order)}
    placeholder = graph.nodes[0].name
    out_node = graph.nodes[-1].name
    expected = 0
    segments = []
    for k, seg in enumerate(plan.segments):
        for end in (seg.first, seg.last):
            if end not in pos:
                raise ConfigError(f"segments.{k}: node {end!r} is not in the model's graph")
        a, b = pos[seg.first], pos[seg.last]
        if a != expected:
            what = f"starts at {seg.first!r}, expected {order[expected]!r}" if expected < len(
                order) else f"starts at {seg.first!r} after the last node"
            raise ConfigError(f"segments.{k}: {what} (every node assigned exactly once, in order)")
        if b < a:
            raise ConfigError(f"segments.{k}: last node {seg.last!r} comes before {seg.first!r}")
        expected = b + 1
        segments.append((seg, k, a, b))
    if expected != len(order):
        raise ConfigError(f"plan leaves nodes unassigned from {order[expected]!r} on")

    # position of each node, with the input at -1 and the final output after everything
    where = {placeholder: -1, **pos, out_node: len(order)}
    last_use = {n.name: max((where[s] for s in graph.successors[n.name]), default=-1)
                for n in graph.nodes}
    resolved = []
    for seg, k, a, b in segments:
        live_in = [t for t in [placeholder, *order[:a]] if last_use[t] >= a]
        live_out = [t for t in [placeholder, *order[:b + 1]] if last_use[t] > b]
        resolved.append(_Segment(seg, k, order[a:b + 1], live_in, live_out))
    return resolved


def compile_plan(plan: Plan, graph: Graph, *, build: bool = True) -> CompiledPlan:
    """Check ``plan`` against ``graph`` and build every stage's program.

    With ``build=False`` only regions, transfers and costs are worked out (enough for
    the cost model, and much faster on large models); ``CompiledPlan.build()`` adds
    the programs later.
    """
    segments = _resolve_segments(plan, graph)
    full_of = {n.name: regions.full(n.shape[1:]) for n in graph.nodes}
    itemsize = {n.name: _itemsize(n.dtype) for n in graph.nodes}
    programs: list[StageProgram] = []
    int8 = {st.name: st.precision == "int8" for st in plan.stages}  # these send int8
    built: list[tuple[SegmentBuilder, int, StageSpec, Piece]] = []
    previous: list[tuple[str, Piece]] | None = None  # the previous segment's stages
    for seg in segments:
        builder = SegmentBuilder(graph, seg.nodes, seg.inputs, seg.outputs, seg.spec.split,
                                 where=f"segments.{seg.index}")
        current = []
        for q, stage in enumerate(seg.spec.stages):
            piece = builder.piece(stage, q)
            incoming: list[Transfer] = []
            for tensor, need in piece.needs.items():
                holders = ([(INPUT, full_of[tensor])] if previous is None else
                           [(name, p.held[tensor]) for name, p in previous if tensor in p.held])
                covered = 0
                for src, have in holders:
                    part = regions.intersect(have, need)
                    if part is not None:
                        size = 1 if int8.get(src, stage.precision == "int8") else itemsize[tensor]
                        incoming.append(Transfer(src, stage.name, tensor, part, size))
                        covered += regions.numel(part)
                if covered != regions.numel(need):
                    raise PlanningError(f"stage {stage.name}: {tensor} is not fully delivered "
                                        f"({covered} of {regions.numel(need)} elements)")
            programs.append(StageProgram(
                name=stage.name, segment=seg.index, split=seg.spec.split, device=stage.device,
                replicas=list(stage.replicas), nodes=list(seg.nodes), module=None,
                inputs=incoming, macs=piece.macs, param_bytes=piece.param_bytes,
                activation_bytes=piece.activation_bytes, precision=stage.precision))
            built.append((builder, q, stage, piece))
            current.append((stage.name, piece))
        previous = current

    # outgoing transfers mirror the next segment's incoming ones; the last segment feeds "output"
    by_name = {p.name: p for p in programs}
    for p in programs:
        for t in p.inputs:
            if t.src != INPUT:
                by_name[t.src].outputs.append(t)
    assert previous is not None
    for tensor in segments[-1].outputs:
        for name, piece in previous:
            if tensor in piece.held:
                by_name[name].outputs.append(
                    Transfer(name, OUTPUT, tensor, piece.held[tensor],
                             1 if int8[name] else itemsize[tensor]))
    compiled = CompiledPlan(plan, graph, programs, built)
    if build:
        compiled.build()
    return compiled


def _itemsize(dtype: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype or "float32")).element_size()


