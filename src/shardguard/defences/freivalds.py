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
"""

from __future__ import annotations

import copy
import secrets
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import fx, nn

from ..errors import ConfigError
from ..hooks import Redundant, Traffic
from ..partition import regions
from ..partition.compile import INPUT, OUTPUT, CompiledPlan, StageProgram, Transfer
from .verifier import SUFFIX, Pool, Verifier, fails

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


class _Record(fx.Interpreter):
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


class Freivalds(Redundant):
    """Verifies covered stages' affine layers with ``rounds`` Freivalds vectors each."""

    def __init__(self, rounds: int = 2, tolerance: float = 1e-4, stages: list[str] | None = None,
                 seed: int = 0) -> None:
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
        run = _Record(program.module, self._chains(program))
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
        verifier = _Record(program.module, chains, claims)
        outputs = list(verifier.run(*args))  # the verifier's own, from the checked claims
        batch = args[0].shape[0] if args else outputs[0].shape[0]
        bad = torch.zeros(batch, dtype=torch.bool)
        work = 0
        for chain in chains:
            layer, z, y = chain.layer(program.module), verifier.inputs[chain.last], \
                claims[chain.last]
            for _ in range(self.rounds):
                bad |= self._fails(layer, z, y)
            work += self.rounds * (z[0].numel() + y[0].numel())
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
        u, offset = adjoints(layer, r, tuple(z.shape[1:]))  # a worker's verifier uses a pool
        return torch.from_numpy(fails(y.numpy(), z.numpy(), r.numpy(), u.numpy(),
                                      offset.double().numpy(), self.tolerance))

    def report(self) -> dict[str, float]:
        return {"checked": self.checked, "caught": self.caught,
                "error_probability": 2.0 ** -self.rounds,
                "verifier_work_ratio": self.verifier_macs / max(self.stage_macs, 1)}


# -- on workers: the plan, transformed -----------------------------------------------------

def checked_plan(compiled: CompiledPlan, *, rounds: int = 2, pool: int = 16,
                 tolerance: float = 1e-4, stages: list[str] | None = None
                 ) -> tuple[CompiledPlan, dict[str, Verifier]]:
    """``compiled`` with every covered stage ``S`` split into a prover and a verifier.

    The prover ``S`` runs on its devices and sends its affine layers' outputs (the
    claims) to ``S~check``; the verifier stage, on another device
    (``assign_verifiers``), receives ``S``'s inputs from
    their producers as well, recomputes the rest of ``S`` from the claims, checks
    them (``defences/verifier.py``) and sends ``S``'s outputs on. The prover also
    sends its own outputs to the verifiers of its consumers (and, for the last stage,
    to the coordinator), so that what a verifier forwards is itself held to what the
    prover computed: a device that lies only as a verifier is caught downstream.
    The verifier never holds ``S``'s affine weights, only ``pool`` secret vectors per
    layer, drawn here from the OS's randomness: new at every call.
    """
    if rounds < 1 or pool < rounds:
        raise ConfigError(f"Freivalds needs rounds ≥ 1 and a pool of at least that many "
                          f"vectors (each sample draws distinct ones), got {rounds} and {pool}")
    compiled.build()
    generator = torch.Generator().manual_seed(secrets.randbits(63))
    checked: dict[str, str] = {}  # prover → verifier stage
    claims: dict[str, list[Transfer]] = {}
    verifiers: dict[str, Verifier] = {}
    hosts = assign_verifiers(compiled, stages)
    for p in compiled.programs:
        assert p.module is not None
        if p.name not in hosts:
            continue
        # a stage without affine layers is checked too, by recomputing it: else what the
        # verifier of a stage feeding it forwards would go on unchecked
        chains = affine_chains(p.module)
        name = checked[p.name] = p.name + SUFFIX
        record = _Record(p.module, chains)
        with torch.no_grad():
            record.run(*(torch.zeros(1, *t.shape) for t in p.inputs))
        claims[p.name] = [Transfer(p.name, name, c.last,
                                   regions.full(record.outputs[c.last].shape[1:]), 4)
                          for c in chains]
        pools = []
        for k, chain in enumerate(chains):
            y_shape = tuple(record.outputs[chain.last].shape[1:])
            r = torch.randint(0, 2, (pool, *y_shape), generator=generator).float()
            u, offset = adjoints(chain.layer(p.module), r,
                                 tuple(record.inputs[chain.last].shape[1:]))
            pools.append(Pool(f"in{len(p.inputs) + k}", r.numpy(), u.numpy(),
                              offset.double().numpy()))
        verifiers[name] = Verifier(p.name, f"{p.name}>{name}", pools, rounds, tolerance)

    def sender(t: Transfer) -> Transfer:  # a checked stage's outputs come from its verifier
        return replace(t, src=checked.get(t.src, t.src))

    programs: list[StageProgram] = []
    for p in compiled.programs:
        assert p.module is not None
        inputs = [sender(t) for t in p.inputs]
        forward = [sender(t) for t in p.outputs]  # what p's consumers receive
        # A verifier is trusted only for the stage it checks, so what it forwards is
        # checked against what the prover computed: the verifiers of p's consumers get
        # p's outputs from p itself, and so does the coordinator when p is checked (it
        # compares them with what p's verifier sends it).
        witness = [i for i, t in enumerate(p.outputs)
                   if t.dst in checked or (t.dst == OUTPUT and p.name in checked)]
        witnessed = [replace(p.outputs[i], dst=checked.get(p.outputs[i].dst, OUTPUT))
                     for i in witness]
        if p.name not in checked:
            programs.append(replace(p, inputs=inputs, outputs=forward + witnessed,
                                    replicas=list(p.replicas),
                                    module=_with_outputs(p.module, witness)))
            continue
        mine = claims[p.name]
        programs.append(replace(p, inputs=inputs, outputs=mine + witnessed,
                                replicas=list(p.replicas),
                                module=_prover(p.module, [t.tensor for t in mine], witness)))
        chains = affine_chains(p.module)
        pools = verifiers[checked[p.name]].pools
        device, *spare = hosts[p.name]
        programs.append(StageProgram(
            name=checked[p.name], segment=p.segment, split=p.split, device=device,
            replicas=spare, nodes=list(p.nodes),
            module=_verifier(p.module, chains),
            inputs=[replace(t, dst=checked[p.name]) for t in p.inputs] + mine, outputs=forward,
            macs=rounds * sum(q.r[0].size + q.u[0].size for q in pools),
            param_bytes=sum(q.r.nbytes + q.u.nbytes for q in pools),
            activation_bytes=p.activation_bytes))
    return CompiledPlan(compiled.plan, compiled.graph, programs), verifiers


def verifier_devices(compiled: CompiledPlan, p: StageProgram) -> list[str]:
    """The devices that may verify ``p``, best first: never its own or its replicas';
    its consumers' (theirs, then their replicas), else its producers', else any other
    the plan uses, in that order of preference."""
    def hosts(names: list[str]) -> list[str]:
        programs = [compiled.by_name[n] for n in names]
        return [p.device for p in programs] + [d for p in programs for d in p.replicas]
    consumers = hosts([t.dst for t in p.outputs if t.dst != OUTPUT])
    producers = hosts([t.src for t in p.inputs if t.src != INPUT])
    ordered = dict.fromkeys([*consumers, *producers, *compiled.plan.devices_used()])
    return [d for d in ordered if d not in (p.device, *p.replicas)]


def assign_verifiers(compiled: CompiledPlan, stages: list[str] | None = None
                     ) -> dict[str, list[str]]:
    """The devices verifying each checked stage (every one, or ``stages``): the first
    verifies, the others stand in when it fails (up to as many as the stage has
    replicas, and only devices that keep the rule below; maybe none).

    No device verifies two stages of which one feeds the other, standing in or not:
    what a verifier forwards is checked by the next stage's verifier, so one device
    in both roles could pass its own lie on. Verifiers by a small search (each stage's
    devices in ``verifier_devices``' order), then stand-ins greedily; ``ConfigError``
    when no placement keeps the rule.
    """
    near: dict[str, set[str]] = defaultdict(set)
    for p in compiled.programs:
        for t in p.inputs:
            if t.src != INPUT:
                near[p.name].add(t.src)
                near[t.src].add(p.name)
    covered = [p for p in compiled.programs if stages is None or p.name in stages]
    options = {p.name: verifier_devices(compiled, p) for p in covered}
    for p in covered:
        if not options[p.name]:
            raise ConfigError(f"stage {p.name}: a Freivalds check needs a device other than "
                              f"{p.device} to verify it: plan on more devices")
    # a small search, most constrained stage first, each stage's best device first
    order = sorted(covered, key=lambda p: len(options[p.name]))
    chosen: dict[str, str] = {}
    budget = [100_000]

    def place(i: int) -> bool:
        if i == len(order):
            return True
        name = order[i].name
        taken = {chosen[n] for n in near[name] if n in chosen}
        for device in options[name]:
            budget[0] -= 1
            if device in taken or budget[0] < 0:
                continue
            chosen[name] = device
            if place(i + 1):
                return True
            del chosen[name]
        return False

    if not place(0):
        raise ConfigError(f"no placement of Freivalds verifiers keeps every device off two "
                          f"neighbouring stages ({len(covered)} stages on "
                          f"{len(compiled.plan.devices_used())} devices): plan on more devices")
    hosts = {p.name: [chosen[p.name]] for p in covered}
    for p in covered:  # stand-ins, where a device keeps the rule
        taken = {d for n in near[p.name] if n in hosts for d in hosts[n]}
        spare = [d for d in verifier_devices(compiled, p) if d not in taken | {hosts[p.name][0]}]
        hosts[p.name] += spare[:len(p.replicas)]
    return hosts


def _outputs(module: fx.GraphModule, pick: Any) -> fx.GraphModule:
    """A copy of ``module`` returning ``pick(old outputs, nodes by name)``; dead code goes."""
    graph = copy.deepcopy(module.graph)
    out = next(n for n in graph.nodes if n.op == "output")
    nodes = {n.name: n for n in graph.nodes}
    out.args = (tuple(pick(list(out.args[0]), nodes)),)
    result = fx.GraphModule(module, graph)
    result.graph.eliminate_dead_code()
    result.recompile()
    result.eval()
    return result


def _with_outputs(module: fx.GraphModule, copies: list[int]) -> fx.GraphModule:
    """Outputs ``copies`` sent a second time (to a verifier), after the others."""
    return module if not copies else _outputs(module, lambda old, _: [*old,
                                                                     *(old[i] for i in copies)])


def _prover(module: fx.GraphModule, nodes: list[str], copies: list[int]) -> fx.GraphModule:
    """The affine layers' outputs (what the prover claims), then the outputs ``copies``
    (for the verifiers downstream, or the coordinator, to hold its verifier to)."""
    return _outputs(module, lambda old, by_name: [*(by_name[n] for n in nodes),
                                                  *(old[i] for i in copies)])


def _verifier(module: fx.GraphModule, chains: list[Chain]) -> fx.GraphModule:
    """Inputs, then one claim per affine chain (used in its place); returns the stage's
    outputs, then each chain's input ``z``."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in module.graph.nodes:
        if n.op == "placeholder":
            env[n] = graph.placeholder(n.name)
    claim = {c.last: graph.placeholder(f"claim{k}") for k, c in enumerate(chains)}
    first = {c.nodes[0] for c in chains}
    inside = {n for c in chains for n in c.nodes}
    zs: list[fx.Node] = []
    for n in module.graph.nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            graph.output((*(env[a] for a in n.args[0]), *zs))
        elif n.name in inside:  # the chain's input is z; its output is the claim
            if n.name in first:
                zs.append(env[n.args[0]])
            if n.name in claim:
                env[n] = claim[n.name]
        else:
            env[n] = graph.node_copy(n, lambda a: env[a])
    result = fx.GraphModule(module, graph)
    result.graph.eliminate_dead_code()
    result.recompile()
    result.eval()
    return result
