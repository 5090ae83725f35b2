"""Planning entry point: any strategy, or ``auto`` — the best of them for the objective.

    planned = sg.plan(sg.load_model("resnet-small"), "rpi4x4-ethernet", strategy="auto")
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, PlanningError
from ..graph import Graph, trace
from ..platform import Platform, load_platform
from ..protections import check_protection
from ..zoo import LoadedModel, load_model
from .build import Planned
from .channel import plan_channel
from .pipeline import plan_pipeline
from .plan import ModelRef, Objective, Strategy
from .replicas import add_replicas
from .spatial import plan_spatial

STRATEGIES = {"pipeline": plan_pipeline, "spatial": plan_spatial, "channel": plan_channel}
PACKAGE = Path(__file__).resolve().parents[1]  # shipped checkpoints live under it


def plan(model: LoadedModel | str, platform: Platform | str, *,
         strategy: Strategy = "pipeline", objective: Objective = "latency", replicas: int = 1,
         protection: str = "none", devices: int | None = None,
         input_shape: tuple[int, ...] | None = None) -> Planned:
    """Plan a model onto a platform: traced here, its plan entry taken from the model.

    ``model`` is a loaded model (``sg.load_model``) or a reference to load (a zoo name, a
    ``.onnx`` file, ``file.py:factory``); ``platform`` a ``Platform`` or a built-in name or
    YAML file. ``input_shape`` (C, H, W) is needed only for a model that does not declare
    one. The rest is ``make_plan``'s.
    """
    loaded = load_model(model, input_shape=input_shape) if isinstance(model, str) else model
    shape = tuple(input_shape or loaded.input_shape or ())
    if not shape:
        raise ConfigError(f"{loaded.ref}: give its input shape (input_shape=(C, H, W))")
    weights = loaded.weights
    own = weights is not None and not weights.resolve().is_relative_to(PACKAGE)
    ref = ModelRef(ref=loaded.ref, weights=str(weights) if own else None,
                   input_shape=list(shape))
    target = load_platform(platform) if isinstance(platform, str) else platform
    return make_plan(trace(loaded.module, shape), ref, target, strategy=strategy,
                     objective=objective, replicas=replicas, protection=protection,
                     devices=devices)


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
