"""Where images come from: IDX directories, ``.npz`` arrays, image folders, or noise.

Each source holds (or knows where to find) N raw images and, when it has them, N
labels, and reads a range of images on demand, so a dataset is never decoded or
preprocessed whole. ``dataset.open_data`` picks the source from what the path is.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from ..errors import DataError
from .classes import ClassList, folder_labels

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
Kind = Literal["idx", "npz", "folder", "noise"]


class Source(Protocol):
    kind: Kind
    name: str  # what and where, for people
    labels: np.ndarray | None  # (N,) int64, or None: unlabelled

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray | list[np.ndarray]:
        """Raw images ``start..stop``: one (B, H, W[, C]) array, or one array per image."""
        ...


@dataclass
class ArraySource:
    """Images held as one array: an IDX split or an ``.npz`` file."""

    kind: Kind
    name: str
    images: np.ndarray  # (N, H, W) or (N, H, W, C), uint8 or float in [0, 1]
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.images)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.images[start:stop]


def idx_source(directory: Path | None, split: Literal["train", "test"]) -> ArraySource:
    from ._datasets import DEFAULT_DATA_DIR, data_dir, load_split

    root = data_dir(directory)
    loaded = load_split(split, root)
    what = "Fashion-MNIST" if root == DEFAULT_DATA_DIR else "IDX"
    return ArraySource("idx", f"{what} {split} split ({root})", loaded.images, loaded.labels)


def npz_source(path: Path) -> ArraySource:
    """``x``: (N, H, W) or (N, H, W, C) with C 1 or 3, uint8 or float in [0, 1];
    optional ``y``: (N,) non-negative integers. Read without pickle."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays.files:
                raise DataError(f"{path}: no array 'x' (it holds {', '.join(arrays.files)})")
            x = arrays["x"]
            y = arrays["y"] if "y" in arrays.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)) or not len(x):
        raise DataError(f"{path}: x has shape {x.shape}; expected (N, H, W) or (N, H, W, C) "
                        "with C 1 or 3")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"{path}: x is {x.dtype}; expected uint8 or float")
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError(f"{path}: float images must be finite and in [0, 1] (found "
                            f"{np.nanmin(x):g}..{np.nanmax(x):g}); store uint8 or divide by 255")
    labels = None
    if y is not None:
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
            raise DataError(f"{path}: y must hold {len(x)} non-negative integer labels, one per "
                            f"image (it is {y.dtype} of shape {y.shape})")
        labels = y.astype(np.int64)
    shape = "×".join(map(str, x.shape[1:]))
    return ArraySource("npz", f"{path} ({shape} {x.dtype})", x, labels)


@dataclass
class FolderSource:
    """Image files (JPEG, PNG) read with Pillow as they are needed."""

    kind: Kind
    name: str
    files: list[Path]
    labels: np.ndarray | None
    how: str = ""  # how labels were given

    def __len__(self) -> int:
        return len(self.files)

    def read(self, start: int, stop: int) -> list[np.ndarray]:
        return [read_image(p) for p in self.files[start:stop]]


def read_image(path: Path) -> np.ndarray:
    """(H, W) uint8 for grey images, (H, W, 3) for any other (alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            grey = image.mode in ("1", "L", "LA", "I", "I;16", "F")
            return np.asarray(image.convert("L" if grey else "RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def _images_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def folder_source(root: Path, classes: ClassList | None) -> FolderSource:
    """One subfolder per class (labelled, see ``classes.folder_labels``), or images
    directly in ``root`` (unlabelled)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    top = _images_in(root)
    if folders and top:
        raise DataError(f"{root}: holds both images and subfolders; put every image in its "
                        "class's subfolder, or use a folder of images only (unlabelled)")
    if not folders:
        if not top:
            raise DataError(f"{root}: no images (JPEG or PNG) and no class subfolders")
        return FolderSource("folder", f"image folder {root} (no labels)", top, None,
                            "no labels")
    indices, how = folder_labels([f.name for f in folders], classes)
    files, labels = [], []
    for folder, label in zip(folders, indices):
        found = _images_in(folder)
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"{root}: no images (JPEG or PNG) in its {len(folders)} subfolders")
    return FolderSource("folder", f"image folder {root} ({len(folders)} classes; {how})",
                        files, np.array(labels, dtype=np.int64), how)


@dataclass
class NoiseSource:
    """Uniform random inputs in [0, 1) at the model's input shape, only when asked for
    (``--data noise``); image ``i`` is the same whatever the batch. Not preprocessed."""

    shape: tuple[int, ...]
    count: int = 1000
    seed: int = 0
    kind: Kind = "noise"
    labels: np.ndarray | None = None
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = (f"NOISE: uniform random inputs in [0, 1) of shape "
                     f"{'×'.join(map(str, self.shape))} (--data noise), not images")

    def __len__(self) -> int:
        return self.count

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.stack([np.random.default_rng([self.seed, i]).random(self.shape,
                                                                     dtype=np.float32)
                         for i in range(start, stop)]) if stop > start else \
            np.zeros((0, *self.shape), np.float32)


def is_idx_directory(path: Path) -> bool:
    return any((path / name).is_file() for name in (
        "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte",
        "train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"))


def environment_data() -> str | None:
    return os.environ.get("SHARDGUARD_DATA") or None
