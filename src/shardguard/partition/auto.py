"""Planning entry point: any strategy, or ``auto`` — the best of them for the objective."""

from __future__ import annotations

from ..errors import ConfigError, PlanningError
from ..graph import Graph
from ..platform import Platform
from ..protections import check_protection
from .build import Planned
from .channel import plan_channel
from .pipeline import plan_pipeline
from .plan import ModelRef, Objective, Strategy
from .replicas import add_replicas
from .spatial import plan_spatial

STRATEGIES = {"pipeline": plan_pipeline, "spatial": plan_spatial, "channel": plan_channel}


def make_plan(graph: Graph, model: ModelRef, platform: Platform, *,
              strategy: Strategy = "pipeline", objective: Objective = "latency",
              replicas: int = 1, protection: str = "none",
              devices: int | None = None) -> Planned:
    """Plan ``graph`` onto ``platform``; ``auto`` keeps the strategy with the best objective.

    ``devices``: spread the plan over exactly that many devices (a pipeline's stages, a
    split's tiles or channel groups), even where one device would do better.
    """
    if protection != "none":
        check_protection(protection)
    if devices is not None and not 1 <= devices <= len(platform.names):
        raise ConfigError(f"{devices} devices: platform {platform.name} has "
                          f"{len(platform.names)}")
    if devices == 1 and strategy in ("spatial", "channel"):
        raise ConfigError(f"a {strategy} split needs at least 2 devices")
    if strategy == "auto":
        results: list[Planned] = []
        errors: list[str] = []
        for name, fn in STRATEGIES.items():
            try:
                if devices == 1 and name != "pipeline":
                    continue
                results.append(add_replicas(fn(graph, model, platform, objective, protection,
                                               devices), platform, replicas))
            except PlanningError as exc:
                errors.append(f"{name}: {exc}")
        if not results:
            raise PlanningError("no strategy found a plan: " + "; ".join(errors))
        best = min(results, key=lambda p: p.cost.objective(objective))
        return best
    if strategy not in STRATEGIES:
        raise PlanningError(f"unknown strategy {strategy!r} (pipeline, spatial, channel, auto)")
    planned = STRATEGIES[strategy](graph, model, platform, objective, protection, devices)
    return add_replicas(planned, platform, replicas)
