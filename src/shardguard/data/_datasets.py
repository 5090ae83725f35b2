"""Fashion-MNIST and synthetic datasets as in-memory tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import DataError
from .idx import read_idx

#: Where the Debian package ``dataset-fashion-mnist`` installs the four IDX files.
DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "sudo apt-get install dataset-fashion-mnist"

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}


@dataclass(frozen=True)
class Split:
    """One split of an image-classification dataset, held as uint8 images."""

    name: str
    images: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` samples (all by default) as (N, 1, H, W) float32 in [0, 1] and labels."""
        images = self.images[:n]
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        return x, torch.from_numpy(self.labels[:n])


def data_dir(explicit: str | Path | None = None) -> Path:
    """The dataset directory: ``explicit``, else ``$SHARDGUARD_DATA``, else the Debian default."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get("SHARDGUARD_DATA")
    return Path(env) if env else DEFAULT_DATA_DIR


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    hint = f" (install it with: {INSTALL_HINT})" if directory == DEFAULT_DATA_DIR else ""
    raise DataError(f"{directory / (stem + '.gz')}: file not found{hint}")


@lru_cache(maxsize=4)
def load_split(split: Literal["train", "test"], directory: str | Path | None = None) -> Split:
    """One Fashion-MNIST split from its IDX files, validating magic numbers, counts and sizes."""
    root = data_dir(directory)
    if not root.is_dir():
        hint = f"; install it with: {INSTALL_HINT}" if root == DEFAULT_DATA_DIR else ""
        raise DataError(f"{root}: dataset directory not found{hint}")
    image_stem, label_stem, count = _FILES[split]
    images = read_idx(_find(root, image_stem), ndim=3, count=count, shape=(28, 28))
    label_path = _find(root, label_stem)
    labels = read_idx(label_path, ndim=1, count=count)
    if labels.max(initial=0) >= len(CLASSES):
        raise DataError(f"{label_path}: label {int(labels.max())} out of range 0..9")
    return Split(split, images, labels.astype(np.int64))


def load_fashion_mnist(directory: str | Path | None = None) -> tuple[Split, Split]:
    """The 60 000-image training split and the 10 000-image test split."""
    return load_split("train", directory), load_split("test", directory)


def synthetic(n: int = 256, shape: tuple[int, int] = (28, 28), classes: int = 10,
              seed: int = 0) -> Split:
    """A small learnable synthetic set: each class is a fixed random pattern plus noise.

    For tests that must not depend on the real dataset being installed.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(classes, *shape))
    labels = rng.integers(0, classes, size=n)
    noise = rng.normal(0, 40, size=(n, *shape))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return Split("synthetic", images, labels.astype(np.int64))
