"""The profiled graph: a torch.fx GraphModule with per-node costs, kept as a DAG."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from torch import fx


@dataclass(frozen=True)
class Node:
    """One node of a profiled graph; shapes are for a batch of one."""

    name: str  # the fx node name, unique in the graph
    op: str  # fx opcode: placeholder, call_module, call_function, call_method, get_attr, output
    kind: str  # conv, linear, norm, act, pool, global_pool, add, mul, cat, reshape, identity, ...
    target: str  # module path or function name
    inputs: tuple[str, ...]  # names of the nodes this one reads (DAG edges)
    shape: tuple[int, ...]  # output shape, batch dimension included (= 1)
    dtype: str
    macs: int  # multiply-accumulates (convolution, linear, matmul)
    params: int  # parameters owned by this node (shared modules count once)
    param_bytes: int
    out_bytes: int  # bytes of the output tensor for one sample
    attrs: dict[str, object] = field(default_factory=dict)  # kernel, stride, padding (conv, pool)
    latency_s: float | None = None  # measured on this host, when asked for

    @property
    def layer_type(self) -> str | None:
        """For per-type MAC rates: "depthwise" (a convolution with one group per input
        channel), "conv" (any other convolution), "linear"; None for other nodes."""
        if self.kind == "linear":
            return "linear"
        if self.kind != "conv":
            return None
        groups = self.attrs.get("groups", 1)
        depthwise = isinstance(groups, int) and groups > 1 and groups == self.attrs.get(
            "in_channels")
        return "depthwise" if depthwise else "conv"


@dataclass
class Graph:
    """A traced model: nodes in topological order plus the GraphModule that computes them."""

    module: fx.GraphModule
    nodes: list[Node]
    input_shape: tuple[int, ...]  # (C, H, W) of one sample

    @cached_property
    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def successors(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.name)
        return {k: tuple(v) for k, v in out.items()}

    @property
    def compute_nodes(self) -> list[Node]:
        """Every node but the placeholder(s) and the output."""
        return [n for n in self.nodes if n.op not in ("placeholder", "output")]

    @property
    def total_macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def total_params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def total_param_bytes(self) -> int:
        return sum(n.param_bytes for n in self.nodes)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.nodes[-1].shape

    def __len__(self) -> int:
        return len(self.nodes)
