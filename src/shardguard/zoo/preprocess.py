"""How an image file becomes a model's input: declared with the model, applied with Pillow.

    prep = ZOO["efficientnet-lite0"].preprocessing
    x = load_image(Path("cat.jpg"), prep)       # (3, 224, 224) float32
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import DataError


@dataclass(frozen=True)
class Preprocessing:
    """Resize, centre-crop and normalise, in that order (the usual evaluation transform)."""

    resize: int
    """Length of the shorter side after resizing, in pixels."""
    crop: int
    """Side of the square cut from the centre after resizing."""
    mean: tuple[float, ...]
    """Per-channel mean subtracted from pixels scaled to [0, 1]."""
    std: tuple[float, ...]
    """Per-channel standard deviation the pixels are then divided by."""
    channels: Literal["RGB", "L"] = "RGB"
    """Colour (3 channels) or grey (1)."""
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"
    """Resampling filter of the resize."""


def load_image(path: Path, prep: Preprocessing) -> torch.Tensor:
    """The image at ``path`` as a (C, crop, crop) float32 tensor, preprocessed."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert(prep.channels)
            scale = prep.resize / min(image.size)
            size = (max(prep.crop, round(image.width * scale)),
                    max(prep.crop, round(image.height * scale)))
            image = image.resize(size, getattr(Image.Resampling, prep.interpolation.upper()))
            left, top = (size[0] - prep.crop) // 2, (size[1] - prep.crop) // 2
            image = image.crop((left, top, left + prep.crop, top + prep.crop))
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image not found") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not an image Pillow can read") from exc
    x = torch.from_numpy(pixels.reshape(prep.crop, prep.crop, -1)).permute(2, 0, 1)
    mean = torch.tensor(prep.mean).view(-1, 1, 1)
    std = torch.tensor(prep.std).view(-1, 1, 1)
    return ((x - mean) / std).contiguous()
