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
Float rounding makes the test ``|<r, y> − <Aᵀr, z> − <r, c>| ≤ bound``, with ``bound``
what float32 rounding can make of the difference (``verifier.rounding_bound``): from
the layer's accumulation length ``n`` (``accumulation``) and its operands' magnitudes
``|A|ᵀr``, ``<r, |c|>``, ``|z|``, never from ``<r, c>`` itself. Per output it is the
forward-error bound ``γ_n Σ|a_i||b_i|``, ``γ_n = nu/(1−nu)`` (Higham, Accuracy and
Stability of Numerical Algorithms, 2nd ed., §3.1); summed over the outputs as
independent rounding errors (Higham and Mary, SIAM J. Sci. Comput. 2019) with
``tolerance`` = λ = 8 standard bounds, an honest claim fails with probability below
``2 exp(−32)`` under that model (the worst case caps it), and a lie of 1% of the
layer's output rms on one element is caught at the ``2**-rounds`` rate on every
layer of the zoo models (``tests/test_freivalds.py``). Each claim is one convolution
or linear layer with its batch norms, so the bound is that of one accumulation.
The vectors are the verifier's secret, drawn anew for every sample.
A sample whose check fails is not answered (fail closed) and is counted.

On workers (``Cluster(..., freivalds=ROUNDS)``, ``shardguard run --freivalds 2``),
``checked_plan`` splits each stage into a prover and a verifier stage on another
device, which holds a secret pool of ``pool`` vectors per layer (with ``Aᵀr``)
instead of the layer's weights, and draws ``rounds`` distinct ones per sample.
Against a prover that does not know the pool, a wrong claim passes every round
with probability at most ``2**-rounds`` on average over the pool's draw; the pool
is new at every deployment.

A verifier is trusted with no more than a prover: the prover also sends its own
outputs to the verifiers of its consumers, and the last stage's to the coordinator,
so what a verifier forwards is held to what the prover computed; a stage with no
affine layer gets a verifier too (it recomputes the stage), so that chain does not
break; and no device verifies two stages next to each other (``assign_verifiers``).
So one device that lies, as a prover or only as a verifier, is caught, provided the
plan's links are sealed (on unsealed links any device can pose as another) and it
does not run two neighbouring stages itself. What the check does not cover: a
device that runs a stage and the next one (spatial and channel plans put a tile and
the stage gathering it on one device) can hand the next stage's verifier a false
copy of the first stage's outputs and compute the next stage on it, consistently;
closing that needs each verifier to compare the prover's copy with the one the
producer's verifier forwards, as the coordinator does for the last stage. Nor are
two colluding devices covered, nor an adaptive prover that learns the pool from
which of many wrong claims pass. Nor does an alarm always name the liar.

Here: the local check (``Freivalds``, an interceptor for ``LocalExecutor``). The
affine claims both halves share are in ``_freivalds_affine.py``; the plan for
workers (``checked_plan``, ``assign_verifiers``) in ``_freivalds_plan.py``; both are
re-exported here.
"""

from __future__ import annotations

import torch
from torch import nn

from ..hooks import Redundant, Traffic
from ..partition.compile import StageProgram
from ._freivalds_affine import (
    AFFINE,
    Chain,
    Record,
    accumulation,
    adjoints,
    affine_chains,
    probes,
)
from ._freivalds_plan import assign_verifiers, checked_plan, verifier_devices
from .verifier import LAMBDA, fails

__all__ = ["AFFINE", "Chain", "Freivalds", "adjoints", "affine_chains", "assign_verifiers",
           "checked_plan", "verifier_devices"]


class Freivalds(Redundant):
    """Verifies covered stages' affine layers with ``rounds`` Freivalds vectors each."""

    def __init__(self, rounds: int = 2, tolerance: float = LAMBDA,
                 stages: list[str] | None = None, seed: int = 0) -> None:
        self.rounds, self.tolerance, self.stages = rounds, tolerance, stages
        self.generator = torch.Generator().manual_seed(seed)
        self.checked = self.caught = 0
        self.verifier_macs = self.stage_macs = 0  # per sample, summed over covered stages
        self._affine: dict[str, list[Chain]] = {}
        self.flagged: list[torch.Tensor] = []  # per stage run: (B,) samples that failed a check
        self.work_of: dict[str, float] = {}  # stage → verifier work / the stage's MACs
        self.claim_bytes: dict[str, int] = {}  # stage → affine outputs sent per sample

    def covers(self, program: StageProgram) -> bool:
        return self.stages is None or program.name in self.stages

    def _chains(self, program: StageProgram) -> list[Chain]:
        assert program.module is not None
        if program.name not in self._affine:
            self._affine[program.name] = affine_chains(program.module)
        return self._affine[program.name]

    def compute(self, program: StageProgram, args: list[torch.Tensor]) -> list[torch.Tensor]:
        """The stage's outputs, then each affine chain's output: what the device sends."""
        assert program.module is not None
        run = Record(program.module, self._chains(program))
        outputs = list(run.run(*args))
        return [*outputs, *(run.outputs[c.last] for c in self._chains(program))]

    def combine(self, program: StageProgram, args: list[torch.Tensor],
                copies: list[list[torch.Tensor] | None],
                traffic: Traffic) -> list[torch.Tensor] | None:
        claimed = copies[0]
        if claimed is None:
            return None
        assert program.module is not None
        chains = self._chains(program)
        n_out = len(claimed) - len(chains)
        claims = {c.last: y for c, y in zip(chains, claimed[n_out:])}
        verifier = Record(program.module, chains, claims)
        outputs = list(verifier.run(*args))  # the verifier's own, from the checked claims
        batch = args[0].shape[0] if args else outputs[0].shape[0]
        bad = torch.zeros(batch, dtype=torch.bool)
        work = 0
        for chain in chains:
            layer, z, y = chain.layer(program.module), verifier.inputs[chain.last], \
                claims[chain.last]
            for _ in range(self.rounds):
                bad |= self._fails(layer, z, y)
            # <r, y>, and <u, z>, <ua, |z|>, <uw, z²>: the check and its rounding bound
            work += self.rounds * (3 * z[0].numel() + y[0].numel())
        self.checked += batch
        self.caught += int(bad.sum())
        self.flagged.append(bad)
        self.work_of[program.name] = work / max(program.macs, 1)
        self.claim_bytes[program.name] = sum(y[0].numel() * y.element_size()
                                             for y in claims.values())
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
        # a worker's verifier uses a pool of these
        z_shape = tuple(z.shape[1:])
        u, offset, ua, oa, uw, oa2 = (t.numpy() for t in probes(layer, r, z_shape))
        return torch.from_numpy(fails(y.numpy(), z.numpy(), r.numpy(), u, offset, ua, oa,
                                      (accumulation(layer), uw, oa2), self.tolerance))

    def report(self) -> dict[str, float]:
        return {"checked": self.checked, "caught": self.caught,
                "error_probability": 2.0 ** -self.rounds,
                "verifier_work_ratio": self.verifier_macs / max(self.stage_macs, 1)}
