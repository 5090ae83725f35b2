"""Freivalds on workers (M4): the plan transformed, each checked stage split in two.

    checked, verifiers = checked_plan(bound.compiled, rounds=2)   # what Cluster deploys

Each checked stage ``S`` becomes a prover ``S`` (its affine layers' outputs, the
claims, as extra outputs) and a verifier stage ``S~check`` on another device
(``assign_verifiers``: never one that verifies a neighbouring stage too), which
holds a secret pool of vectors instead of ``S``'s weights; ``defences/verifier.py``
runs the check there. Why the pieces are wired as they are is in ``freivalds.py``.
"""

from __future__ import annotations

import copy
import secrets
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import fx

from ..errors import ConfigError
from ..partition import regions
from ..partition.compile import INPUT, OUTPUT, CompiledPlan, StageProgram, Transfer
from ._freivalds_affine import Chain, Record, accumulation, affine_chains, probes
from .verifier import LAMBDA, SUFFIX, Pool, Verifier


def checked_plan(compiled: CompiledPlan, *, rounds: int = 2, pool: int = 16,
                 tolerance: float = LAMBDA, stages: list[str] | None = None
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
    split = _Split(assign_verifiers(compiled, stages), rounds)
    for p in compiled.programs:
        assert p.module is not None
        if p.name in split.hosts:
            # a stage without affine layers is checked too, by recomputing it: else what
            # the verifier of a stage feeding it forwards would go on unchecked
            split.check(p, generator, pool, tolerance)
    programs = [q for p in compiled.programs for q in split.rewired(p)]
    return CompiledPlan(compiled.plan, compiled.graph, programs), split.verifiers


@dataclass
class _Split:
    """What ``checked_plan`` decides for each checked stage, then the programs it makes."""

    hosts: dict[str, list[str]]  # checked stage → its verifier's device, then stand-ins
    rounds: int
    checked: dict[str, str] = field(default_factory=dict)  # prover → verifier stage
    claims: dict[str, list[Transfer]] = field(default_factory=dict)  # prover → its claims
    verifiers: dict[str, Verifier] = field(default_factory=dict)  # verifier stage → its pools

    def check(self, p: StageProgram, generator: torch.Generator, pool: int,
              tolerance: float) -> None:
        """Name ``p``'s verifier stage, its claims, and draw its secret pool."""
        assert p.module is not None
        chains = affine_chains(p.module)
        name = self.checked[p.name] = p.name + SUFFIX
        record = Record(p.module, chains)
        with torch.no_grad():
            record.run(*(torch.zeros(1, *t.shape) for t in p.inputs))
        self.claims[p.name] = [Transfer(p.name, name, c.last,
                                        regions.full(record.outputs[c.last].shape[1:]), 4)
                               for c in chains]
        pools = []
        for k, chain in enumerate(chains):
            y_shape = tuple(record.outputs[chain.last].shape[1:])
            r = torch.randint(0, 2, (pool, *y_shape), generator=generator).float()
            layer = chain.layer(p.module)
            z_shape = tuple(record.inputs[chain.last].shape[1:])
            u, offset, ua, oa, uw, oa2 = (t.numpy() for t in probes(layer, r, z_shape))
            pools.append(Pool(f"in{len(p.inputs) + k}", r.numpy(), u, offset, ua, oa, uw, oa2,
                              accumulation(layer)))
        self.verifiers[name] = Verifier(p.name, f"{p.name}>{name}", pools, self.rounds,
                                        tolerance)

    def sender(self, t: Transfer) -> Transfer:
        """``t`` as sent: a checked stage's outputs come from its verifier."""
        return replace(t, src=self.checked.get(t.src, t.src))

    def rewired(self, p: StageProgram) -> list[StageProgram]:
        """``p`` as deployed: its prover and verifier stages if checked, else ``p`` rewired."""
        assert p.module is not None
        checked = self.checked
        inputs = [self.sender(t) for t in p.inputs]
        forward = [self.sender(t) for t in p.outputs]  # what p's consumers receive
        # A verifier is trusted only for the stage it checks, so what it forwards is
        # checked against what the prover computed: the verifiers of p's consumers get
        # p's outputs from p itself, and so does the coordinator when p is checked (it
        # compares them with what p's verifier sends it).
        witness = [i for i, t in enumerate(p.outputs)
                   if t.dst in checked or (t.dst == OUTPUT and p.name in checked)]
        witnessed = [replace(p.outputs[i], dst=checked.get(p.outputs[i].dst, OUTPUT))
                     for i in witness]
        if p.name not in checked:
            return [replace(p, inputs=inputs, outputs=forward + witnessed,
                            replicas=list(p.replicas), module=_with_outputs(p.module, witness))]
        mine = self.claims[p.name]
        prover = replace(p, inputs=inputs, outputs=mine + witnessed, replicas=list(p.replicas),
                         module=_prover(p.module, [t.tensor for t in mine], witness))
        return [prover, self._verifier_stage(p, forward)]

    def _verifier_stage(self, p: StageProgram, forward: list[Transfer]) -> StageProgram:
        """``S~check``: ``p``'s inputs and claims in, ``p``'s outputs (``forward``) out."""
        assert p.module is not None
        name = self.checked[p.name]
        pools = self.verifiers[name].pools
        device, *spare = self.hosts[p.name]
        return StageProgram(
            name=name, segment=p.segment, split=p.split, device=device,
            replicas=spare, nodes=list(p.nodes),
            module=_verifier(p.module, affine_chains(p.module)),
            inputs=[replace(t, dst=name) for t in p.inputs] + self.claims[p.name],
            outputs=forward,
            # per round: <r, y>, and <u, z>, <ua, |z|>, <uw, z²> (the check and its bound)
            macs=self.rounds * sum(q.r[0].size + 3 * q.u[0].size for q in pools),
            param_bytes=sum(q.r.nbytes + q.u.nbytes + q.ua.nbytes + q.uw.nbytes
                            for q in pools),
            activation_bytes=p.activation_bytes)


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
