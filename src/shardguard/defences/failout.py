"""Failout training (M6): drop a whole partition's output while training.

    planned = make_plan(graph, "lenet5", platform, strategy="channel")
    net = failout(graph, planned.compiled, p=0.3, seed=0)  # trains graph.module's parameters
    train(net, ...)                                         # then save the original module

A spatial or channel plan sends a tensor to the next stage in pieces, one per
device. When a device is missing, the runtime fills its piece with zeros and the
request still answers, degraded (``LocalExecutor``, ``Outcome.degraded``). Failout
trains for exactly that: with probability ``p`` per sample, one piece of every split
tensor, chosen at random, is zeroed in the forward pass, so the network learns not
to depend on any one device (after Hou & Wang's failout, arXiv:2002.07181).
In eval mode the inserted layers do nothing: the trained weights load into the
original model unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import fx, nn

from ..errors import ConfigError
from ..graph import Graph
from ..partition.compile import CompiledPlan
from ..partition.regions import Region


def split_tensors(compiled: CompiledPlan) -> dict[str, list[tuple[str, Region]]]:
    """Tensors a stage receives in more than one piece: node name → (sending device, region)."""
    pieces: dict[tuple[str, str], list[tuple[str, Region]]] = defaultdict(list)
    for t in [*(t for p in compiled.programs for t in p.inputs), *compiled.output_transfers]:
        if t.src in compiled.by_name:
            pieces[(t.dst, t.tensor)].append((compiled.by_name[t.src].device, t.region))
    out: dict[str, list[tuple[str, Region]]] = {}
    for (_, tensor), sent in pieces.items():
        if len(sent) > 1 and len(sent) > len(out.get(tensor, [])):
            out[tensor] = sent
    return out


class Failout(nn.Module):
    """A network that loses one device's pieces, per sample with probability ``p``, in training.

    The lost device is drawn once per sample and forward pass, so every piece it
    sends (at every split tensor) is zeroed together, as when that device is down.
    """

    def __init__(self, network: fx.GraphModule, devices: list[str], p: float,
                 seed: int, compiled: CompiledPlan) -> None:
        super().__init__()
        self.network, self.devices, self.p = network, devices, p
        self.generator = torch.Generator().manual_seed(seed)
        self.lost: torch.Tensor | None = None  # (B,) device index, -1 for none
        self.compiled = compiled  # the plan whose devices drop out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0:
            batch = x.shape[0]
            which = torch.randint(len(self.devices), (batch,), generator=self.generator)
            hit = torch.rand(batch, generator=self.generator) < self.p
            self.lost = torch.where(hit, which, torch.full_like(which, -1))
        try:
            return self.network(x)  # type: ignore[no-any-return]
        finally:
            self.lost = None


class DropPieces(nn.Module):
    """Zeros the pieces of its input that the lost device of each sample sent."""

    def __init__(self, owner: Failout, pieces: list[tuple[int, Region]]) -> None:
        super().__init__()
        self.pieces = pieces
        self._owner = [owner]  # a list: not a submodule, no cycle in the module tree

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lost = self._owner[0].lost
        if lost is None:
            return x
        keep = torch.ones_like(x)
        for device, region in self.pieces:
            rows = torch.nonzero(lost == device).flatten()
            if len(rows):
                index: tuple[torch.Tensor | slice, ...] = (rows, *(slice(a, b) for a, b in region))
                keep[index] = 0
        return x * keep


def failout(graph: Graph, compiled: CompiledPlan, p: float, seed: int = 0) -> Failout:
    """``graph.module`` with every tensor the plan splits losing a device's pieces in training.

    The result shares its parameters with ``graph.module`` (and so with the model
    it was traced from): training it trains them. In eval mode it computes exactly
    what the model does.
    """
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"failout probability must be in [0, 1), got {p}")
    split = split_tensors(compiled)
    if not split:
        raise ConfigError("failout needs a plan that splits a tensor across devices "
                          "(spatial or channel); this plan splits none")
    devices = sorted({device for sent in split.values() for device, _ in sent})
    fx_graph = fx.Graph()
    value_map: dict[fx.Node, fx.Node] = {}
    fx_graph.output(fx_graph.graph_copy(graph.module.graph, value_map))
    network = fx.GraphModule(graph.module, fx_graph)  # the same submodules, its own graph
    model = Failout(network, devices, p, seed, compiled)
    for node in list(fx_graph.nodes):
        if node.name not in split:
            continue
        name = f"failout_{node.name}"
        pieces = [(devices.index(device), region) for device, region in split[node.name]]
        network.add_submodule(name, DropPieces(model, pieces))
        with fx_graph.inserting_after(node):
            dropped = fx_graph.call_module(name, (node,))
        node.replace_all_uses_with(dropped, delete_user_cb=lambda user, d=dropped: user is not d)
    fx_graph.lint()
    network.recompile()
    return model


def failout_for(loaded: Any, p: float, strategy: str = "channel",
                platform: str = "rpi4x4-ethernet", seed: int = 0) -> Failout:
    """A loaded zoo model (``zoo.load_model``) wrapped for failout on ``strategy`` over
    ``platform``'s devices: trace, plan, then ``failout``."""
    from ..errors import ModelError
    from ..graph import trace
    from ..partition import make_plan
    from ..partition.plan import ModelRef
    from ..platform import load_platform

    if loaded.input_shape is None:
        raise ModelError(f"{loaded.name}: failout needs the input shape (use a zoo model)")
    graph = trace(loaded.module, loaded.input_shape)
    planned = make_plan(graph, ModelRef(ref=loaded.name, input_shape=list(loaded.input_shape)),
                        load_platform(platform), strategy=strategy)  # type: ignore[arg-type]
    return failout(graph, planned.compiled, p, seed)
