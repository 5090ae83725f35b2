"""The defences by name, for campaigns: what each adds to the executor and costs each device.

    none                      no defence
    seal:PROTECTION           M1–M3, e.g. seal:aead:chacha20-poly1305 (tampered: asked again,
                              as often as the runtime does, then lost)
    vote:2 | vote:3           M4, duplicate (detect) or triplicate (mask) every stage
    freivalds                 M4, every stage's affine layers checked on another device
    guard | guard:PLACEMENT   M5, Ranger's per-channel range guards profiled on clean
                              training data: on links, on every ReLU-family activation
                              inside the stages, or both (``guard`` = ``guard:both``)
    digest                    M7, weight digests checked on load; a changed stage is reloaded

``Defence.hooks`` places the defence's interceptors around the threat's;
``Defence.flagged`` is which samples it flagged; ``energy_j`` is what it costs each
device per inference in the cost model (the platform's sourced figures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from ..hooks import Interceptor
from ..partition.compile import INPUT, OUTPUT, CompiledPlan
from ..platform import Platform

KINDS = ("none", "seal", "vote", "freivalds", "guard", "digest")


@dataclass
class Defence:
    name: str
    kind: str
    arg: str = ""
    parts: list[Any] = field(default_factory=list)  # the live defence objects of one run

    @property
    def replicas(self) -> int:
        """Devices per stage the plan needs for this defence."""
        return int(self.arg) if self.kind == "vote" else 1

    @property
    def placement(self) -> str:
        """Where a guard defence clips: links, activations or both (see ``guards.py``)."""
        return (self.arg or "both") if self.kind == "guard" else ""

    def hooks(self, compiled: CompiledPlan, threat: list[Interceptor],
              bounds: Any = None, seed: int = 0) -> list[Interceptor]:
        """Fresh interceptors for one run: the threat's, with this defence's around them.

        ``bounds``: for a guard, ``(links, activations)`` from ``guards.profile_guards``."""
        from .freivalds import Freivalds
        from .guards import RangeGuard
        from .integrity import WeightCheck
        from .redundancy import Vote
        from .sealed import SealedLinks

        self.parts = []
        if self.kind == "seal":
            sealed = SealedLinks("retry")
            self.parts = [sealed]
            return sealed.around(threat)  # retransmissions cross the threat again
        if self.kind == "vote":
            self.parts = [Vote(copies=self.replicas)]
        elif self.kind == "freivalds":
            self.parts = [Freivalds(rounds=2, seed=seed)]
        elif self.kind == "guard":
            links, activations = bounds
            quant = compiled.quantized.codecs if compiled.quantized else None  # int8 links
            self.parts = [RangeGuard(links if self.placement != "activations" else None,
                                     activations if self.placement != "links" else None,
                                     quant=quant)]
        elif self.kind == "digest":
            self.parts = [WeightCheck(compiled)]  # digests of the weights as deployed
            return threat  # it checks stored weights, not what runs or crosses links
        return [*threat, *self.parts]

    def refuses_weights(self, compiled: CompiledPlan, batch: int) -> bool:
        """M7: whether the stages' weights changed since ``hooks`` (they are then refused,
        and reloaded from the trusted copy); always False for other defences."""
        return any(part.refuses(compiled, batch) for part in self.parts
                   if hasattr(part, "refuses"))

    def flagged(self, batch: int) -> torch.Tensor:
        """(B,) samples the defence flagged in the last run."""
        out = torch.zeros(batch, dtype=torch.bool)
        for part in self.parts:
            for mask in getattr(part, "flagged", []):
                out |= mask
        return out

    def energy_j(self, compiled: CompiledPlan, platform: Platform,
                 copies: int = 1) -> dict[str, float]:
        """Per device, joules per inference this defence adds (cost model). ``copies``: how
        many devices compute each stage (voting beside this defence, as ``explore`` runs
        it); a guard is charged on each of them. Other replicas are on standby (failover)
        and compute nothing, as in ``partition.cost``."""
        from ..partition.cost import estimate

        extra = {d: 0.0 for d in compiled.plan.devices_used()}
        if self.kind == "seal":
            from ..partition import compile_plan

            cost = estimate(compile_plan(compiled.plan.with_protection(self.arg), compiled.graph,
                                         build=False), platform)
            return {d: c.crypto_j for d, c in cost.devices.items()}
        if self.kind == "vote":  # the copies: compute, receive, seal, open and send, as
            base = estimate(compiled, platform)  # the workers run them (cost model, vote=k)
            voted = estimate(compiled, platform, vote=self.replicas)
            return {d: c.active_j - (base.devices[d].active_j if d in base.devices else 0.0)
                    for d, c in voted.devices.items()}
        part = self.parts[0] if self.parts else None
        if self.kind == "guard":
            return _guard_energy(compiled, platform, self.placement, copies)
        verifiers: dict[str, list[str]] | None = None  # Freivalds: as workers place them
        for p in compiled.programs:
            # who checks this stage: the device of the stage its outputs go to; for the
            # last stage, the coordinator (not a platform device: not costed here)
            checker = next((compiled.by_name[t.dst].device for t in p.outputs
                            if t.dst != OUTPUT), None)
            if self.kind == "freivalds" and part is not None:
                # as deployed on workers (checked_plan): the verifier receives the claims
                # and a copy of the stage's inputs, and computes the dot products (its
                # recomputation of activations and pooling is not counted)
                from .freivalds import assign_verifiers, verifier_devices

                if verifiers is None:
                    try:
                        verifiers = assign_verifiers(compiled)
                    except ConfigError:  # no placement keeps the workers' rule: the best
                        verifiers = {}   # device for each stage alone, as an estimate
                # a one-device plan can only check itself
                checker = (verifiers.get(p.name) or verifier_devices(compiled, p)
                           or [p.device])[0]
                spec = platform.devices[checker]
                extra[checker] += (spec.active_power_w * part.work_of.get(p.name, 0.0) * p.macs
                                   / spec.mac_rate)
                _radio(extra, platform, p.device, checker, part.claim_bytes.get(p.name, 0))
                for t in p.inputs:
                    if t.src != INPUT:
                        _radio(extra, platform, compiled.by_name[t.src].device, checker,
                               t.nbytes)
                continue
        return extra


def _guard_energy(compiled: CompiledPlan, platform: Platform, placement: str,
                  copies: int = 1) -> dict[str, float]:
    """Range guards: each guarded element (``guards.guarded_elements``) costs
    ``GUARD_OPS_PER_ELEMENT`` operations, each priced as a MAC, on the stage's device and
    on its first ``copies - 1`` replicas (a voting copy runs the guarded stage too; a
    standby replica does not)."""
    from .guards import GUARD_OPS_PER_ELEMENT, guarded_elements

    extra = {d: 0.0 for d in compiled.plan.devices_used()}
    for name, elements in guarded_elements(compiled, placement).items():
        program = compiled.by_name[name]
        for device in [program.device, *program.replicas][:max(1, copies)]:
            spec = platform.devices[device]
            extra[device] = extra.get(device, 0.0) + (
                spec.active_power_w * GUARD_OPS_PER_ELEMENT * elements / spec.mac_rate)
    return extra


def _radio(extra: dict[str, float], platform: Platform, src: str, dst: str, nbytes: int) -> None:
    if src == dst or not nbytes:
        return
    link = platform.link(src, dst)
    extra[src] += platform.devices[src].radio_j_per_byte(link, True) * nbytes
    extra[dst] += platform.devices[dst].radio_j_per_byte(link, False) * nbytes


def parse_defence(name: str) -> Defence:
    kind, _, arg = name.partition(":")
    if kind not in KINDS:
        raise ConfigError(f"unknown defence {name!r} (known: {', '.join(KINDS)}; "
                          "seal:PROTECTION, vote:2 or vote:3, guard:PLACEMENT)")
    if kind == "seal":
        from .seal import check_algorithm

        check_algorithm(arg)
    if kind == "vote" and arg not in ("2", "3"):
        raise ConfigError(f"defence {name!r}: vote:2 (detect) or vote:3 (mask)")
    if kind == "guard" and arg not in ("", "links", "activations", "both"):
        raise ConfigError(f"defence {name!r}: guard, guard:links, guard:activations or "
                          "guard:both")
    if kind in ("none", "freivalds", "digest") and arg:
        raise ConfigError(f"defence {name!r} takes no argument")
    return Defence(name, kind, arg)
