"""Classify image files with a model: each image's top-K classes, named, with probabilities.

    loaded = load_model("efficientnet-lite0")
    for p in predict(loaded, [Path("cat.jpg")], top=3):
        print(p.image, [(g.name, round(g.p, 3)) for g in p.top])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.sources import read_image
from ..errors import ConfigError, ModelError
from ._load import LoadedModel


@dataclass(frozen=True)
class Guess:
    index: int
    name: str
    p: float  # softmax probability


@dataclass(frozen=True)
class Prediction:
    image: str
    top: list[Guess]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@torch.no_grad()
def predict(loaded: LoadedModel, images: Sequence[Path], top: int = 5,
            batch: int = 16) -> list[Prediction]:
    """The ``top`` most probable classes of each image, most probable first."""
    if loaded.preprocess is None:
        raise ModelError(f"{loaded.ref}: declares no preprocessing, so images cannot be fed "
                         "to it (predict takes zoo models that declare one)")
    if top < 1:
        raise ConfigError(f"--top {top}: must be at least 1")
    results: list[Prediction] = []
    for start in range(0, len(images), batch):
        paths = images[start:start + batch]
        x = torch.cat([loaded.preprocess.apply(_rgb(p)[None]) for p in paths])
        probs = torch.softmax(loaded.module(x), dim=1)
        names = (list(loaded.classes.names) if loaded.classes is not None
                 and len(loaded.classes) == probs.shape[1]
                 else [f"class {i}" for i in range(probs.shape[1])])
        for path, row in zip(paths, probs):
            if torch.isnan(row).any():  # never a class: an output that cannot be scored
                raise ModelError(f"{path}: the model's output is NaN")
            values, indices = row.topk(min(top, len(row)))
            results.append(Prediction(str(path), [
                Guess(int(i), names[int(i)], float(v)) for v, i in zip(values, indices)]))
    return results


def _rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 (grey and palette images converted)."""
    image = read_image(path)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3]
