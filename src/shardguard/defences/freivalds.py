"""Computation integrity by randomised checks (M4): Freivalds on a stage's affine layers.

    check = Freivalds(rounds=2)            # every stage, or stages=[...]
    LocalExecutor(compiled, [ThreatInterceptor(Compromised(target="pi2")), check])
    check.report()     # samples checked, caught, verifier work against the stage's

As in Slalom (Tramèr & Boneh, ICLR 2019), the device running a stage sends the
output of each of its affine layers (convolution, linear, batch norm in eval mode),
and a verifier device recomputes only the cheap rest (activations, pooling, sums)
from those values, checking each affine claim ``y = A z + c`` by Freivalds'
method: for a random ``r`` in {0, 1}^n, ``<r, y> = <Aᵀr, z> + <r, c>``, where
``Aᵀr`` and ``<r, c>`` are computed once per layer (by autograd, exact for any
affine layer), so a check costs two dot products, not the layer's MACs.

Error probability: a claim that is wrong by ``e`` passes one round only if
``<r, e> = 0``, which for uniform ``r`` in {0, 1}^n happens with probability at most
1/2 (Freivalds 1977); ``rounds`` independent vectors leave at most ``2**-rounds``.
Float rounding makes the test ``|<r, y> − <Aᵀr, z> − <r, c>| ≤ tolerance · scale``,
with ``scale`` the Euclidean norm of the terms (rounding grows with it, not with
the layer's size), so an error smaller than about ``tolerance`` of that norm passes
by design. The vectors are the verifier's secret, drawn anew for every sample.
A sample whose check fails is not answered (fail closed) and is counted.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from ..partition.compile import StageProgram
from ..runtime.local import Redundant, Traffic

AFFINE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


def affine_nodes(module: fx.GraphModule) -> list[str]:
    """The stage's nodes that are affine maps of their single input."""
    modules = dict(module.named_modules())
    return [n.name for n in module.graph.nodes
            if n.op == "call_module" and isinstance(modules[n.target], AFFINE)]


class _Record(fx.Interpreter):
    """Runs a stage, keeping each affine node's input and output."""

    def __init__(self, module: fx.GraphModule, affine: set[str],
                 claims: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(module)
        self.affine, self.claims = affine, claims
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.name not in self.affine:
            return super().run_node(n)
        self.inputs[n.name] = self.env[n.args[0]]  # type: ignore[index]
        if self.claims is not None:  # the verifier: take the claim, check it later
            value = self.claims[n.name]
        else:
            value = super().run_node(n)
        self.outputs[n.name] = value
        return value


class Freivalds(Redundant):
    """Verifies covered stages' affine layers with ``rounds`` Freivalds vectors each."""

    def __init__(self, rounds: int = 2, tolerance: float = 1e-4, stages: list[str] | None = None,
                 seed: int = 0) -> None:
        self.rounds, self.tolerance, self.stages = rounds, tolerance, stages
        self.generator = torch.Generator().manual_seed(seed)
        self.checked = self.caught = 0
        self.verifier_macs = self.stage_macs = 0  # per sample, summed over covered stages
        self._affine: dict[str, list[str]] = {}
        self.flagged: list[torch.Tensor] = []  # per stage run: (B,) samples that failed a check
        self.work_of: dict[str, float] = {}  # stage → verifier work / the stage's MACs
        self.claim_bytes: dict[str, int] = {}  # stage → affine outputs sent per sample

    def covers(self, program: StageProgram) -> bool:
        return self.stages is None or program.name in self.stages

    def _nodes(self, program: StageProgram) -> list[str]:
        assert program.module is not None
        if program.name not in self._affine:
            self._affine[program.name] = affine_nodes(program.module)
        return self._affine[program.name]

    def compute(self, program: StageProgram, args: list[torch.Tensor]) -> list[torch.Tensor]:
        """The stage's outputs, then each affine node's output: what the device sends."""
        assert program.module is not None
        run = _Record(program.module, set(self._nodes(program)))
        outputs = list(run.run(*args))
        return [*outputs, *(run.outputs[n] for n in self._nodes(program))]

    def combine(self, program: StageProgram, args: list[torch.Tensor],
                copies: list[list[torch.Tensor] | None],
                traffic: Traffic) -> list[torch.Tensor] | None:
        claimed = copies[0]
        if claimed is None:
            return None
        assert program.module is not None
        nodes = self._nodes(program)
        n_out = len(claimed) - len(nodes)
        claims = dict(zip(nodes, claimed[n_out:]))
        verifier = _Record(program.module, set(nodes), claims)
        outputs = list(verifier.run(*args))  # the verifier's own, from the checked claims
        batch = args[0].shape[0] if args else outputs[0].shape[0]
        bad = torch.zeros(batch, dtype=torch.bool)
        modules = dict(program.module.named_modules())
        targets = {n.name: n.target for n in program.module.graph.nodes}
        work = 0
        for name in nodes:
            layer, z, y = modules[targets[name]], verifier.inputs[name], claims[name]
            for _ in range(self.rounds):
                bad |= self._fails(layer, z, y)
            work += self.rounds * (z[0].numel() + y[0].numel())
        self.checked += batch
        self.caught += int(bad.sum())
        self.flagged.append(bad)
        self.work_of[program.name] = work / max(program.macs, 1)
        self.claim_bytes[program.name] = sum(claims[n][0].numel() * claims[n].element_size()
                                             for n in nodes)
        self.verifier_macs += work
        self.stage_macs += program.macs
        for t in program.outputs:
            if bad.any():
                traffic.drop(t, bad)
        return outputs

    @torch.no_grad()
    def _fails(self, layer: nn.Module, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B,) samples whose claim ``y`` fails one round, each with its own vector."""
        r = torch.randint(0, 2, y.shape, generator=self.generator).to(y.dtype)
        probe = torch.zeros(z.shape, dtype=z.dtype, requires_grad=True)
        with torch.enable_grad():  # Aᵀr per sample (a real verifier keeps a pool, made once)
            out = layer(probe)
            (adjoint,) = torch.autograd.grad((out * r).sum(), probe)
        offset = (out.detach() * r).flatten(1).sum(1)  # <r, c>: the layer's value at zero
        ry, uz = (y * r).flatten(1), (z * adjoint).flatten(1)
        lhs, rhs = ry.sum(1), uz.sum(1) + offset
        # float rounding grows with the terms' Euclidean size, not their count
        scale = (ry.square().sum(1) + uz.square().sum(1) + offset.square()).sqrt()
        finite = torch.isfinite(y).flatten(1).all(1)
        return ~((lhs - rhs).abs() <= self.tolerance * scale) | ~finite

    def report(self) -> dict[str, float]:
        return {"checked": self.checked, "caught": self.caught,
                "error_probability": 2.0 ** -self.rounds,
                "verifier_work_ratio": self.verifier_macs / max(self.stage_macs, 1)}
