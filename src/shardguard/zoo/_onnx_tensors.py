"""ONNX tensor ops → torch functions: arithmetic, shapes, concatenation, reductions.

Shape arithmetic (``Shape``, ``Gather``, ``Concat`` of sizes, ...) is folded at import
on the example input, whose batch is 1; a reshape keeps dimension 0 as the batch
(``-1``), so the imported model takes any batch size. An op that would move or merge
the batch dimension is refused.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from onnx import helper
from torch import nn

from ._onnx_build import Builder, Unsupported, Value
from ._onnx_layers import activation, channel_affine, const, op

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.truediv,
    "Pow": torch.pow, "Max": torch.maximum, "Min": torch.minimum,
    "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "And": torch.logical_and,
    "Or": torch.logical_or,
}


@op(*_BINARY)
def binary(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x, y = activation(ins[0]), activation(ins[1])
    kind = b.current_op
    fn = _BINARY[kind]
    if x.const and y.const:
        if kind == "Div" and not x.example.is_floating_point():  # ONNX: integer division
            return [Value(torch.div(x.example, y.example, rounding_mode="trunc"))]
        return [Value(fn(x.example, y.example))]
    if kind in ("Add", "Mul", "Sub") and (y.const or (x.const and kind != "Sub")):
        act, k = (x, y.example) if y.const else (y, x.example)
        affine = channel_affine(b, act, k, kind)
        if affine is not None:
            return [affine]
    return [b.call(fn, _scalar(x, y), _scalar(y, x))]


def _scalar(v: Value, other: Value) -> Any:
    """A one-element constant as a Python number (no buffer, no broadcasting surprises)."""
    if v.const and v.example.numel() == 1 and v.example.dim() <= other.example.dim():
        return v.example.item()
    return v


@op("Sum")
def sum_(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    total = activation(ins[0])
    for other in ins[1:]:
        total = b.call(operator.add, total, activation(other))
    return [total]


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Sqrt": torch.sqrt, "Exp": torch.exp, "Log": torch.log, "Neg": torch.neg,
    "Abs": torch.abs, "Reciprocal": torch.reciprocal, "Floor": torch.floor,
    "Ceil": torch.ceil, "Erf": torch.erf, "Not": torch.logical_not,
}


@op(*_UNARY)
def unary(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    return [b.call(_UNARY[b.current_op], activation(ins[0]))]


@op("Dropout", "Identity")
def identity(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    return [activation(ins[0])]  # inference: no dropout; its mask output is not produced


def reshape(b: Builder, x: Value, shape: Sequence[int]) -> Value:
    """``x`` reshaped to ``shape`` (resolved sizes), keeping dimension 0 as the batch."""
    if x.const:
        return Value(x.example.reshape(tuple(shape)))
    shape = [int(d) for d in shape]
    if not shape or shape[0] != x.shape[0] or math.prod(shape[1:]) != math.prod(x.shape[1:]):
        raise Unsupported(f"reshaping {list(x.shape)} to {shape} moves the batch dimension; "
                          "ShardGuard keeps the batch in dimension 0")
    if len(shape) == 2 and len(x.shape) > 2:
        return b.call(torch.flatten, x, 1)
    return b.call(torch.reshape, x, (-1, *shape[1:]))


@op("Reshape")
def reshape_op(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x, shape = activation(ins[0]), [int(d) for d in const(ins[1], "the shape")]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [reshape(b, x, x.example.reshape(shape).shape)]


@op("Flatten")
def flatten(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    axis = int(attrs.get("axis", 1)) % max(1, x.example.dim())
    return [reshape(b, x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))]


def _axes(b: Builder, ins: list[Value | None], attrs: dict[str, Any], since: int
          ) -> list[int] | None:
    """An op's axes: an attribute before opset ``since``, an optional input from then on."""
    if b.opset < since:
        return list(attrs["axes"]) if "axes" in attrs else None
    if len(ins) > 1 and ins[1] is not None:
        return [int(a) for a in const(ins[1], "the axes")]
    return None


@op("Squeeze", "Unsqueeze")
def squeeze(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    axes = _axes(b, ins, attrs, 13)
    shape = list(x.shape)
    if b.current_op == "Unsqueeze":
        if axes is None:
            raise Unsupported("Unsqueeze without axes")
        rank = len(shape) + len(axes)
        for a in sorted(a % rank for a in axes):
            shape.insert(a, 1)
    else:
        drop = {a % len(shape) for a in axes} if axes else {i for i, d in enumerate(shape)
                                                            if d == 1 and i > 0}
        shape = [d for i, d in enumerate(shape) if i not in drop]
    return [reshape(b, x, shape)]


@op("Transpose")
def transpose(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    perm = list(attrs.get("perm", range(x.example.dim())[::-1]))
    if not x.const and perm[0] != 0:
        raise Unsupported(f"permutation {perm} moves the batch dimension")
    return [b.call(torch.permute, x, perm)]


@op("Concat")
def concat(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    parts = [activation(v) for v in ins]
    axis = int(attrs["axis"])
    if not all(p.const for p in parts) and axis % parts[0].example.dim() == 0:
        raise Unsupported("concatenating along the batch dimension")
    return [b.call(torch.cat, parts, axis)]


@op("Shape", "Size")
def shape_of(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    if b.current_op == "Size":
        return [Value(torch.tensor(x.example.numel()))]
    dims = x.shape[attrs.get("start", 0):attrs.get("end", len(x.shape))]
    return [Value(torch.tensor(dims, dtype=torch.int64))]


def _tensor(proto: Any) -> torch.Tensor:
    from onnx import numpy_helper

    return torch.from_numpy(np.array(numpy_helper.to_array(proto)))


@op("Constant")
def constant(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    if "value" in attrs:
        return [Value(_tensor(attrs["value"]))]
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in attrs:
            return [Value(torch.tensor(attrs[key], dtype=dtype))]
    raise Unsupported(f"a Constant holding {', '.join(attrs) or 'nothing'}")


@op("ConstantOfShape")
def constant_of_shape(b: Builder, ins: list[Value | None], attrs: dict[str, Any]
                      ) -> list[Value]:
    shape = [int(d) for d in const(ins[0], "the shape")]
    fill = _tensor(attrs["value"]) if "value" in attrs else torch.zeros(1)
    return [Value(fill.reshape(-1)[:1].expand(shape).clone())]


@op("Cast")
def cast(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    dtype = torch.from_numpy(np.zeros(0, helper.tensor_dtype_to_np_dtype(attrs["to"]))).dtype
    if x.const:
        return [Value(x.example.to(dtype))]
    if dtype != x.example.dtype:
        raise Unsupported(f"casting activations to {dtype} is not supported")
    return [x]


@op("Gather")
def gather(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x, index = activation(ins[0]), const(ins[1], "the indices").long()
    axis = int(attrs.get("axis", 0)) % x.example.dim()
    if x.const:
        return [Value(torch.from_numpy(np.take(x.example.numpy(), index.numpy(), axis)))]
    if axis == 0 or index.dim() > 1:
        raise Unsupported("gathering along the batch dimension or with nested indices")
    index = torch.where(index < 0, index + x.shape[axis], index)
    if index.dim() == 0:
        return [b.call(torch.select, x, axis, int(index))]
    return [b.call(torch.index_select, x, axis, Value(index))]


def _slices(x: Value, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
            steps: Sequence[int]) -> list[range]:
    """The indices each dimension keeps (ONNX clamps out-of-range starts and ends)."""
    rank = x.example.dim()
    kept = [range(d) for d in x.shape]
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = x.shape[axis % rank]
        kept[axis % rank] = range(*slice(int(start), int(end), int(step)).indices(size))
    return kept


@op("Slice")
def slice_(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    if b.opset < 10:
        starts, ends = attrs["starts"], attrs["ends"]
        axes, steps = attrs.get("axes", range(len(starts))), [1] * len(starts)
    else:
        starts, ends = const(ins[1], "starts").tolist(), const(ins[2], "ends").tolist()
        axes = const(ins[3], "axes").tolist() if len(ins) > 3 and ins[3] is not None \
            else list(range(len(starts)))
        steps = const(ins[4], "steps").tolist() if len(ins) > 4 and ins[4] is not None \
            else [1] * len(starts)
    kept = _slices(x, starts, ends, axes, steps)
    if x.const:
        values = x.example.numpy()
        for axis, indices in enumerate(kept):
            values = np.take(values, list(indices), axis)
        return [Value(torch.from_numpy(np.ascontiguousarray(values)))]
    if kept[0] != range(x.shape[0]) or any(r.step < 0 for r in kept[1:]):
        raise Unsupported("slicing the batch dimension or with negative steps")
    spans = tuple(slice(r.start, r.stop, r.step) for r in kept)
    return [b.call(operator.getitem, x, spans)]


@op("Split")
def split(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    axis = int(attrs.get("axis", 0)) % x.example.dim()
    if b.opset < 13:
        sizes = list(attrs.get("split", []))
    else:
        sizes = const(ins[1], "split").tolist() if len(ins) > 1 and ins[1] is not None else []
    if not sizes:
        parts = int(attrs.get("num_outputs", b.outputs))
        step = math.ceil(x.shape[axis] / parts)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(parts)]
    if axis == 0 and not x.const:
        raise Unsupported("splitting along the batch dimension")
    starts = np.cumsum([0, *sizes[:-1]])
    return [b.call(torch.narrow, x, axis, int(s), int(n)) for s, n in zip(starts, sizes)]


@op("Pad")
def pad(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    rank, mode = x.example.dim(), attrs.get("mode", "constant")
    if b.opset < 11:
        pads, value = list(attrs["pads"]), float(attrs.get("value", 0.0))
    else:
        pads = [int(p) for p in const(ins[1], "the pads")]
        value = float(const(ins[2], "the value")) if len(ins) > 2 and ins[2] is not None \
            else 0.0
    axes = [int(a) % rank for a in const(ins[3], "the axes")] \
        if len(ins) > 3 and ins[3] is not None else list(range(rank))
    begin, end = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[i + len(axes)]
    torch_pads = [p for axis in reversed(range(rank)) for p in (begin[axis], end[axis])]
    layers = {"constant": lambda p: nn.ConstantPad2d(p, value),
              "reflect": nn.ReflectionPad2d, "edge": nn.ReplicationPad2d}
    if rank == 4 and not any(begin[:2] + end[:2]) and mode in layers:
        left, right, top, bottom = torch_pads[:4]
        return [b.module(layers[mode]((left, right, top, bottom)), x)]
    if mode != "constant" or begin[0] or end[0]:
        raise Unsupported(f"{mode} padding of {pads} on a rank-{rank} tensor")
    return [b.call(F.pad, x, torch_pads, value=value)]


_REDUCE: dict[str, tuple[Callable[..., torch.Tensor], type[nn.Module] | None, int]] = {
    "ReduceMean": (torch.mean, nn.AdaptiveAvgPool2d, 18),
    "ReduceMax": (torch.amax, nn.AdaptiveMaxPool2d, 18),
    "ReduceSum": (torch.sum, None, 13),
}


@op(*_REDUCE)
def reduce(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    fn, pool, since = _REDUCE[b.current_op]
    rank, keep = x.example.dim(), bool(attrs.get("keepdims", 1))
    axes = _axes(b, ins, attrs, since)
    if axes is None:
        if attrs.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    if 0 in axes and not x.const:
        raise Unsupported("reducing over the batch dimension")
    if pool is not None and rank == 4 and axes == [2, 3]:  # a global pooling
        pooled = b.module(pool(1), x)
        return [pooled if keep else reshape(b, pooled, x.shape[:2])]
    return [b.call(fn, x, axes, keepdim=keep)]


@op("Where")
def where(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    return [b.call(torch.where, *(activation(v) for v in ins[:3]))]


@op("Range")
def range_(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    start, limit, delta = (const(v, "a bound") for v in ins[:3])
    return [Value(torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype))]


@op("Expand")
def expand(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x, shape = activation(ins[0]), [int(d) for d in const(ins[1], "the shape")]
    target = torch.broadcast_shapes(x.shape, tuple(shape))  # type: ignore[no-untyped-call]
    if x.const:
        return [Value(x.example.expand(target).clone())]
    if tuple(target) != x.shape:
        raise Unsupported(f"expanding activations of shape {list(x.shape)} to {list(target)}")
    return [x]
