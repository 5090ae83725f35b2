"""Trace a model with torch.fx and annotate every node with shapes, MACs, bytes and latency."""

from __future__ import annotations

import math
import operator
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from ..errors import ModelError
from ._types import Graph, Node

_MODULE_KINDS: tuple[tuple[tuple[type[nn.Module], ...], str], ...] = (
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
      nn.ConvTranspose3d), "conv"),
    ((nn.Linear,), "linear"),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm,
      nn.InstanceNorm2d, nn.LocalResponseNorm), "norm"),
    ((nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
      nn.Hardsigmoid, nn.ELU, nn.PReLU, nn.Softmax), "act"),
    ((nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d), "adaptive_pool"),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), "pool"),
    ((nn.Flatten, nn.Unflatten), "reshape"),
    ((nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d), "pad"),
    ((nn.Dropout, nn.Dropout2d, nn.Identity), "identity"),
)

_FUNCTION_KINDS: dict[Any, str] = {
    operator.add: "add", operator.iadd: "add", torch.add: "add",
    operator.mul: "mul", operator.imul: "mul", torch.mul: "mul",
    torch.cat: "cat", torch.concat: "cat",
    torch.flatten: "reshape", torch.reshape: "reshape",
    torch.relu: "act", torch.sigmoid: "act", torch.nn.functional.relu: "act",
    torch.nn.functional.adaptive_avg_pool2d: "adaptive_pool",
    torch.nn.functional.max_pool2d: "pool", torch.nn.functional.avg_pool2d: "pool",
    torch.nn.functional.conv2d: "conv", torch.nn.functional.linear: "linear",
    torch.matmul: "matmul", operator.matmul: "matmul",
}
_METHOD_KINDS = {"view": "reshape", "reshape": "reshape", "flatten": "reshape", "add": "add",
                 "mul": "mul", "relu": "act", "size": "size", "contiguous": "identity"}


def _module_kind(module: nn.Module, shape: tuple[int, ...]) -> str:
    for types, kind in _MODULE_KINDS:
        if isinstance(module, types):
            if kind == "adaptive_pool":
                return "global_pool" if math.prod(shape[2:]) == 1 else "pool"
            return kind
    return "other"


def _conv_attrs(module: nn.Module) -> dict[str, object]:
    keys = ("kernel_size", "stride", "padding", "dilation", "groups", "in_channels",
            "out_channels", "ceil_mode", "output_size")
    attrs: dict[str, object] = {}
    for key in keys:
        if hasattr(module, key):
            value = getattr(module, key)
            attrs[key] = list(value) if isinstance(value, tuple) else value
    return attrs


def _shape(meta: Any) -> tuple[int, ...]:
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()


def _macs(node: fx.Node, module: nn.Module | None, out: tuple[int, ...],
          in_shapes: Sequence[tuple[int, ...]]) -> int:
    """Multiply-accumulates of one node (convolution, linear, matmul; 0 otherwise)."""
    out_numel = math.prod(out) if out else 0
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = math.prod(module.kernel_size)
        if module.transposed:
            return math.prod(in_shapes[0]) * (module.out_channels // module.groups) * kernel
        return out_numel * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return out_numel * module.in_features
    if node.op == "call_function" and len(in_shapes) >= 2:
        if node.target is torch.nn.functional.conv2d:
            w = in_shapes[1]  # (C_out, C_in / groups, kH, kW)
            return out_numel * math.prod(w[1:])
        if node.target is torch.nn.functional.linear:
            return out_numel * in_shapes[1][-1]
        if node.target in (torch.matmul, operator.matmul) and in_shapes[0]:
            return out_numel * in_shapes[0][-1]
    return 0


def _name_of(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _symbolic_trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # TraceError, TypeError, ... from control flow on tensor values
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{type(model).__name__} cannot be traced with torch.fx "
                         f"(data-dependent control flow?): {first}") from exc


def trace(model: nn.Module, input_shape: Sequence[int], *, measure: bool = False,
          repeats: int = 5) -> Graph:
    """Trace ``model`` for inputs of shape ``input_shape`` (C, H, W; no batch) and profile it.

    ``measure`` also times every node on this host (median of ``repeats`` runs).
    """
    shape = tuple(int(d) for d in input_shape)
    gm = _symbolic_trace(model)
    gm.eval()
    example = torch.zeros(1, *shape)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ModelError(f"{type(model).__name__}: takes {len(placeholders)} inputs; "
                         "ShardGuard supports models with one image input")
    recorder = _record(model, gm, example, shape)
    latencies = _measure(recorder, example, repeats) if measure else {}
    modules = dict(gm.named_modules())
    seen_params: set[int] = set()
    nodes: list[Node] = []
    for node in gm.graph.nodes:
        meta = recorder.meta.get(node.name)
        out = _shape(meta)
        inputs = tuple(a.name for a in node.all_input_nodes)
        in_shapes = [_shape(recorder.meta.get(a.name)) for a in node.all_input_nodes]
        module = modules.get(node.target) if node.op == "call_module" else None
        params, param_bytes = _owned_weights(gm, node, module, seen_params)
        kind = _node_kind(node, module, out)
        out_bytes = math.prod(out) * meta.dtype.itemsize if out and meta is not None else 0
        nodes.append(Node(
            name=node.name, op=node.op, kind=kind,
            target=_name_of(node.target), inputs=inputs, shape=out,
            dtype=str(meta.dtype).removeprefix("torch.") if meta is not None else "",
            macs=_macs(node, module, out, in_shapes), params=params, param_bytes=param_bytes,
            out_bytes=out_bytes, attrs=_conv_attrs(module) if module is not None else {},
            latency_s=latencies.get(node.name),
        ))
    return Graph(gm, nodes, shape)


def _record(model: nn.Module, gm: fx.GraphModule, example: torch.Tensor,
            shape: tuple[int, ...]) -> _Recorder:
    """Run ``example`` through ``gm`` once, recording every node's output shape and dtype."""
    recorder = _Recorder(gm)
    try:
        with torch.no_grad():
            recorder.run(example)
    except Exception as exc:  # torch reports shape mismatches as RuntimeError, ValueError, ...
        node = recorder.current
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{type(model).__name__}: input shape {shape} does not fit the model "
                         f"(at node {node}: {first})") from exc
    return recorder


def _owned_weights(gm: fx.GraphModule, node: fx.Node, module: nn.Module | None,
                   seen: set[int]) -> tuple[int, int]:
    """(parameter count, bytes of parameters and buffers) that ``node`` holds, counting a
    tensor shared between nodes only at its first node (``seen`` collects their ids)."""
    params = param_bytes = 0
    owned: list[torch.Tensor] = []
    if module is not None:
        owned = list(module.parameters()) + list(module.buffers())
    elif node.op == "get_attr":
        owned = [t for t in [_fetch(gm, str(node.target))] if isinstance(t, torch.Tensor)]
    for tensor in owned:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            if isinstance(tensor, nn.Parameter):
                params += tensor.numel()
            param_bytes += tensor.numel() * tensor.element_size()
    return params, param_bytes


def _node_kind(node: fx.Node, module: nn.Module | None, out: tuple[int, ...]) -> str:
    """The node's kind ("conv", "add", "input", ...), as ``Node.kind`` reports it."""
    if node.op == "placeholder":
        return "input"
    if node.op == "output":
        return "output"
    if module is not None:
        return _module_kind(module, out)
    if node.op == "call_function":
        return _FUNCTION_KINDS.get(node.target, "other")
    if node.op == "call_method":
        return _METHOD_KINDS.get(str(node.target), "other")
    return "constant"


def _fetch(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


class _Recorder(fx.Interpreter):
    """Runs the graph, recording each node's output tensor metadata and, if asked, its time."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.meta: dict[str, torch.Tensor] = {}  # node → its output on the meta device
        self.times: dict[str, list[float]] = {}
        self.timing = False
        self.current = ""

    def run_node(self, n: fx.Node) -> Any:
        self.current = n.name
        start = time.perf_counter()
        result = super().run_node(n)
        if self.timing:
            self.times.setdefault(n.name, []).append(time.perf_counter() - start)
        if isinstance(result, torch.Tensor):
            self.meta[n.name] = torch.empty(result.shape, dtype=result.dtype, device="meta")
        return result


@torch.no_grad()
def _measure(recorder: _Recorder, example: torch.Tensor, repeats: int) -> dict[str, float]:
    recorder.timing = True
    for _ in range(max(1, repeats)):
        recorder.run(example)
    recorder.timing = False
    return {name: statistics.median(ts) for name, ts in recorder.times.items()}
