"""A stage's affine claims (M4): the maps Freivalds checks, and how to record and probe them.

    chains = affine_chains(program.module)            # conv → batch norm: one chain
    run = Record(program.module, chains)              # the prover's run, claims kept
    u, offset = adjoints(chain.layer(module), r, z_shape)   # Aᵀr and <r, c>, per row of r
    u, offset, *bound = probes(chain.layer(module), r, z_shape)  # and its rounding bound

Shared by the local check (``freivalds.Freivalds``) and the plan for workers
(``_freivalds_plan.checked_plan``); the method and its error probability are in
``freivalds.py``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

AFFINE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class Chain:
    """Affine nodes in a row, each the only user of the one before (a convolution and its
    batch norms): one affine map, so one claim (the last node's output) and one check.
    A chain holds one convolution or linear layer: two in a row are two claims, so that
    each check's rounding bound is that of one accumulation, not a product of them."""

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
        mixing = not isinstance(modules[n.target], nn.BatchNorm1d | nn.BatchNorm2d)
        if isinstance(prev, fx.Node) and prev.name in names and len(prev.users) == 1 \
                and chains and chains[-1][-1] == prev.name and not mixing:
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


def accumulation(layer: nn.Module) -> int:
    """The rounded operations behind one output of an affine ``layer`` (a chain): a
    convolution's or linear layer's fan-in plus its bias, and two (scale, shift) for a
    batch norm. Roundings compound: ``(1+γ_a)(1+γ_b) ≤ 1+γ_{a+b}`` (Higham, Lemma 3.3)."""
    n = 0
    for m in layer.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            n += m.weight[0].numel() + (m.bias is not None)
        elif isinstance(m, nn.Linear):
            n += m.in_features + (m.bias is not None)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n += 2
    return n


class _ScaleShift(nn.Module):
    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, *[1] * (x.dim() - 2))
        return x * self.scale.view(shape) + self.shift.view(shape)


def magnitudes(layer: nn.Module) -> nn.Module:
    """``|A| z + |c|`` for an affine ``layer`` ``A z + c`` (a chain), in float64: every
    weight and bias by its absolute value, a batch norm as ``|s| x + |t|``."""
    parts: list[nn.Module] = []
    for m in (layer if isinstance(layer, nn.Sequential) else [layer]):
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            assert m.running_var is not None and m.running_mean is not None
            scale = (m.weight if m.weight is not None else 1) / torch.sqrt(
                m.running_var.double() + m.eps)
            shift = (m.bias if m.bias is not None else 0) - m.running_mean.double() * scale
            parts.append(_ScaleShift(scale.double().abs().detach(),
                                     shift.double().abs().detach()))
        else:
            m = copy.deepcopy(m).double()
            for p in m.parameters():
                p.data.abs_()
            parts.append(m)
    return nn.Sequential(*parts)


@torch.no_grad()
def probes(layer: nn.Module, r: torch.Tensor, z_shape: tuple[int, ...]
           ) -> tuple[torch.Tensor, ...]:
    """For each row of ``r``, in float64: ``Aᵀr``, ``<r, c>`` (the check), and ``|A|ᵀr``,
    ``<r, |c|>``, ``|A|ᵀ(r ⊙ w)`` (``w``: the row sums of ``|A|``) and ``<r, c²>`` (its
    rounding bound, ``verifier.rounding_bound``)."""
    r = r.double()
    u, offset = adjoints(copy.deepcopy(layer).double(), r, z_shape)
    size = magnitudes(layer)
    ua, oa = adjoints(size, r, z_shape)
    c = size(torch.zeros((1, *z_shape), dtype=torch.float64))
    w = size(torch.ones((1, *z_shape), dtype=torch.float64)) - c
    uw, _ = adjoints(size, r * w, z_shape)
    return u, offset, ua, oa, uw, (r * c * c).flatten(1).sum(1)
