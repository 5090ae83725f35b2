"""ONNX layer ops → standard torch layers, which every partitioning strategy knows.

Convolutions become ``nn.Conv2d``, pools ``nn.MaxPool2d``/``nn.AvgPool2d``, batch
norms ``nn.BatchNorm2d``; asymmetric padding becomes an explicit ``nn.ConstantPad2d``
in front (a layer spatial tiling also knows). A per-channel ``Mul``/``Add``/``Sub`` by
a constant (Caffe's Scale layer) becomes a batch norm with eps 0, or is folded into
the batch norm it follows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from ._onnx_build import Builder, Unsupported, Value

Converter = Callable[[Builder, list[Value | None], dict[str, Any]], list[Value]]
OPS: dict[str, Converter] = {}


def op(*names: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for name in names:
            OPS[name] = fn
        return fn
    return register


def const(v: Value | None, what: str) -> torch.Tensor:
    """The value of a constant input (a weight, a shape, ...)."""
    if v is None:
        raise Unsupported(f"{what} is missing")
    if not v.const:
        raise Unsupported(f"{what} is computed at run time; ShardGuard needs it constant")
    return v.example


def activation(v: Value | None) -> Value:
    if v is None:
        raise Unsupported("its input is missing")
    return v


def _pads(x: Value, attrs: dict[str, Any], kernel: Sequence[int], strides: Sequence[int],
          dilations: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) padding of a 2-D window op, auto_pad resolved."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto == "VALID":
        return 0, 0, 0, 0
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(2):
            size = x.shape[2 + i]
            total = max((math.ceil(size / strides[i]) - 1) * strides[i]
                        + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return begin[0], begin[1], end[0], end[1]
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    return pads[0], pads[1], pads[2], pads[3]


def _pair(values: Sequence[int]) -> tuple[int, int]:
    return int(values[0]), int(values[1])


def _window(x: Value, attrs: dict[str, Any], kernel: Sequence[int]
            ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    if len(kernel) != 2 or x.example.dim() != 4:
        raise Unsupported(f"only 2-D windows on (N, C, H, W) tensors are supported "
                          f"(kernel {list(kernel)}, input {list(x.shape)})")
    strides = _pair(attrs.get("strides", [1, 1]))
    dilations = _pair(attrs.get("dilations", [1, 1]))
    return strides, dilations, _pads(x, attrs, kernel, strides, dilations)


def _explicit(b: Builder, x: Value, pads: tuple[int, int, int, int], value: float) -> Value:
    top, left, bottom, right = pads
    return b.module(nn.ConstantPad2d((left, right, top, bottom), value), x, "_pad")


@op("Conv")
def conv(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x, weight = activation(ins[0]), const(ins[1], "the weight").float()
    bias = const(ins[2], "the bias").float() if len(ins) > 2 and ins[2] is not None else None
    if weight.dim() != 4:
        raise Unsupported(f"only 2-D convolutions are supported (weight {list(weight.shape)})")
    kernel = weight.shape[2:]
    strides, dilations, pads = _window(x, attrs, kernel)
    groups = int(attrs.get("group", 1))
    symmetric = pads[0] == pads[2] and pads[1] == pads[3]
    layer: nn.Conv2d = skip_init(  # type: ignore[no-untyped-call]
        nn.Conv2d, weight.shape[1] * groups, weight.shape[0], _pair(kernel), strides,
        (pads[0], pads[1]) if symmetric else 0, dilations, groups, bias=bias is not None)
    layer.weight.data.copy_(weight)
    if bias is not None and layer.bias is not None:
        layer.bias.data.copy_(bias)
    if not symmetric:
        x = _explicit(b, x, pads, 0.0)
    return [b.module(layer, x)]


@op("MaxPool")
def max_pool(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x, kernel = activation(ins[0]), _pair(attrs["kernel_shape"])
    strides, dilations, pads = _window(x, attrs, kernel)
    ceil = bool(attrs.get("ceil_mode", 0))
    top, left, bottom, right = pads
    if top == bottom and left == right and top <= kernel[0] // 2 and left <= kernel[1] // 2:
        return [b.module(nn.MaxPool2d(kernel, strides, (top, left), dilations, ceil_mode=ceil),
                         x)]
    x = _explicit(b, x, pads, float("-inf"))
    return [b.module(nn.MaxPool2d(kernel, strides, 0, dilations, ceil_mode=ceil), x)]


class ValidAvgPool2d(nn.Module):
    """Average pooling over padded windows that divides by the number of real elements
    in each window (ONNX AveragePool, count_include_pad=0, with any padding)."""

    def __init__(self, kernel: Sequence[int], stride: Sequence[int],
                 pads: tuple[int, int, int, int], ceil_mode: bool,
                 plane: Sequence[int]) -> None:
        super().__init__()
        top, left, bottom, right = pads
        self.kernel, self.stride, self.ceil_mode = tuple(kernel), tuple(stride), ceil_mode
        self.pads = (left, right, top, bottom)
        ones = torch.ones(1, 1, *plane)
        self.register_buffer("share", self._pool(ones))  # (1, 1, H', W'): real fraction

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, self.pads), self.kernel, self.stride, 0, self.ceil_mode,
                            True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        share = self.share
        assert isinstance(share, torch.Tensor)
        return self._pool(x) / share


@op("AveragePool")
def average_pool(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    if len(attrs["kernel_shape"]) != 2:
        raise Unsupported(f"only 2-D pooling is supported (kernel {attrs['kernel_shape']})")
    x, kernel = activation(ins[0]), _pair(attrs["kernel_shape"])
    strides, dilations, pads = _window(x, attrs, kernel)
    if dilations != (1, 1):
        raise Unsupported("dilated average pooling is not supported")
    ceil, include = bool(attrs.get("ceil_mode", 0)), bool(attrs.get("count_include_pad", 0))
    top, left, bottom, right = pads
    if not any(pads):
        return [b.module(nn.AvgPool2d(kernel, strides, 0, ceil, count_include_pad=True), x)]
    if top == bottom and left == right and top <= kernel[0] // 2 and left <= kernel[1] // 2:
        return [b.module(nn.AvgPool2d(kernel, strides, (top, left), ceil,
                                      count_include_pad=include), x)]
    if include:
        x = _explicit(b, x, pads, 0.0)
        return [b.module(nn.AvgPool2d(kernel, strides, 0, ceil, count_include_pad=True), x)]
    return [b.module(ValidAvgPool2d(kernel, strides, pads, ceil, x.shape[2:]), x)]


@op("GlobalAveragePool", "GlobalMaxPool")
def global_pool(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    if x.example.dim() != 4:
        raise Unsupported(f"only (N, C, H, W) inputs are supported, not {list(x.shape)}")
    average = b.current_op == "GlobalAveragePool"
    return [b.module(nn.AdaptiveAvgPool2d(1) if average else nn.AdaptiveMaxPool2d(1), x)]


@op("BatchNormalization")
def batch_norm(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    scale, shift, mean, var = (const(v, what).float() for v, what in zip(
        ins[1:5], ("the scale", "the bias", "the mean", "the variance")))
    if attrs.get("training_mode", 0):
        raise Unsupported("batch norm in training mode is not supported")
    kinds: dict[int, type[nn.BatchNorm2d] | type[nn.BatchNorm1d]] = {
        4: nn.BatchNorm2d, 2: nn.BatchNorm1d, 3: nn.BatchNorm1d}
    if x.example.dim() not in kinds:
        raise Unsupported(f"batch norm of a rank-{x.example.dim()} tensor is not supported")
    layer = kinds[x.example.dim()](len(scale), eps=float(attrs.get("epsilon", 1e-5)))
    for name, value in (("weight", scale), ("bias", shift), ("running_mean", mean),
                        ("running_var", var)):
        getattr(layer, name).data.copy_(value.reshape(-1))
    return [b.module(layer, x)]


def channel_affine(b: Builder, x: Value, k: torch.Tensor, kind: str) -> Value | None:
    """``x * k`` / ``x + k`` / ``x - k`` for a per-channel constant ``k``, as a batch norm
    (folded into the batch norm ``x`` comes from, if only this node reads it); None if
    ``k`` is not per-channel on an (N, C, H, W) ``x``."""
    if x.example.dim() != 4 or k.dim() > 4 or not k.is_floating_point():
        return None
    channels, shape = x.shape[1], list(k.shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if shape != [channels, 1, 1]:
        return None
    k = k.reshape(-1).float()
    scale, shift = (k, torch.zeros_like(k)) if kind == "Mul" else \
        (torch.ones_like(k), k if kind == "Add" else -k)
    layer = b.layer_of(x)
    with torch.no_grad():
        if isinstance(layer, nn.BatchNorm2d) and layer.affine and b.sole_use(x):
            layer.weight.mul_(scale)
            layer.bias.mul_(scale).add_(shift)
            return Value(x.example, x.node)  # same shape
        norm = nn.BatchNorm2d(channels, eps=0.0)  # (x - 0) / sqrt(1 + 0) * scale + shift
        norm.weight.copy_(scale)
        norm.bias.copy_(shift)
    return b.module(norm, x)


@op("Gemm")
def gemm(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    a, weight = activation(ins[0]), const(ins[1], "matrix B").float()
    c = const(ins[2], "matrix C").float() if len(ins) > 2 and ins[2] is not None else None
    if attrs.get("transA", 0) or a.example.dim() != 2:
        raise Unsupported("only Gemm on an (N, K) input, not transposed, is supported")
    if not attrs.get("transB", 0):
        weight = weight.t()
    layer: nn.Linear = skip_init(  # type: ignore[no-untyped-call]
        nn.Linear, weight.shape[1], weight.shape[0], bias=c is not None)
    layer.weight.data.copy_(weight * float(attrs.get("alpha", 1.0)))
    if c is not None:
        if c.numel() not in (1, weight.shape[0]):
            raise Unsupported(f"a bias C of shape {list(c.shape)} is not supported")
        layer.bias.data.copy_(c.reshape(-1).expand(weight.shape[0])
                              * float(attrs.get("beta", 1.0)))
    return [b.module(layer, a)]


@op("MatMul")
def matmul(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    a, m = activation(ins[0]), activation(ins[1])
    if m.const and m.example.dim() == 2 and not a.const:
        layer: nn.Linear = skip_init(  # type: ignore[no-untyped-call]
            nn.Linear, m.shape[0], m.shape[1], bias=False)
        layer.weight.data.copy_(m.example.float().t())
        return [b.module(layer, a)]
    return [b.call(torch.matmul, a, m)]


_ACTIVATIONS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "Relu": lambda a: nn.ReLU(),
    "Sigmoid": lambda a: nn.Sigmoid(),
    "Tanh": lambda a: nn.Tanh(),
    "LeakyRelu": lambda a: nn.LeakyReLU(float(a.get("alpha", 0.01))),
    "Elu": lambda a: nn.ELU(float(a.get("alpha", 1.0))),
    "HardSwish": lambda a: nn.Hardswish(),
    "Softplus": lambda a: nn.Softplus(),
    "Mish": lambda a: nn.Mish(),
}


@op(*_ACTIVATIONS)
def elementwise_layer(b: Builder, ins: list[Value | None], attrs: dict[str, Any]
                      ) -> list[Value]:
    return [b.module(_ACTIVATIONS[b.current_op](attrs), activation(ins[0]))]


class HardSigmoid(nn.Module):
    """``clamp(alpha * x + beta, 0, 1)`` (ONNX HardSigmoid; torch's has alpha 1/6)."""

    def __init__(self, alpha: float, beta: float) -> None:
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * self.alpha + self.beta, 0.0, 1.0)


@op("HardSigmoid")
def hard_sigmoid(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return [b.module(nn.Hardsigmoid(), activation(ins[0]))]
    return [b.module(HardSigmoid(alpha, beta), activation(ins[0]))]


@op("Clip")
def clip(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    if b.opset < 11:
        low, high = attrs.get("min"), attrs.get("max")
    else:
        low = float(const(ins[1], "min")) if len(ins) > 1 and ins[1] is not None else None
        high = float(const(ins[2], "max")) if len(ins) > 2 and ins[2] is not None else None
    if low is None and high is None:
        return [x]
    if low == 0.0 and high is None:
        return [b.module(nn.ReLU(), x)]
    if low is not None and high is not None:
        layer = nn.ReLU6() if (low, high) == (0.0, 6.0) else nn.Hardtanh(low, high)
        return [b.module(layer, x)]
    return [b.call(torch.clamp, x, low, high)]


@op("PRelu")
def prelu(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x, slope = activation(ins[0]), const(ins[1], "the slope").float()
    channels = x.shape[1] if x.example.dim() > 1 else 1
    if slope.numel() not in (1, channels):
        raise Unsupported(f"a slope of shape {list(slope.shape)} is not supported")
    layer = nn.PReLU(slope.numel())
    layer.weight.data.copy_(slope.reshape(-1))
    return [b.module(layer, x)]


@op("LRN")
def lrn(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    size = int(attrs["size"])
    if size % 2 == 0:  # torch and ONNX centre an even window differently
        raise Unsupported(f"LRN with an even size ({size}) is not supported")
    layer = nn.LocalResponseNorm(size, float(attrs.get("alpha", 1e-4)),
                                 float(attrs.get("beta", 0.75)), float(attrs.get("bias", 1.0)))
    return [b.module(layer, activation(ins[0]))]


@op("Softmax", "LogSoftmax")
def softmax(b: Builder, ins: list[Value | None], attrs: dict[str, Any]) -> list[Value]:
    x = activation(ins[0])
    rank = x.example.dim()
    axis = int(attrs.get("axis", 1 if b.opset < 13 else -1)) % rank
    kind = nn.Softmax if b.current_op == "Softmax" else nn.LogSoftmax
    if b.opset >= 13 or axis == rank - 1:
        return [b.module(kind(dim=axis), x)]
    if axis != 1:  # opset < 13: over all dimensions from ``axis`` on, flattened
        raise Unsupported(f"{b.current_op} over axes {axis}.. of a rank-{rank} tensor")
    flat = b.call(torch.flatten, x, 1)
    return [b.call(torch.reshape, b.module(kind(dim=1), flat), (-1, *x.shape[1:]))]
