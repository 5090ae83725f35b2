"""CNNs for 1×28×28 inputs (Fashion-MNIST), small enough to train on a laptop CPU.

Inputs are images in [0, 1]; outputs are logits over 10 classes. Each network is
plain PyTorch and traces with torch.fx (no data-dependent control flow).
"""

from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) with ReLU and max pooling. ~61.7 k parameters."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 6, 14, 14)
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),            # (B, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, kernel: int = 3,
             act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6() if groups > 1 or kernel == 1 else nn.ReLU())
    return nn.Sequential(*layers)


class VGGSmall(nn.Module):
    """VGG-style: three blocks of two 3×3 convolutions, then a two-layer classifier."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for w in widths:  # 28 → 14 → 7 → 3
            layers += [_conv_bn(cin, w), _conv_bn(w, w), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * 3 * 3, 256), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


def shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """A residual shortcut: identity, or a 1×1 projection when the shape changes."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convolutions and an identity (or 1×1 projection) shortcut."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        y: torch.Tensor = self.relu(out + self.shortcut(x))
        return y


class ResNetSmall(nn.Module):
    """CIFAR-style ResNet (He et al., 2016, §4.2): three stages of basic blocks, 16/32/64 wide."""

    def __init__(self, num_classes: int = 10, blocks: tuple[int, int, int] = (2, 2, 2)) -> None:
        super().__init__()
        self.stem = _conv_bn(1, 16)
        stages: list[nn.Module] = []
        cin = 16
        for i, (width, n) in enumerate(zip((16, 32, 64), blocks)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1  # 28 → 14 → 7
                stages.append(BasicBlock(cin, width, stride))
                cin = width
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        logits: torch.Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return logits


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand, 3×3 depthwise, 1×1 linear projection, maybe residual."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, kernel=1))
        layers += [_conv_bn(hidden, hidden, stride, groups=hidden),
                   _conv_bn(hidden, cout, kernel=1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(x)
        return x + out if self.residual else out


#: (expansion t, output channels c, repeats n, first stride s), as in Sandler et al. 2018, Table 2.
MOBILENETV2_SMALL_CFG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 1), (6, 64, 2, 2), (6, 96, 1, 1))


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018); ``cfg``/``stem``/``last`` set its size."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 cfg: tuple[tuple[int, int, int, int], ...] = MOBILENETV2_SMALL_CFG,
                 stem: int = 16, stem_stride: int = 1, last: int = 256,
                 dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, stem, stem_stride)]
        cin = stem
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        logits: torch.Tensor = self.classifier(torch.flatten(x, 1))
        return logits
