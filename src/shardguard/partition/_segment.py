"""One segment of a plan: which regions each of its stages needs, holds and computes.

``SegmentBuilder`` checks that a segment can be split the way the plan says,
computes the exact regions of every node a stage must compute (fused tiles:
the receptive field of the stage's output tile, layer by layer, with halos),
and emits the stage's ``fx.GraphModule``: assemble received pieces, compute,
crop what each consumer needs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import fx, nn

from ..errors import PlanningError
from ..graph import Graph
from . import regions
from ._layers import (
    CHANNELWISE_MODULES,
    PIXELWISE_MODULES,
    POINTWISE_FUNCTIONS,
    POINTWISE_METHODS,
    is_window,
    pair,
    slice_channels,
    sliced_bytes,
)
from .plan import StageSpec
from .regions import Region

T = TypeVar("T")


@dataclass
class Piece:
    """What one stage of a segment needs, holds and computes (regions per sample)."""

    needs: dict[str, Region]  # segment input → region this stage must receive
    held: dict[str, Region]  # segment output → region this stage sends on
    computed: dict[str, Region]  # node → region this stage computes
    macs: int
    param_bytes: int = 0  # weights and buffers this stage holds
    activation_bytes: int = 0  # peak live activations while it runs (one sample)


def _crop(x: torch.Tensor, starts: tuple[int, ...], stops: tuple[int, ...]) -> torch.Tensor:
    """Crop a batched tensor to [starts, stops) in its non-batch dimensions."""
    return x[(slice(None), *[slice(a, b) for a, b in zip(starts, stops)])]


class SegmentBuilder:
    """Regions and programs for the stages of one segment."""

    def __init__(self, graph: Graph, nodes: list[str], inputs: list[str], outputs: list[str],
                 split: str, where: str) -> None:
        self.graph, self.nodes, self.split, self.where = graph, nodes, split, where
        self.inputs, self.outputs = inputs, outputs
        self.fx = {n.name: n for n in graph.module.graph.nodes}
        self._inputs_of: dict[str, list[str]] = {}
        self.modules = dict(graph.module.named_modules())
        inside = set(nodes)
        self.produced = [t for t in outputs if t in inside]
        self.passing = [t for t in outputs if t not in inside]
        self.consumed = [t for t in inputs if any(s in inside for s in graph.successors[t])]
        if split == "spatial":
            self._check_spatial()
        elif split == "channel":
            self._check_channel()

    # -- checks --------------------------------------------------------------------------
    def _shape(self, name: str) -> tuple[int, ...]:
        return self.graph.by_name[name].shape[1:]

    def _tensor_inputs(self, name: str) -> list[str]:
        if name not in self._inputs_of:  # asked for every node of every piece: keep them
            self._inputs_of[name] = [a.name for a in self.fx[name].all_input_nodes]
        return self._inputs_of[name]

    def _fail(self, message: str) -> PlanningError:
        return PlanningError(f"{self.where}: {message}")

    def local_kind(self, name: str) -> str | None:
        """'window', 'pointwise' or 'cat' when fused tiles can compute ``name``, else None."""
        node = self.fx[name]
        shape = self._shape(name)
        ins = self._tensor_inputs(name)
        if len(shape) != 3 or any(len(self._shape(u)) != 3 for u in ins) or not ins:
            return None
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            if is_window(module):
                return "window"
            return "pointwise" if isinstance(module, PIXELWISE_MODULES) else None
        same_plane = all(self._shape(u)[1:] == shape[1:] for u in ins)
        if node.op == "call_function":
            if node.target in (torch.cat, torch.concat):
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
                return "cat" if dim in (1, -3) and same_plane else None
            return "pointwise" if node.target in POINTWISE_FUNCTIONS and same_plane else None
        if node.op == "call_method":
            return "pointwise" if node.target in POINTWISE_METHODS and same_plane else None
        return None

    def _check_spatial(self) -> None:
        for name in self.nodes:
            if self.local_kind(name) is None:
                raise self._fail(f"node {name} cannot be split into spatial tiles "
                                 f"({self.graph.by_name[name].kind})")
        if self.produced != [self.nodes[-1]]:
            raise self._fail("a spatial segment must end where only its last node is live "
                             f"(live: {', '.join(self.produced)})")

    def channel_chain_ok(self) -> bool:
        try:
            self._check_channel()
        except PlanningError:
            return False
        return True

    def _check_channel(self) -> None:
        head = self.fx[self.nodes[0]]
        conv = self.modules.get(str(head.target)) if head.op == "call_module" else None
        if not isinstance(conv, nn.Conv2d) or not (
                conv.groups == 1 or conv.groups == conv.in_channels == conv.out_channels):
            raise self._fail(f"a channel segment starts with a Conv2d (groups 1 or depthwise), "
                             f"not {self.nodes[0]}")
        for prev, name in zip(self.nodes, self.nodes[1:]):
            node = self.fx[name]
            module = self.modules.get(str(node.target)) if node.op == "call_module" else None
            ok = (isinstance(module, CHANNELWISE_MODULES)
                  or (node.op == "call_function" and node.target in POINTWISE_FUNCTIONS)
                  or (node.op == "call_method" and node.target in POINTWISE_METHODS))
            if not ok or self._tensor_inputs(name) != [prev] or \
                    list(self.graph.successors[prev]) != [name]:
                raise self._fail(f"node {name} does not act channel by channel on {prev}")
        if self.produced != [self.nodes[-1]]:
            raise self._fail("a channel segment must end where only its last node is live")

    # -- regions -------------------------------------------------------------------------
    def piece(self, stage: StageSpec, index: int) -> Piece:
        """Regions, MACs, weights and peak activations of stage number ``index``."""
        piece = self._regions(stage, index)
        piece.param_bytes = self._param_bytes(stage)
        piece.activation_bytes = self._peak(piece)
        return piece

    def _param_bytes(self, stage: StageSpec) -> int:
        if self.split != "channel":
            return sum(self.graph.by_name[n].param_bytes for n in self.nodes)
        assert stage.channels is not None
        total = 0
        for name in self.nodes:
            node = self.fx[name]
            if node.op == "call_module":
                total += sliced_bytes(self.modules[str(node.target)], *stage.channels)
        return total

    def _peak(self, piece: Piece) -> int:
        """Peak bytes of live activations: received pieces, then each node's output in turn."""
        live = {t: regions.numel(r) * _bytes_per(self.graph, t) for t, r in piece.needs.items()}
        uses = dict.fromkeys([*live, *self.nodes], 0)  # how many of the nodes read each
        for n in self.nodes:  # one pass: a count per tensor was quadratic in a segment's size
            for u in set(self._tensor_inputs(n)):
                if u in uses:
                    uses[u] += 1
        peak = sum(live.values())
        for name in self.nodes:
            out_bytes = regions.numel(piece.computed[name]) * _bytes_per(self.graph, name)
            peak = max(peak, sum(live.values()) + out_bytes)
            live[name] = out_bytes
            for u in set(self._tensor_inputs(name)):
                uses[u] -= 1
                if uses[u] == 0 and u not in piece.held:
                    live.pop(u, None)
        return peak

    def _regions(self, stage: StageSpec, index: int) -> Piece:
        full = {n: regions.full(self._shape(n)) for n in [*self.inputs, *self.nodes]}
        passing = {t: full[t] for t in self.passing} if index == 0 else {}
        if self.split == "none":
            macs = sum(self.graph.by_name[n].macs for n in self.nodes)
            return Piece({t: full[t] for t in self.inputs},
                         {t: full[t] for t in self.outputs}, {n: full[n] for n in self.nodes}, macs)
        last = self.nodes[-1]
        if self.split == "channel":
            assert stage.channels is not None
            c0, c1 = stage.channels
            channels = self._shape(self.nodes[0])[0]
            if c1 > channels:
                raise self._fail(f"stage {stage.name}: channels {stage.channels} beyond {channels}")
            computed = {n: ((c0, c1), *full[n][1:]) for n in self.nodes}
            conv = self.modules[str(self.fx[self.nodes[0]].target)]
            source = self._tensor_inputs(self.nodes[0])[0]
            need = full[source] if conv.groups == 1 else ((c0, c1), *full[source][1:])
            needs = {source: need}
            for t, r in passing.items():
                needs[t] = regions.hull([needs[t], r]) if t in needs else r
            macs = self.graph.by_name[self.nodes[0]].macs * (c1 - c0) // channels
            return Piece(needs, {last: computed[last], **passing}, computed, macs)
        assert stage.rows is not None and stage.cols is not None
        _, height, width = self._shape(last)
        if stage.rows[1] > height or stage.cols[1] > width:
            raise self._fail(f"stage {stage.name}: tile rows {stage.rows} cols {stage.cols} "
                             f"beyond the {height}×{width} output of {last}")
        computed = {last: (full[last][0], tuple(stage.rows), tuple(stage.cols))}
        needs: dict[str, Region] = {}
        inside = set(self.nodes)
        for name in reversed(self.nodes):
            if name not in computed:
                raise self._fail(f"node {name} feeds nothing in its spatial segment")
            for u in self._tensor_inputs(name):
                want = regions.clip(self.input_region(name, u, computed[name]), self._shape(u))
                target = computed if u in inside else needs
                target[u] = regions.hull([target[u], want]) if u in target else want
        for t, r in passing.items():
            needs[t] = regions.hull([needs[t], r]) if t in needs else r
        macs = sum(self.graph.by_name[n].macs * regions.numel(computed[n]) // regions.numel(full[n])
                   for n in self.nodes)
        return Piece(needs, {last: computed[last], **passing}, computed, macs)

    def input_region(self, name: str, source: str, out: Region) -> Region:
        """Region of ``source`` (unclipped) that ``name`` reads to compute ``out``."""
        channels = regions.full(self._shape(source))[0]
        node = self.fx[name]
        if node.op == "call_module" and self.local_kind(name) == "window":
            module = self.modules[str(node.target)]
            if isinstance(module, nn.ConstantPad2d):  # (left, right, top, bottom)
                k, s, p, d = (1, 1), (1, 1), (module.padding[2], module.padding[0]), (1, 1)
            else:
                k, s = pair(module.kernel_size), pair(module.stride or module.kernel_size)
                p, d = pair(module.padding), pair(getattr(module, "dilation", 1))
            return (channels, *[regions.window_input(out[i + 1], k[i], s[i], p[i], d[i])
                                for i in range(2)])
        return (channels, out[1], out[2])

    # -- programs ------------------------------------------------------------------------
    def build(self, stage: StageSpec, index: int, piece: Piece, incoming: list[Any],
              outgoing: list[Any]) -> fx.GraphModule:
        """The stage's program: received pieces in, pieces to send out."""
        g = fx.Graph()
        root = nn.Module()
        env: dict[str, tuple[fx.Node, Region]] = {}
        by_tensor: dict[str, list[tuple[fx.Node, Region]]] = {}
        for i, t in enumerate(incoming):
            by_tensor.setdefault(t.tensor, []).append((g.placeholder(f"in{i}"), t.region))
        for tensor, pieces in by_tensor.items():
            joined = assemble(pieces, piece.needs[tensor],
                              lambda parts, dim: g.call_function(torch.cat, (parts, dim)),
                              lambda x, have, want: _crop_node(g, x, have, want))
            env[tensor] = (joined, piece.needs[tensor])
        for name in self.nodes:
            region = piece.computed[name]
            env[name] = (self._emit(g, root, name, region, env, stage, index), region)
        results = [_crop_node(g, env[t.tensor][0], env[t.tensor][1], t.region) for t in outgoing]
        g.output(tuple(results))
        gm = fx.GraphModule(root, g)
        gm.eval()
        return gm

    def _emit(self, g: fx.Graph, root: nn.Module, name: str, region: Region,
              env: dict[str, tuple[fx.Node, Region]], stage: StageSpec, index: int) -> fx.Node:
        node = self.fx[name]
        module = self.modules.get(str(node.target)) if node.op == "call_module" else None
        if self.split == "channel" and module is not None:
            assert stage.channels is not None
            module = slice_channels(module, *stage.channels)
            if isinstance(module, nn.Conv2d) and module.groups > 1:  # depthwise: own channels
                source = self._tensor_inputs(name)[0]
                x, have = env[source]
                want = (tuple(stage.channels), *have[1:])
                root.add_module(name, module)
                return g.call_module(name, (_crop_node(g, x, have, want),))
        elif self.split == "spatial" and module is not None and self.local_kind(name) == "window":
            source = self._tensor_inputs(name)[0]
            want = self.input_region(name, source, region)
            have = regions.clip(want, self._shape(source))
            x = _crop_node(g, *env[source], have)
            pads = (have[2][0] - want[2][0], want[2][1] - have[2][1],
                    have[1][0] - want[1][0], want[1][1] - have[1][1])
            if any(pads):
                value = float("-inf") if isinstance(module, nn.MaxPool2d) else 0.0
                if isinstance(module, nn.ConstantPad2d):
                    value = module.value
                x = g.call_function(nn.functional.pad, (x, pads), {"value": value})
            if isinstance(module, nn.ConstantPad2d):  # its padding is all in ``pads``
                return x
            module = copy.deepcopy(module)
            module.padding = 0 if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) else (0, 0)
            root.add_module(name, module)
            return g.call_module(name, (x,))
        elif module is not None:
            module = copy.deepcopy(module)

        def arg(a: fx.Node) -> fx.Node:
            src, have = env[a.name]
            if self.split == "spatial":  # crop each operand to this node's rows and columns
                want = (have[0], *region[1:])
                return _crop_node(g, src, have, want)
            return src

        args = fx.node.map_arg(node.args, arg)
        kwargs = fx.node.map_arg(node.kwargs, arg)
        if module is not None:
            root.add_module(name, module)
            return g.call_module(name, args, kwargs)  # type: ignore[arg-type]
        if node.op == "get_attr":
            value = self.graph.module
            for part in str(node.target).split("."):
                value = getattr(value, part)
            root.register_buffer(name, copy.deepcopy(value))
            return g.get_attr(name)
        if node.op == "call_method":
            return g.call_method(str(node.target), args, kwargs)  # type: ignore[arg-type]
        return g.call_function(node.target, args, kwargs)  # type: ignore[arg-type]


def _bytes_per(graph: Graph, name: str) -> int:
    node = graph.by_name[name]
    count = max(1, regions.numel(regions.full(node.shape[1:])))
    return node.out_bytes // count if node.out_bytes else 0


def _crop_node(g: fx.Graph, node: fx.Node, have: Region, want: Region) -> fx.Node:
    if have == want:
        return node
    if not regions.contains(have, want):
        raise PlanningError(f"internal: region {want} is not inside {have}")
    rel = regions.relative(want, have)
    return g.call_function(_crop, (node, tuple(a for a, _ in rel), tuple(b for _, b in rel)))


def assemble(pieces: list[tuple[T, Region]], target: Region,
             cat: Callable[[list[T], int], T], crop: Callable[[T, Region, Region], T]) -> T:
    """Join pieces that tile ``target`` (a grid along one or more dimensions).

    Works on fx nodes (building programs) and on tensors (collecting outputs):
    ``cat(parts, dim)`` concatenates along a batched dimension, ``crop(x, have, want)``
    cuts a piece down.
    """
    if len(pieces) == 1:
        value, region = pieces[0]
        return value if region == target else crop(value, region, target)
    for dim in range(len(target)):
        starts = sorted({r[dim][0] for _, r in pieces})
        if len(starts) > 1:
            parts = []
            for s in starts:
                group = [p for p in pieces if p[1][dim][0] == s]
                stop = max(r[dim][1] for _, r in group)
                sub = tuple((s, stop) if i == dim else span for i, span in enumerate(target))
                parts.append(assemble(group, sub, cat, crop))
            return cat(parts, dim + 1)
    raise PlanningError(f"internal: overlapping pieces for region {target}")


def assemble_tensors(pieces: list[tuple[torch.Tensor, Region]], target: Region) -> torch.Tensor:
    return assemble(pieces, target, lambda parts, dim: torch.cat(parts, dim), regions.crop)
