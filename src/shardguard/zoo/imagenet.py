"""ImageNet-size CNNs for 3×224×224 inputs, with random weights.

Used for cost modelling, partitioning and runtime benchmarks; their shapes
follow the reference architectures (torchvision's definitions), so MACs and
parameter counts match the published figures that tests pin.
"""

from __future__ import annotations

import torch
from torch import nn

from .small import BasicBlock, MobileNetV2, shortcut


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck: 1×1 reduce, 3×3 (stride here, as in ResNet v1.5), 1×1 expand ×4."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        y: torch.Tensor = self.relu(out + self.shortcut(x))
        return y


class ResNet(nn.Module):
    """ResNet for ImageNet (He et al., 2016): 7×7 stem, four stages, global pool, FC."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...],
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))  # (B, 64, 56, 56)
        stages: list[nn.Module] = []
        cin = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(block(cin, width, stride))
                cin = width * block.expansion
        self.layers = nn.Sequential(*stages)  # (B, 512·e, 7, 7)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        logits: torch.Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return logits


class VGG16(nn.Module):
    """VGG-16, configuration D (Simonyan & Zisserman, 2015), without batch norm."""

    CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)  # (B, 512, 7, 7)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


#: Sandler et al. 2018, Table 2.
MOBILENETV2_CFG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                   (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def resnet18(num_classes: int = 1000) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes)


def vgg16(num_classes: int = 1000) -> VGG16:
    return VGG16(num_classes)


def mobilenetv2(num_classes: int = 1000) -> MobileNetV2:
    return MobileNetV2(num_classes, in_channels=3, cfg=MOBILENETV2_CFG, stem=32, stem_stride=2,
                       last=1280)
