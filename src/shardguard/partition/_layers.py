"""What each kind of layer allows when a segment is split, and channel slicing.

Which modules and functions act pixel by pixel (fine inside fused tiles), which act
channel by channel (fine for channel groups), which are sliding windows whose padding
can be made explicit, and how a layer is cut down to a group of its output channels.
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
from torch import nn

POINTWISE_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.Hardtanh, nn.LeakyReLU, nn.GELU, nn.SiLU,
                     nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.ELU, nn.Identity,
                     nn.Dropout, nn.Dropout2d)  # nn.Hardtanh includes nn.ReLU6
# act on each pixel's channels together: fine for tiles, not for channel groups
PIXELWISE_MODULES = (*POINTWISE_MODULES, nn.LocalResponseNorm, nn.PReLU)
CHANNELWISE_MODULES = (*POINTWISE_MODULES, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                       nn.AdaptiveMaxPool2d, nn.ConstantPad2d)
POINTWISE_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, torch.add,
                       torch.mul, torch.relu, torch.sigmoid, torch.tanh, operator.sub,
                       operator.truediv, torch.sub, torch.div,
                       nn.functional.relu, nn.functional.relu6, nn.functional.silu,
                       nn.functional.hardswish}
POINTWISE_METHODS = {"relu", "sigmoid", "add", "mul", "contiguous"}


def pair(v: Any) -> tuple[int, int]:
    """A layer argument given as one int or a pair, as a pair."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def is_window(module: nn.Module) -> bool:
    """A sliding-window layer whose padding can be made explicit for fused tiles.

    A constant padding layer (asymmetric "same" padding, imported ONNX pads) is a 1×1
    window whose padding is its top and left pads.
    """
    if isinstance(module, nn.ConstantPad2d):
        return min(module.padding) >= 0
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    if isinstance(module, nn.MaxPool2d):
        return not module.ceil_mode and not module.return_indices
    if isinstance(module, nn.AvgPool2d):
        padded = pair(module.padding) != (0, 0)
        return (not module.ceil_mode and module.divisor_override is None
                and (module.count_include_pad or not padded))
    return False


def sliced_bytes(module: nn.Module, c0: int, c1: int) -> int:
    """Bytes of ``slice_channels(module, c0, c1)``'s weights and buffers, counted without
    making it (planning weighs thousands of candidate groups; copying them was most of it)."""
    n, fresh = c1 - c0, torch.empty(0).element_size()  # slices are made in the default dtype
    if isinstance(module, nn.Conv2d):
        per_channel = module.weight[0, 0].numel() * (1 if module.groups > 1 else module.in_channels)
        return (n * per_channel + (n if module.bias is not None else 0)) * fresh
    if isinstance(module, nn.BatchNorm2d):
        floats = 2 * n * (int(module.affine) + int(module.track_running_stats))
        return floats * fresh + (8 if module.track_running_stats else 0)  # + int64 count
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def slice_channels(module: nn.Module, c0: int, c1: int) -> nn.Module:
    """A copy of ``module`` computing only output channels [c0, c1)."""
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1
        n = c1 - c0
        conv = nn.Conv2d(n if depthwise else module.in_channels, n, module.kernel_size,
                         module.stride, module.padding, module.dilation,
                         groups=n if depthwise else 1, bias=module.bias is not None,
                         padding_mode=module.padding_mode)
        conv.weight.data.copy_(module.weight.data[c0:c1])
        if module.bias is not None:
            conv.bias.data.copy_(module.bias.data[c0:c1])
        return conv
    if isinstance(module, nn.BatchNorm2d):
        bn = nn.BatchNorm2d(c1 - c0, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        for key in ("weight", "bias", "running_mean", "running_var"):
            src = getattr(module, key)
            if src is not None:
                getattr(bn, key).data.copy_(src.data[c0:c1])
        if module.num_batches_tracked is not None:
            bn.num_batches_tracked.copy_(module.num_batches_tracked)
        return bn.eval()
    return copy.deepcopy(module)
