"""ShardGuard: distributed and secure CNN inference at the edge.

    import shardguard as sg
    model = sg.load_model("resnet-small")
    graph = sg.trace(model.module, (1, 28, 28))
    print(graph.total_macs, graph.total_params)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (AuthenticationError, ConfigError, DataError, IntegrityError, ModelError,
                     PlanningError, ShardGuardError, TransportError)
from .graph import Graph, Node, trace
from .zoo import load_model

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "DataError",
    "Graph",
    "IntegrityError",
    "ModelError",
    "Node",
    "PlanningError",
    "ShardGuardError",
    "TransportError",
    "__version__",
    "load_model",
    "trace",
]
