"""The machinery of ONNX import: values, the fx graph being built, constant folding.

Every ONNX tensor becomes a ``Value``: a constant (weights, shapes, anything computed
from constants only; folded at import) or an activation (an ``fx.Node``) with a
``meta`` tensor for the example input, so shapes are known while the graph is built
without computing anything.
Converters (``_onnx_ops.py``) add layers with ``Builder.module`` and functions with
``Builder.call``; both fold when every input is a constant.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn


class Unsupported(Exception):
    """A node ShardGuard cannot import; the message says why (the caller names the node)."""


@dataclass
class Value:
    """One ONNX tensor: ``example`` is its value for the example input."""

    example: torch.Tensor
    node: fx.Node | None = None  # None: a constant, known at import

    @property
    def const(self) -> bool:
        return self.node is None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.example.shape)


def _map(obj: Any, fn: Callable[[Value], Any]) -> Any:
    """``obj`` with every ``Value`` inside (lists and tuples too) replaced by ``fn(value)``."""
    if isinstance(obj, Value):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(o, fn) for o in obj)
    return obj


def _values(obj: Any) -> list[Value]:
    found: list[Value] = []
    _map(obj, found.append)
    return found


class Builder:
    """The fx graph and root module of the model being imported."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.label = "node"  # the ONNX node being converted: names its layers
        self.current_op = ""  # its op type
        self.outputs = 1  # how many outputs it has
        self.node_uses: dict[fx.Node, int] = {}  # how many ONNX inputs read each fx node
        self._names: set[str] = set()

    def _name(self, suffix: str = "") -> str:
        base = re.sub(r"\W", "_", self.label + suffix).strip("_") or "node"
        if base[0].isdigit():
            base = f"n{base}"
        name, k = base, 1
        while name in self._names or hasattr(self.root, name):
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def input(self, name: str, example: torch.Tensor) -> Value:
        self.label = name
        return Value(example, self.graph.placeholder(self._name()))

    def module(self, layer: nn.Module, x: Value, suffix: str = "") -> Value:
        """``layer(x)``: folded if ``x`` is a constant, else a new ``call_module`` node."""
        layer.eval()
        with torch.no_grad():
            if x.const:
                return Value(layer(x.example))
            state = {k: v.to("meta") for k, v in (*layer.named_parameters(),
                                                   *layer.named_buffers())}
            out = torch.func.functional_call(layer, state, (x.example,))
        name = self._name(suffix)
        self.root.add_module(name, layer)
        assert x.node is not None
        return Value(out, self.graph.create_node("call_module", name, (x.node,), {}, name=name))

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Value:
        """``fn(*args, **kwargs)`` on Values: folded when every Value is a constant."""
        folded = all(v.const for v in _values((args, kwargs)))

        def example(v: Value) -> torch.Tensor:  # constants join activations on "meta"
            return v.example if folded or v.example.dim() == 0 else v.example.to("meta")

        with torch.no_grad():
            out = fn(*_map(args, example), **_map(kwargs, example))
        if folded:
            return Value(out)
        node = self.graph.create_node("call_function", fn, _map(args, self._arg),
                                      _map(kwargs, self._arg), name=self._name())
        return Value(out, node)

    def _arg(self, v: Value) -> fx.Node:
        if v.node is not None:
            return v.node
        name = self._name("_const")
        self.root.register_buffer(name, v.example.clone())
        return self.graph.get_attr(name)

    def sole_use(self, x: Value) -> bool:
        """Whether ``x`` feeds only the node being converted (so a layer may absorb it)."""
        return x.node is not None and self.node_uses.get(x.node, 0) == 1

    def layer_of(self, x: Value) -> nn.Module | None:
        """The layer whose output ``x`` is, if it is a layer's output."""
        if x.node is None or x.node.op != "call_module":
            return None
        return self.root.get_submodule(str(x.node.target))

    def finish(self, output: Value) -> fx.GraphModule:
        assert output.node is not None
        self.graph.output(output.node)
        gm = fx.GraphModule(self.root, self.graph)
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
        return gm.eval()
