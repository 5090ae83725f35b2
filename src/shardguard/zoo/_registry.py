"""The zoo's registry: names, factories, input shapes and training recipes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..data import CLASSES, PRESETS, ClassList, Preprocess
from . import efficientnet, imagenet, small
from .classes import imagenet_class_list

FASHION_MNIST = ClassList(CLASSES)


@dataclass(frozen=True)
class Recipe:
    """How a shipped checkpoint was trained (see ``zoo/train.py``)."""

    epochs: int
    lr: float = 3e-3
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: bool = True
    head: str | None = None  # train only this layer, on a frozen pretrained backbone
    train_images: int | None = None  # the first N training images (None: all)


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry."""

    name: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    description: str
    recipe: Recipe | None = None  # None: not trained (random weights only)
    tags: tuple[str, ...] = field(default_factory=tuple)
    pretrained: Callable[[], Path] | None = None  # finds weights trained elsewhere
    preprocess: Preprocess | None = None  # stored images → input (None: for_input(shape))
    classes: ClassList | None = None  # names (and WordNet ids) of the outputs, when known
    backbone: str | None = None  # zoo model whose pretrained weights fill all but the head


#: EfficientNet-Lite's evaluation transform: centre crop of 224/(224+32) of the shorter
#: side, bicubic, and "inception-style" mean 127 / std 128 on 0-255 pixels, which the edge
#: models use "for better post-quantization" (TensorFlow's efficientnet_lite_builder.py,
#: MEAN_RGB and STDDEV_RGB; preprocessing.py, CROP_PADDING = 32).
EFFICIENTNET_LITE = Preprocess(resize=256, crop=224, channels=3, mean=[127 / 255] * 3,
                               std=[128 / 255] * 3, interpolation="bicubic")


#: Fashion-MNIST for an ImageNet backbone: 28×28 grey resized to 224×224, grey replicated
#: to RGB, then EfficientNet-Lite's own normalisation.
FASHION_AT_224 = Preprocess(resize=[224, 224], channels=3, mean=[127 / 255] * 3,
                            std=[128 / 255] * 3, interpolation="bilinear")

# The Fashion-MNIST models: 28×28 grey in [0, 1], Fashion-MNIST's ten classes.
_FASHION: dict[str, Any] = {"preprocess": PRESETS["fashion-mnist"], "classes": FASHION_MNIST}

ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("lenet5", small.LeNet5, (1, 28, 28), "LeNet-5, 2 conv + 3 FC",
                  Recipe(epochs=15, augment=False), **_FASHION),
        ModelSpec("vgg-small", small.VGGSmall, (1, 28, 28), "VGG-style, 6 conv (32/64/128) + 2 FC",
                  Recipe(epochs=8), **_FASHION),
        ModelSpec("resnet-small", small.ResNetSmall, (1, 28, 28),
                  "CIFAR-style ResNet, 3 stages × 2 basic blocks (16/32/64)", Recipe(epochs=8),
                  **_FASHION),
        ModelSpec("mobilenetv2-small", small.MobileNetV2, (1, 28, 28),
                  "MobileNetV2, inverted residuals with depthwise convs", Recipe(epochs=8),
                  **_FASHION),
        ModelSpec("resnet18", imagenet.resnet18, (3, 224, 224), "ResNet-18 (ImageNet size)",
                  preprocess=PRESETS["imagenet"]),
        ModelSpec("resnet50", imagenet.resnet50, (3, 224, 224), "ResNet-50 (ImageNet size)",
                  preprocess=PRESETS["imagenet"]),
        ModelSpec("vgg16", imagenet.vgg16, (3, 224, 224), "VGG-16 (ImageNet size)",
                  preprocess=PRESETS["imagenet"]),
        ModelSpec("mobilenetv2", imagenet.mobilenetv2, (3, 224, 224),
                  "MobileNetV2 1.0 (ImageNet size)", preprocess=PRESETS["imagenet"]),
        ModelSpec("efficientnet-lite0", efficientnet.efficientnet_lite0, (3, 224, 224),
                  "EfficientNet-Lite0, pretrained on ImageNet (4.65 M parameters)",
                  pretrained=efficientnet.pretrained_lite0, preprocess=EFFICIENTNET_LITE,
                  classes=imagenet_class_list()),
        ModelSpec("efficientnet-lite0-fmnist", efficientnet.efficientnet_lite0_fmnist,
                  (3, 224, 224), "EfficientNet-Lite0's frozen ImageNet backbone with a linear "
                  "head trained on Fashion-MNIST at 224×224",
                  # a linear probe on the frozen features of 3000 training images (about
                  # 300 per class): feature extraction at 224×224 is what takes the time
                  Recipe(epochs=60, lr=3e-3, weight_decay=1e-4, batch_size=128, augment=False,
                         head="_fc", train_images=3000),
                  preprocess=FASHION_AT_224, classes=FASHION_MNIST,
                  backbone="efficientnet-lite0"),
    )
}

TRAINED = tuple(name for name, spec in ZOO.items() if spec.recipe is not None)
