"""Preprocessing, declared with the model: from stored images to the model's input tensor.

    pre = Preprocess(resize=256, crop=224, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    x = pre.apply(images)          # (B, H, W) or (B, H, W, C) uint8/float → (B, C, 224, 224)

A ``Preprocess`` is a pure, deterministic function of its fields, applied in this order:

1. **scale**: uint8 images become float32 ``value / 255`` in [0, 1]; float images are
   taken as they are (they must already be in [0, 1]: the readers check);
2. **resize** (``resize``): an integer resizes the *shorter* side to it, keeping the
   aspect ratio (the longer side becomes ``int(resize * long / short)``); ``[H, W]``
   resizes to exactly that. ``interpolation`` is ``bilinear`` (default) or ``bicubic``,
   both with antialiasing, or ``nearest`` — ``torch.nn.functional.interpolate`` with
   ``align_corners=False``, as torchvision's ``Resize`` does on tensors. An image that
   already has the target size is not resampled;
3. **centre crop** (``crop``): an integer or ``[H, W]``; the top-left corner is
   ``round((size - crop) / 2)`` on each axis (torchvision's ``CenterCrop``); a crop
   larger than the image is an error;
4. **channels** (``channels``): one grey channel is replicated to 3; 3 channels become
   one by ITU-R 601-2 luma (0.299 R + 0.587 G + 0.114 B, the weights Pillow's ``L``
   conversion uses); ``None`` keeps what the images have;
5. **normalise**: ``(x - mean) / std`` per channel (one value: every channel).

Steps 2-4 commute with the next ones' linearity up to rounding; the order is fixed so
that results are reproducible bit for bit. Batches are processed as they are read
(``data.Data.batches``), never a whole dataset at 224×224 at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import yaml
from pydantic import Field, PositiveInt, model_validator

from .._config import Config, load_yaml, validate
from ..errors import ConfigError, DataError

Size = PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]

#: ImageNet's per-channel mean and standard deviation of RGB values in [0, 1], as every
#: torchvision ImageNet classifier expects (torchvision docs, "Models and pre-trained weights").
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as Pillow's convert("L")


class Preprocess(Config):
    """How stored images become a model's input (see the module docstring for the order)."""

    resize: Size | None = None
    """An integer: the shorter side becomes this (aspect kept); [H, W]: exactly this size;
    none: no resizing."""
    crop: Size | None = None
    """Centre crop to this (an integer: a square); none: no crop."""
    channels: Literal[1, 3] | None = None
    """Output channels: grey is replicated to 3, RGB becomes luma for 1; none: unchanged."""
    mean: Annotated[list[float], Field(min_length=1, max_length=3)] = [0.0]
    """Subtracted per channel after scaling to [0, 1] (one value: every channel)."""
    std: Annotated[list[float], Field(min_length=1, max_length=3)] = [1.0]
    """Divided per channel after the mean (one value: every channel); each > 0."""
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    """Resampling for ``resize`` (bilinear and bicubic antialias when shrinking)."""

    @model_validator(mode="after")
    def _consistent(self) -> Preprocess:
        if any(s <= 0 for s in self.std):
            raise ValueError("std: every value must be > 0")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) == 2 or (self.channels is not None and len(values) not in
                                    (1, self.channels)):
                raise ValueError(f"{name}: give one value or one per channel "
                                 f"({self.channels or 'the images have'}), got {len(values)}")
        return self

    # -- what it does ----------------------------------------------------------------------
    def output_shape(self, height: int, width: int, channels: int) -> tuple[int, int, int]:
        """(C, H, W) of an image of the given size after preprocessing."""
        h, w = _resized(self.resize, height, width)
        if self.crop is not None:
            h, w = _pair(self.crop)
        return (self.channels or channels, h, w)

    def apply(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W) or (B, H, W, C) uint8 or float images → (B, C, H', W') float32."""
        if images.dtype == np.uint8:
            x = torch.from_numpy(images.astype(np.float32) / 255.0)
        else:
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # (B, C, H, W)
        x = self._resize(x)
        if self.crop is not None:
            x = _centre_crop(x, *_pair(self.crop))
        x = self._channels(x)
        mean, std = self.mean, self.std
        if any(m != 0.0 for m in mean) or any(s != 1.0 for s in std):
            c = x.shape[1]
            if len(mean) not in (1, c) or len(std) not in (1, c):
                raise DataError(f"mean/std have {len(mean)}/{len(std)} values for "
                                f"{c}-channel images")
            x = (x - torch.tensor(mean).expand(c)[:, None, None]) / torch.tensor(std).expand(
                c)[:, None, None]
        return x.contiguous()

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation of (B, C, H, W) inputs: pixel values in [0, 1] again, the
        scale on which reconstructions are scored (PSNR, SSIM)."""
        c = x.shape[1]
        mean = torch.tensor(self.mean, dtype=x.dtype).expand(c)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype).expand(c)[:, None, None]
        return (x * std + mean).clamp(0.0, 1.0)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        size = _resized(self.resize, x.shape[2], x.shape[3])
        if size == tuple(x.shape[2:]):
            return x
        if self.interpolation == "nearest":
            return torch.nn.functional.interpolate(x, size=size, mode="nearest")
        return torch.nn.functional.interpolate(x, size=size, mode=self.interpolation,
                                               align_corners=False, antialias=True)

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        have, want = x.shape[1], self.channels
        if want is None or have == want:
            return x
        if have == 1 and want == 3:
            return x.expand(-1, 3, -1, -1)
        if have == 3 and want == 1:
            return (x * torch.tensor(LUMA)[:, None, None]).sum(1, keepdim=True)
        raise DataError(f"cannot turn {have}-channel images into {want} channels")

    def describe(self) -> str:
        """One line for people: what happens to each image."""
        steps = []
        if isinstance(self.resize, int):
            steps.append(f"resize shorter side to {self.resize}")
        elif self.resize is not None:
            steps.append(f"resize to {self.resize[0]}×{self.resize[1]}")
        if self.crop is not None:
            h, w = _pair(self.crop)
            steps.append(f"centre crop {h}×{w}")
        if self.channels is not None:
            steps.append(f"{self.channels} channel{'s' if self.channels > 1 else ''}")
        if any(m != 0.0 for m in self.mean) or any(s != 1.0 for s in self.std):
            steps.append(f"normalise mean {_fmt(self.mean)} std {_fmt(self.std)}")
        else:
            steps.append("values in [0, 1]")
        if self.resize is not None:
            steps.append(self.interpolation)
        return ", ".join(steps)


def _pair(size: int | list[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def _resized(resize: int | list[int] | None, height: int, width: int) -> tuple[int, int]:
    if resize is None:
        return height, width
    if isinstance(resize, int):  # shorter side → resize, the longer one in proportion
        if height <= width:
            return resize, int(resize * width / height)
        return int(resize * height / width), resize
    return resize[0], resize[1]


def _centre_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    h, w = x.shape[2], x.shape[3]
    if height > h or width > w:
        raise DataError(f"centre crop {height}×{width} is larger than the image ({h}×{w}); "
                        "resize first")
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return x[:, :, top:top + height, left:left + width]


def _fmt(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


#: Named preprocessings, for ``--preprocess NAME``.
PRESETS: dict[str, Preprocess] = {
    # torchvision's ImageNet evaluation transform (references/classification/presets.py):
    # resize the shorter side to 256, centre crop 224, normalise with ImageNet's statistics
    "imagenet": Preprocess(resize=256, crop=224, channels=3, mean=list(IMAGENET_MEAN),
                           std=list(IMAGENET_STD)),
    # the zoo's Fashion-MNIST models: 28×28 grey in [0, 1]
    "fashion-mnist": Preprocess(resize=[28, 28], channels=1),
}


def for_input(input_shape: tuple[int, ...] | list[int]) -> Preprocess:
    """What a model that declares no preprocessing gets: its input size and channels,
    values in [0, 1], no normalisation."""
    c, h, w = (list(input_shape) + [0, 0, 0])[:3]
    channels = c if c in (1, 3) else None
    return Preprocess(resize=[h, w] if h and w else None, channels=channels)  # type: ignore[arg-type]


def parse_preprocess(value: str | dict[str, object] | Preprocess, *,
                     base: Path | None = None, source: str = "--preprocess") -> Preprocess:
    """A preset name, a YAML file (relative to ``base``), an inline YAML mapping such as
    ``"{resize: 256, crop: 224, channels: 3}"``, or a mapping → ``Preprocess``."""
    if isinstance(value, Preprocess):
        return value
    if isinstance(value, dict):
        return validate(Preprocess, value, source)
    text = value.strip()
    if text in PRESETS:
        return PRESETS[text].model_copy()
    if text.startswith("{"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source} {text!r}: not a YAML mapping ({exc})") from None
        return validate(Preprocess, data, source)
    path = Path(text)
    if base is not None and not path.is_absolute():
        path = base / path
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_yaml(Preprocess, path)
    raise ConfigError(f"{source} {text!r}: not a preset ({', '.join(PRESETS)}), a YAML file "
                      "or an inline mapping like '{resize: 256, crop: 224, channels: 3}'")
