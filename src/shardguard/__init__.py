"""ShardGuard: distributed and secure CNN inference at the edge.

    import shardguard as sg
    model = sg.load_model("resnet-small")
    graph = sg.trace(model.module, (1, 28, 28))
    planned = sg.make_plan(graph, sg.ModelRef(ref="resnet-small", input_shape=[1, 28, 28]),
                           sg.load_platform("rpi4x4-ethernet"), strategy="auto")
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
    "load_plan": "shardguard.partition",
    "LocalExecutor": "shardguard.local",
    "cluster": "shardguard.runtime.cluster", "Cluster": "shardguard.runtime.cluster",
}

if TYPE_CHECKING:
    from .graph import Graph, Node, trace
    from .local import LocalExecutor
    from .partition import ModelRef, Plan, bind, load_plan, make_plan
    from .platform import Platform, load_platform
    from .runtime.cluster import Cluster, cluster
    from .zoo import load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shardguard' has no attribute {name!r}")


__all__ = [
    "AuthenticationError", "Cluster", "ConfigError", "DataError", "Graph", "IntegrityError",
    "LocalExecutor", "MalformedMessage", "ModelError", "ModelRef", "Node", "Plan", "Platform",
    "PlanningError", "ShardGuardError", "TransportError", "__version__", "bind", "load_model",
    "cluster", "load_plan", "load_platform", "make_plan", "trace",
]
