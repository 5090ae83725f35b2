"""ShardGuard: distributed and secure CNN inference at the edge.

    import shardguard as sg
    model = sg.load_model("resnet-small")
    planned = sg.plan(model, "rpi4x4-ethernet", strategy="auto")
    logits = sg.LocalExecutor(planned.compiled)(x)          # in one process
    planned.plan.save(Path("plan.yaml"))
    with sg.cluster("plan.yaml", spawn_local=True) as c:   # on worker processes
        logits = c.infer(x.numpy())

The heavy parts (torch) load on first use, so that ``shardguard.runtime.worker``
runs on boards that only have the light dependencies.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    AuthenticationError,
    ConfigError,
    DataError,
    IntegrityError,
    MalformedMessage,
    ModelError,
    PlanningError,
    ShardGuardError,
    TransportError,
)

__version__ = "0.1.0"

_LAZY = {
    "trace": "shardguard.graph", "Graph": "shardguard.graph", "Node": "shardguard.graph",
    "load_model": "shardguard.zoo",
    "load_platform": "shardguard.platform", "Platform": "shardguard.platform",
    "Plan": "shardguard.partition", "ModelRef": "shardguard.partition",
    "make_plan": "shardguard.partition", "bind": "shardguard.partition",
    "load_plan": "shardguard.partition", "plan": "shardguard.partition",
    "explore": "shardguard.analysis.search:run_exploration",
    "ExploreSpec": "shardguard.analysis.explore", "Exploration": "shardguard.analysis.search",
    "run_campaign": "shardguard.analysis.campaign", "load_campaign": "shardguard.analysis.campaign",
    "CampaignSpec": "shardguard.analysis.campaign",
    "analyze": "shardguard.analysis.analyze", "Analysis": "shardguard.analysis.analyze",
    "open_data": "shardguard.data",
    "LocalExecutor": "shardguard.local",
    "cluster": "shardguard.runtime.cluster", "Cluster": "shardguard.runtime.cluster",
}

if TYPE_CHECKING:
    from .analysis.analyze import Analysis, analyze
    from .analysis.campaign import CampaignSpec, load_campaign, run_campaign
    from .analysis.explore import ExploreSpec
    from .analysis.search import Exploration
    from .analysis.search import run_exploration as explore
    from .data import open_data
    from .graph import Graph, Node, trace
    from .local import LocalExecutor
    from .partition import ModelRef, Plan, bind, load_plan, make_plan, plan
    from .platform import Platform, load_platform
    from .runtime.cluster import Cluster, cluster
    from .zoo import load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, _, attr = _LAZY[name].partition(":")
        value = getattr(import_module(module), attr or name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shardguard' has no attribute {name!r}")


__all__ = [
    "Analysis", "AuthenticationError", "CampaignSpec", "Cluster", "ConfigError", "DataError",
    "ExploreSpec", "Exploration", "Graph", "IntegrityError", "LocalExecutor",
    "MalformedMessage", "ModelError", "ModelRef", "Node", "Plan", "Platform", "PlanningError",
    "ShardGuardError", "TransportError", "__version__", "analyze", "bind", "cluster",
    "explore", "load_campaign", "load_model", "load_plan", "load_platform", "make_plan",
    "open_data", "plan", "run_campaign", "trace",
]
