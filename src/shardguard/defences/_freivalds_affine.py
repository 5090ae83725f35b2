"""A stage's affine claims (M4): the maps Freivalds checks, and how to record and probe them.

    chains = affine_chains(program.module)            # conv → batch norm: one chain
    run = Record(program.module, chains)              # the prover's run, claims kept
    u, offset = adjoints(chain.layer(module), r, z_shape)   # Aᵀr and <r, c>, per row of r

Shared by the local check (``freivalds.Freivalds``) and the plan for workers
(``_freivalds_plan.checked_plan``); the method and its error probability are in
``freivalds.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

AFFINE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class Chain:
    """Affine nodes in a row, each the only user of the one before (a convolution and its
    batch norm): one affine map, so one claim (the last node's output) and one check."""

    nodes: tuple[str, ...]

    @property
    def last(self) -> str:
        return self.nodes[-1]

    def layer(self, module: fx.GraphModule) -> nn.Module:
        targets = {n.name: str(n.target) for n in module.graph.nodes}
        return nn.Sequential(*(module.get_submodule(targets[n]) for n in self.nodes))


def affine_chains(module: fx.GraphModule) -> list[Chain]:
    """The stage's affine maps of a single input, longest chains first to last."""
    modules = dict(module.named_modules())
    affine = [n for n in module.graph.nodes
              if n.op == "call_module" and isinstance(modules[n.target], AFFINE)]
    names = {n.name for n in affine}
    chains: list[list[str]] = []
    for n in affine:
        prev = n.args[0]
        if isinstance(prev, fx.Node) and prev.name in names and len(prev.users) == 1 \
                and chains and chains[-1][-1] == prev.name:
            chains[-1].append(n.name)
        else:
            chains.append([n.name])
    return [Chain(tuple(c)) for c in chains]


@torch.no_grad()
def adjoints(layer: nn.Module, r: torch.Tensor, z_shape: tuple[int, ...]
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``Aᵀr`` (B, *z) and ``<r, c>`` (B,) of an affine ``layer`` for each row of ``r``.

    By autograd, exact for any affine layer: the gradient of ``<r, layer(z)>`` in ``z``
    is ``Aᵀr``, and ``layer(0) = c``.
    """
    probe = torch.zeros((len(r), *z_shape), dtype=r.dtype, requires_grad=True)
    with torch.enable_grad():
        out = layer(probe)
        (u,) = torch.autograd.grad((out * r).sum(), probe)
    return u, (out.detach() * r).flatten(1).sum(1)


class Record(fx.Interpreter):
    """Runs a stage, keeping each affine chain's input and output (by its last node)."""

    def __init__(self, module: fx.GraphModule, chains: list[Chain],
                 claims: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(module)
        self.member = {n: c for c in chains for n in c.nodes}
        self.claims = claims
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        chain = self.member.get(n.name)
        if chain is None:
            return super().run_node(n)
        if n.name == chain.nodes[0]:
            self.inputs[chain.last] = self.env[n.args[0]]  # type: ignore[index]
        value: Any
        if self.claims is not None:  # the verifier: take the claim, check it later
            value = self.claims[chain.last] if n.name == chain.last else None
        else:
            value = super().run_node(n)
        if n.name == chain.last:
            self.outputs[chain.last] = value
        return value
