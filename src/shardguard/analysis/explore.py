"""Design-space exploration: deployments trading security against energy per device.

    shardguard explore lenet5 --platform rpi4x4-ethernet --threats threats.yaml --budget 300

A *candidate* deployment is a partition (strategy, devices, and for pipelines the
cut points), a protection per link between stages and one for the coordinator's two
hops (``ends``: the input to the first stages, the results from the last), a
redundancy (1, 2 or 3 copies of every stage, voting), where range guards run (``guards``:
none, links, activations, both, as the defences ``guard:PLACEMENT``; the activations ones
are refused inside int8 stages, which run in onnxruntime: such a candidate is infeasible),
and a precision per stage (``precisions``: fp32, int8; stage k gets ``precision[k % len]``). An
int8 stage computes at its device's int8 MAC rate and sends int8 tensors (a quarter of the
bytes to send and seal); its accuracy comes from its real quantized stages
(``runtime/quantize.py``, calibrated on the first training images), so the accuracy
quantization costs is inside ``vulnerability``.
Its four objectives, all minimised:

* ``energy_j``      the largest active energy per inference of any device (cost model:
                    compute, radio, and the sealing each link's protection costs there,
                    the voting copies' own, and the guards);
* ``total_energy_j`` the whole platform's energy per inference: every device's active
                    energy (voting copies included: a vote:3 deployment computes three
                    times) and idle energy over the period, the boards the deployment
                    leaves unused included (they are powered all the same);
* ``latency_s``     end-to-end latency of one request (cost model);
* ``vulnerability`` accuracy lost under the threat scenario: the mean, over each threat
                    and each device or link it targets (each in ``seeds`` draws), of
                    clean accuracy minus accuracy with the candidate's defences (with
                    its 95 % interval, ``vulnerability_low``/``_high``), measured in the local
                    executor on held-out images (the *last* ``samples`` of the data,
                    which campaigns and training never look at first). Without labels,
                    agreement with the clean model's top-1 stands for accuracy, so the
                    loss is the silent-data-corruption rate (``measure``: agreement).

and one constraint: every device's memory (the overflow, in bytes, must be 0).
``search.py`` finds the Pareto front (exhaustively or with NSGA-II); this module
defines the space and evaluates a candidate, in worker processes (``backend.py``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import Field

from ..errors import ConfigError, PlanningError
from ..protections import CATALOGUE
from .candidate import INSIDE, Candidate, GuardChoice
from .subject import Subject, load_subject, model_ref, profile_images, subject_data

PROTECTIONS = ("none", "mac:blake2b", "aead:chacha20-poly1305", "aead:aes-128-gcm")
LINK_THREATS = ("L1", "L2", "L3", "L4")
SUPPORTED = ("D1", "D4", *LINK_THREATS)  # what changes answers in the local executor


class ExploreSpec(Subject):
    """What to explore: the model, data and platform (``Subject``), the threat scenario
    and the choices."""

    threats: Annotated[list[dict[str, Any]], Field(min_length=1)]
    strategies: Annotated[list[str], Field(min_length=1)] = ["pipeline", "spatial", "channel"]
    max_devices: Annotated[int, Field(ge=1, le=8)] = 4
    cut_points: Annotated[int, Field(ge=1, le=32)] = 8  # pipeline cuts to choose from
    protections: Annotated[list[str], Field(min_length=1)] = list(PROTECTIONS)
    ends: list[str] | None = None  # the coordinator's hops' choices (None: ``protections``)
    copies: Annotated[list[int], Field(min_length=1)] = [1, 3]
    #: where range guards run, each a choice: none, links, activations, both
    guards: Annotated[list[GuardChoice], Field(min_length=1)] = ["none", "links"]
    precisions: Annotated[list[Literal["fp32", "int8"]], Field(min_length=1)] = ["fp32"]
    samples: Annotated[int, Field(ge=10, le=5000)] = 300
    seed: int = 0
    #: Draws of each threat on each target (each its own stream, ``trials.stream_seed``);
    #: three, as ``analyze.DEFAULT_SEEDS`` (measured there: the knee of the interval).
    seeds: Annotated[int, Field(ge=1, le=100)] = 3


@dataclass(frozen=True)
class Space:
    """The choices, and their encoding as integer vectors (for NSGA-II)."""

    strategies: tuple[str, ...]
    devices: tuple[str, ...]
    max_devices: int
    cut_points: tuple[int, ...]
    protections: tuple[str, ...]
    copies: tuple[int, ...]
    guards: tuple[str, ...]  # guard placements to choose from
    ends: tuple[str, ...] = ("none",)  # choices for the coordinator's hops
    precisions: tuple[str, ...] = ("fp32",)  # choices for each stage's precision
    #: Where no device holds the whole model: the memory-feasible pipelines the DP finds
    #: for each device count, evaluated first so that a search starts from a fit.
    seeds: tuple[Candidate, ...] = ()

    @property
    def links(self) -> int:  # protection variables: one per link of a pipeline at most
        return max(1, self.max_devices - 1)

    @property
    def stage_slots(self) -> int:  # precision variables: one per device of a candidate
        return self.max_devices if len(self.precisions) > 1 else 0

    def bounds(self) -> tuple[list[int], list[int]]:
        k = self.max_devices
        upper = [len(self.strategies) - 1, k - 1, math.perm(len(self.devices), k) - 1,
                 *[len(self.cut_points) - 1] * (k - 1),
                 *[len(self.protections) - 1] * self.links, len(self.ends) - 1,
                 len(self.copies) - 1, len(self.guards) - 1,
                 *[len(self.precisions) - 1] * self.stage_slots]
        return [0] * len(upper), upper

    def decode(self, x: Any) -> Candidate:
        v = [int(round(float(a))) for a in x]
        strategy, k = self.strategies[v[0]], v[1] + 1
        order = _unrank(v[2], list(self.devices), k)
        at = 3 + self.max_devices - 1
        cuts: tuple[int, ...] = ()
        if strategy == "pipeline":
            chosen = sorted({self.cut_points[i] for i in v[3:3 + k - 1]})
            cuts, order = tuple(chosen), order[:len(chosen) + 1]
        else:
            order = sorted(order)
        protection = tuple(self.protections[i] for i in v[at:at + self.links])
        at += self.links
        precision = tuple(self.precisions[i] for i in v[at + 3:at + 3 + self.stage_slots])
        return self.candidate(strategy, tuple(order), cuts, protection, self.copies[v[at + 1]],
                              self.guards[v[at + 2]], self.ends[v[at]], precision)

    def candidate(self, strategy: str, devices: tuple[str, ...], cuts: tuple[int, ...],
                  protection: tuple[str, ...], copies: int, guard: str,
                  ends: str = "none", precision: tuple[str, ...] = ()) -> Candidate:
        """One candidate, written one way only: a pipeline's protection variables beyond
        its links repeat its links' choices (a one-stage pipeline has no link: none); one
        precision per device (stage slot), () when all are fp32."""
        precision = tuple(precision[:len(devices)])
        if set(precision) <= {"fp32"}:
            precision = ()
        if len(devices) == 1:  # the whole model on one device, whatever the strategy
            strategy, cuts = "pipeline", ()
        if strategy == "pipeline":
            n = len(devices) - 1
            protection = (tuple(protection[i % n] for i in range(self.links)) if n else
                          ("none",) * self.links)
        return Candidate(strategy, devices, cuts, protection, copies, guard, ends, precision)

    def candidates(self) -> list[Candidate]:
        """Every distinct candidate (exhaustive search)."""
        out: dict[str, Candidate] = {}
        for strategy, k in itertools.product(self.strategies, range(1, self.max_devices + 1)):
            if strategy == "pipeline":
                layouts = [(tuple(d), tuple(c)) for d in itertools.permutations(self.devices, k)
                           for c in itertools.combinations(self.cut_points, k - 1)]
            else:
                layouts = [(tuple(d), ()) for d in itertools.combinations(self.devices, k)]
            links = max(1, k - 1) if strategy == "pipeline" else self.links
            for (devices, cuts), protection, copies, guard, ends, precision in itertools.product(
                    layouts, itertools.product(self.protections, repeat=links), self.copies,
                    self.guards, self.ends, itertools.product(self.precisions, repeat=k)):
                c = self.candidate(strategy, devices, cuts, protection, copies, guard, ends,
                                   precision)
                out.setdefault(c.key, c)
        return list(out.values())

    def size(self) -> int:
        """How many distinct candidates ``candidates()`` lists (counted, not listed)."""
        d, levels, p = len(self.devices), len(self.protections), len(self.precisions)
        n = d * p  # the whole model on one device
        for k in range(2, self.max_devices + 1):
            if "pipeline" in self.strategies:
                n += (math.perm(d, k) * math.comb(len(self.cut_points), k - 1)
                      * levels ** (k - 1) * p ** k)
            n += sum(s != "pipeline" for s in self.strategies) * math.comb(d, k) \
                * levels ** self.links * p ** k
        return n * len(self.copies) * len(self.guards) * len(self.ends)


def _unrank(index: int, items: list[str], k: int) -> list[str]:
    """The ``index``-th ordered choice of ``k`` items (mixed radix), wrapping around."""
    items, out = list(items), []
    index %= max(1, math.perm(len(items), k))
    for _ in range(k):
        index, i = divmod(index, len(items))
        out.append(items.pop(i))
    return out


def make_space(spec: ExploreSpec, graph: Any, platform: Any) -> Space:
    from ..partition.pipeline import tables

    for field, choices in (("protections", spec.protections), ("ends", spec.ends or [])):
        for p in choices:
            if p != "none" and p not in CATALOGUE:
                raise ConfigError(f"{field}: unknown {p!r} (known: none, {', '.join(CATALOGUE)})")
    for s in spec.strategies:
        if s not in ("pipeline", "spatial", "channel"):
            raise ConfigError(f"strategies: unknown {s!r} (pipeline, spatial, channel)")
    from ..threats.spec import check_int8, parse_threat

    for i, data in enumerate(spec.threats):
        threat = parse_threat(data, f"threats.{i}")
        if "int8" in spec.precisions:
            check_int8(threat, f"threats.{i}")
        if threat.id not in SUPPORTED or getattr(threat, "mode", "") == "adversarial":
            raise ConfigError(f"threats.{i}: {threat.id}"
                              f"{' adversarial' if threat.id == 'D4' else ''} is not available "
                              f"in explorations ({', '.join(SUPPORTED)}; D4 not adversarial)")
    if any(c not in (1, 2, 3) for c in spec.copies):
        raise ConfigError("copies: each must be 1 (none), 2 (vote, detect) or 3 (vote, mask)")
    t = tables(graph)
    valid = [j for j in range(1, len(t.names)) if t.valid[j]]
    # cut points spread evenly over the model's work, at most ``cut_points`` of them
    total = t.macs[-1] or 1
    picks = sorted({min(valid, key=lambda j: abs(t.macs[j] / total - q / (spec.cut_points + 1)))
                    for q in range(1, spec.cut_points + 1)}) if valid else []
    devices = tuple(platform.names)
    space = Space(tuple(spec.strategies), devices, min(spec.max_devices, len(devices)),
                  tuple(picks) or (1,), tuple(spec.protections), tuple(spec.copies),
                  tuple(dict.fromkeys(spec.guards)), tuple(spec.ends or spec.protections),
                  tuple(dict.fromkeys(spec.precisions)))
    return _seeded(space, graph, platform, t) if "pipeline" in spec.strategies else space


def _seeded(space: Space, graph: Any, platform: Any, t: Any) -> Space:
    """``space`` with memory-feasible pipelines (cuts and devices from the DP, for each
    device count) as cut points and seeds, when no device holds the whole model; cut
    points spread by work alone rarely fit boards that are tight for memory."""
    from ..partition.pipeline import solve

    try:
        solve(graph, platform, "energy", t=t, stages=1)
        return space  # the model fits a device: the evenly spread cut points will do
    except PlanningError:
        pass
    cuts, seeds = set(space.cut_points), []
    for k in range(2, space.max_devices + 1):
        try:
            solution = solve(graph, platform, "energy", t=t, stages=k)
        except PlanningError:
            continue
        inner = tuple(solution.cuts[1:-1])
        cuts.update(inner)
        seeds.append(space.candidate("pipeline", tuple(solution.devices), inner,
                                     (space.protections[0],) * space.links, space.copies[0],
                                     space.guards[0], space.ends[0]))
    return replace(space, cut_points=tuple(sorted(cuts)), seeds=tuple(seeds))


# -- evaluation, in a worker process ------------------------------------------------------
_STATE: dict[str, Any] = {}


def init(spec_json: str, threads: int) -> None:
    import torch

    from ..graph import trace
    from ..platform import load_platform
    from ..threats.spec import parse_threat
    from .metrics import reference, scored

    torch.set_num_threads(threads)
    spec = ExploreSpec.model_validate_json(spec_json)
    loaded, shape = load_subject(spec)
    data = subject_data(spec, loaded, shape)
    start = max(0, len(data) - spec.samples)  # held out: the end of the data
    x, labels = data.images(spec.samples, start), data.labels(spec.samples, start)
    with torch.no_grad():
        clean = scored(loaded.module.eval()(x))[0]
    y, scored_by = reference(labels, clean)  # without labels: the clean top-1
    _STATE.update(spec=spec, loaded=loaded, shape=shape, graph=trace(loaded.module, shape),
                  platform=load_platform(spec.platform), x=x, y=y, clean=clean,
                  measure=scored_by, train=data.train_images(profile_images(500, shape)),
                  threats=[parse_threat(t, f"threats.{i}") for i, t in enumerate(spec.threats)])


def build(c: Candidate) -> Any:
    """The candidate's plan (``Planned``), protected and replicated; PlanningError if none."""
    from ..partition.build import assemble_plan, whole
    from ..partition.channel import plan_channel
    from ..partition.compile import compile_plan
    from ..partition.cost import estimate
    from ..partition.replicas import add_replicas
    from ..partition.spatial import plan_spatial

    spec, graph, platform = _STATE["spec"], _STATE["graph"], _STATE["platform"]
    ref = model_ref(spec, _STATE["shape"])
    if c.strategy == "pipeline":
        bounds = [0, *c.cuts, len(graph.compute_nodes)]
        segments = [whole(graph, a, b - 1, f"s{k}", d)
                    for k, (a, b, d) in enumerate(zip(bounds, bounds[1:], c.devices))]
        planned = assemble_plan(graph, ref, platform, "pipeline", "energy", segments)
    else:
        sub = platform.subset(list(c.devices))
        plan_fn = plan_spatial if c.strategy == "spatial" else plan_channel
        planned = plan_fn(graph, ref, sub, "energy")
        planned.plan.platform = platform.source
    for i, stage in enumerate(planned.plan.stages):
        int8 = bool(c.precision) and c.precision[i % len(c.precision)] == "int8"
        stage.precision = "int8" if int8 else "fp32"
    inside = [st.name for st in planned.plan.stages if st.precision == "int8"]
    if c.guard in INSIDE and inside:  # as campaigns refuse it (int8 stages: onnxruntime)
        raise ConfigError(f"guard:{c.guard} clips activations inside the stages; int8 stage "
                          f"{inside[0]} runs in onnxruntime (guard:links works)")
    between = [lk for lk in planned.plan.links if "input" != lk.src and lk.dst != "output"]
    for i, link in enumerate(between):
        link.protection = c.protection[i % len(c.protection)]
    for link in planned.plan.links:
        if link not in between:
            link.protection = c.ends
    planned = add_replicas(planned, platform, c.copies)
    planned.compiled = compile_plan(planned.plan, graph)
    planned.cost = estimate(planned.compiled, platform, vote=c.copies)  # the copies run
    return planned


def evaluate(c: Candidate) -> dict[str, Any]:
    """One candidate's row: objectives, constraint, energy per device, and what it is."""
    from ..defences.catalogue import parse_defence
    from .vulnerability import vulnerability

    row: dict[str, Any] = {"key": c.key, "candidate": asdict(c), "describe": c.describe()}
    try:
        planned = build(c)
    except (PlanningError, ConfigError) as exc:
        return {**row, "feasible": False, "why": str(exc), "energy_j": math.inf,
                "total_energy_j": math.inf, "latency_s": math.inf, "vulnerability": 1.0,
                "vulnerability_low": 1.0, "vulnerability_high": 1.0, "memory_over": math.inf}
    platform, cost = _STATE["platform"], planned.cost
    energy = {d: dc.active_j for d, dc in cost.devices.items()}
    crypto = {d: dc.crypto_j for d, dc in cost.devices.items()}
    # the copies are in ``cost``; the guards where ``c.guard`` places them, as
    # ``vulnerability`` runs them (on every copy of a stage: ``Defence.energy_j``)
    extras = [parse_defence(f"guard:{c.guard}")] if c.guard != "none" else []
    for defence in extras:
        for d, j in defence.energy_j(planned.compiled, platform, copies=c.copies).items():
            energy[d] = energy.get(d, 0.0) + j
    used = {d for d, j in energy.items() if j > 0}
    over = sum(excess for _, excess in cost.overflows())
    total = cost.total_energy_j + sum(energy.values()) - sum(
        dc.active_j for dc in cost.devices.values())  # with the guards' energy
    return {**row, "feasible": over == 0, "memory_over": float(over),
            "energy_j": max(energy.values()), "total_energy_j": total,
            "latency_s": cost.latency_s,
            **vulnerability(planned, c, _STATE),
            "energy_per_device_j": {d: energy[d] for d in sorted(used)},
            "crypto_per_device_j": {d: crypto.get(d, 0.0) for d in sorted(used)},
            "links": {f"{lk.src}>{lk.dst}": lk.protection for lk in planned.plan.links},
            "plan": planned.plan.model_dump(mode="json")}
