"""Random small CNNs (residual and concatenation branches) and platforms, for property tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import nn

from shardguard.platform._model import PlatformSpec
from shardguard.platform._resolve import build_platform

BLOCKS = ("conv", "conv_bn_relu", "residual", "concat", "pool", "depthwise", "dilated")


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.b = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.b(self.a(x)) + x)


class Concat(nn.Module):
    def __init__(self, c: int, out: int) -> None:
        super().__init__()
        self.left = nn.Conv2d(c, out, 3, padding=1)
        self.right = nn.Conv2d(c, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.left(x), self.right(x)], dim=1)


class RandomCNN(nn.Module):
    def __init__(self, blocks: list[tuple[str, int]], in_channels: int = 2, classes: int = 5):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for kind, width in blocks:
            if kind == "conv":
                layers.append(nn.Conv2d(c, width, 3, padding=1, stride=1))
                c = width
            elif kind == "conv_bn_relu":
                layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                c = width
            elif kind == "residual":
                layers.append(Residual(c))
            elif kind == "concat":
                layers.append(Concat(c, width))
                c = 2 * width
            elif kind == "pool":
                layers.append(nn.MaxPool2d(3, stride=1, padding=1))
            elif kind == "depthwise":
                layers += [nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU6()]
            elif kind == "dilated":
                layers.append(nn.Conv2d(c, width, 3, padding=2, dilation=2))
                c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


@st.composite
def random_cnns(draw: st.DrawFn, max_blocks: int = 4) -> RandomCNN:
    blocks = draw(st.lists(st.tuples(st.sampled_from(BLOCKS), st.integers(2, 5)),
                           min_size=1, max_size=max_blocks))
    torch.manual_seed(draw(st.integers(0, 1000)))
    model = RandomCNN(blocks).eval()
    for m in model.modules():  # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


@st.composite
def random_platforms(draw: st.DrawFn, min_devices: int = 2, max_devices: int = 3,
                     tight_memory: bool = False) -> object:
    n = draw(st.integers(min_devices, max_devices))
    devices = []
    for i in range(n):
        memory = draw(st.sampled_from([2e3, 5e3, 2e4, 1e9])) if tight_memory else 1e9
        devices.append({
            "name": f"d{i}", "mac_rate": draw(st.sampled_from([1e6, 3e6, 1e7, 5e7])),
            "memory_bytes": memory, "active_power_w": draw(st.sampled_from([1.0, 2.5, 5.0])),
            "idle_power_w": 0.5, "clock_hz": 1e9, "has_aes": False,
            "crypto_cycles_per_byte": {"chacha20-poly1305": 5.0, "aes-128-gcm": 40.0}})
    links = []
    for i in range(n):
        for j in range(i + 1, n):
            if draw(st.booleans()):
                links.append({"a": f"d{i}", "b": f"d{j}",
                              "bandwidth_bps": draw(st.sampled_from([1e5, 1e6, 1e7])),
                              "latency_s": draw(st.sampled_from([0.0, 1e-4, 1e-3]))})
    spec = PlatformSpec.model_validate({
        "name": "random", "medium": {
            "bandwidth_bps": draw(st.sampled_from([1e5, 1e6, 1e7])),
            "latency_s": draw(st.sampled_from([0.0, 1e-3])),
            "tx_j_per_byte": draw(st.sampled_from([0.0, 1e-8, 1e-6])),
            "rx_j_per_byte": draw(st.sampled_from([0.0, 1e-8])), "shared": False},
        "devices": devices, "links": links})
    return build_platform(spec, "random")
