"""Turning segment choices into a Plan, with its links filled in, checked and costed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import PlanningError
from ..graph import Graph
from ..platform import Platform
from .compile import CompiledPlan, compile_plan
from .cost import PlanCost, estimate
from .plan import LinkSpec, ModelRef, Objective, Plan, SegmentSpec, StageSpec, Strategy


@dataclass
class Planned:
    """A plan with its compiled programs and its cost on the platform."""

    plan: Plan
    compiled: CompiledPlan
    cost: PlanCost


def whole(graph: Graph, first: int, last: int, name: str, device: str) -> SegmentSpec:
    """An unsplit segment of compute nodes ``first``..``last`` (0-based, inclusive)."""
    names = [n.name for n in graph.compute_nodes]
    return SegmentSpec(first=names[first], last=names[last], split="none",
                       stages=[StageSpec(name=name, device=device)])


def assemble_plan(graph: Graph, model: ModelRef, platform: Platform, strategy: Strategy,
                  objective: Objective, segments: list[SegmentSpec],
                  protection: str = "none") -> Planned:
    """Build, compile and cost a plan; every link gets ``protection``."""
    plan = Plan(model=model, platform=platform.source, strategy=strategy, objective=objective,
                segments=segments)
    compiled = compile_plan(plan, graph, build=False)
    plan.links = link_specs(compiled, lambda src, dst: protection)
    return Planned(plan, compiled, estimate(compiled, platform))


def with_precision(planned: Planned, graph: Graph, platform: Platform,
                   precision: Literal["fp32", "int8"]) -> Planned:
    """``planned`` with every stage at ``precision``, its links' bytes and cost redone."""
    plan = planned.plan.model_copy(deep=True)
    for stage in plan.stages:
        stage.precision = precision
    compiled = compile_plan(plan, graph, build=False)
    plan.links = link_specs(compiled, plan.protection)
    return Planned(plan, compiled, estimate(compiled, platform))


def link_specs(compiled: CompiledPlan, protection_of: object) -> list[LinkSpec]:
    """Every link of ``compiled``, the coordinator's hops (``input>S``, ``S>output``) too."""
    links = []
    for (src, dst), group in compiled.links().items():
        links.append(LinkSpec(src=src, dst=dst, tensors=sorted({t.tensor for t in group}),
                              bytes=sum(t.nbytes for t in group),
                              protection=protection_of(src, dst)))  # type: ignore[operator]
    return links


def check_memory(planned: Planned) -> None:
    """Raise naming the first device whose memory the plan overflows, and by how much."""
    over = planned.cost.overflows()
    if over:
        device, excess = over[0]
        limit = planned.cost.devices[device].memory_limit
        raise PlanningError(f"device {device}: plan needs {excess / 1e6:.2f} MB more than its "
                            f"{limit / 1e6:.1f} MB of memory")
