"""Bind a Plan to its model and platform: load, trace, check, compile and cost it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..graph import Graph, trace
from ..platform import Platform, load_platform
from ..zoo import LoadedModel, load_model
from .build import Planned, check_memory
from .compile import CompiledPlan, compile_plan
from .cost import PlanCost, estimate
from .plan import Plan, load_plan


@dataclass
class Bound(Planned):
    """A plan with everything it refers to, validated."""

    model: LoadedModel
    graph: Graph
    platform: Platform


def bind(plan: Plan | str | Path, *, build: bool = True) -> Bound:
    """Load what ``plan`` refers to and check it: nodes, devices, links and memory."""
    source = str(plan) if not isinstance(plan, Plan) else "plan"
    if not isinstance(plan, Plan):
        plan = load_plan(plan)  # its paths were relative to the plan file: now absolute
    platform = load_platform(plan.platform)
    for stage in plan.stages:
        for device in [stage.device, *stage.replicas]:
            if device not in platform.devices:
                raise ConfigError(f"{source}: stage {stage.name}: device {device!r} is not in "
                                  f"platform {platform.name} ({', '.join(platform.names)})")
    model = load_model(plan.model.ref, weights=plan.model.weights,
                       input_shape=tuple(plan.model.input_shape))
    graph = trace(model.module, plan.model.input_shape)
    compiled: CompiledPlan = compile_plan(plan, graph, build=build)
    pairs = set(compiled.links())
    for i, link in enumerate(plan.links):
        if (link.src, link.dst) not in pairs:
            raise ConfigError(f"{source}: links.{i}: stages {link.src} and {link.dst} "
                              "exchange no tensors")
    cost: PlanCost = estimate(compiled, platform)
    bound = Bound(plan, compiled, cost, model, graph, platform)
    check_memory(bound)
    return bound
