"""Profiled graphs: trace any CNN with torch.fx; MACs, parameters and bytes per node.

    g = trace(model, (3, 224, 224))
    g.total_macs, g.total_params, g.nodes[3].out_bytes
"""

from ._trace import trace
from ._types import Graph, Node

__all__ = ["Graph", "Node", "trace"]
