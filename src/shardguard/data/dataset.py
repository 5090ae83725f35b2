"""One interface to every dataset: ``open_data`` → ``Data``, read lazily in batches.

    data = open_data("val/", model=loaded)          # an image folder, the model's preprocessing
    print(data.describe())                          # what was read, and how
    for x in data.batches(n=1000):                  # (≤256, C, H, W) float32, one at a time
        ...
    x, y = data.images(100), data.labels(100)       # materialised; y is None without labels

``data`` is a directory of IDX files (Fashion-MNIST's format; the default is
``$SHARDGUARD_DATA``, else /usr/share/datasets/fashion-mnist), an image folder
(one subfolder per class, or images only: unlabelled), a ``.npz`` file with ``x`` and
optional ``y``, or ``"noise"``: uniform random inputs, only when asked for and named
so in every description. Images are preprocessed as the model declares
(``preprocess.Preprocess``); a user model that declares nothing gets its input size
and channels (``preprocess.for_input``), and the description says so.

Without labels, what is measured is agreement with the clean model's own top-1
prediction (``measure == "agreement"``); with them, accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .classes import ClassList
from .preprocess import Preprocess, for_input, parse_preprocess
from .sources import (
    NoiseSource,
    Source,
    environment_data,
    folder_source,
    idx_source,
    is_idx_directory,
    npz_source,
)


class Declares(Protocol):
    """What data needs of a model (a zoo ``LoadedModel`` has it): its name, input shape,
    preprocessing and classes, any of which it may leave out."""

    @property
    def ref(self) -> str: ...
    @property
    def input_shape(self) -> tuple[int, ...] | None: ...
    @property
    def preprocess(self) -> Preprocess | None: ...
    @property
    def classes(self) -> ClassList | None: ...

Measure = Literal["accuracy", "agreement"]
BATCH = 256  # images preprocessed at a time: 256 × 3 × 224 × 224 float32 is 154 MB


@dataclass
class Data:
    """Images (and labels, when the dataset has them) ready for one model."""

    source: Source
    preprocess: Preprocess | None  # None: the source gives model inputs (noise)
    input_shape: tuple[int, ...]
    training: Callable[[], Source] | None = None  # its training split, when it has one
    preprocess_note: str = ""  # where the preprocessing came from

    def __len__(self) -> int:
        return len(self.source)

    @property
    def labelled(self) -> bool:
        return self.source.labels is not None

    @property
    def measure(self) -> Measure:
        return "accuracy" if self.labelled else "agreement"

    @property
    def is_noise(self) -> bool:
        return self.source.kind == "noise"

    def describe(self) -> str:
        """One line: which data, how many images, labels or not, preprocessing."""
        labels = "labelled" if self.labelled else (
            "no labels: scored by agreement with the clean model's top-1")
        pre = (f"; preprocessing: {self.preprocess.describe()}{self.preprocess_note}"
               if self.preprocess is not None else "")
        return f"{self.source.name}: {len(self)} images, {labels}{pre}"

    def _span(self, n: int | None, start: int) -> tuple[int, int]:
        if n is not None and n < 1:
            raise ConfigError(f"number of images must be at least 1, got {n}")
        if not 0 <= start < len(self):
            raise ConfigError(f"{self.source.name}: no image {start} (it has {len(self)})")
        return start, len(self) if n is None else min(len(self), start + n)

    def labels(self, n: int | None = None, start: int = 0) -> torch.Tensor | None:
        """Labels of images ``start..start+n`` (all by default), or None without labels."""
        if self.source.labels is None:
            return None
        a, b = self._span(n, start)
        return torch.from_numpy(self.source.labels[a:b])

    def batches(self, n: int | None = None, start: int = 0,
                batch_size: int = BATCH) -> Iterator[torch.Tensor]:
        """Preprocessed images ``start..start+n``, ``batch_size`` at a time."""
        a, b = self._span(n, start)
        for i in range(a, b, batch_size):
            yield self._prepare(self.source, i, min(b, i + batch_size))

    def images(self, n: int | None = None, start: int = 0) -> torch.Tensor:
        """Preprocessed images ``start..start+n`` as one (N, C, H, W) tensor."""
        return torch.cat(list(self.batches(n, start)))

    def train_images(self, n: int) -> torch.Tensor:
        """``n`` images to profile or train on (range guards, eavesdroppers): the
        training split when the dataset has one, else its first images."""
        source = self.training() if self.training is not None else self.source
        return torch.cat([self._prepare(source, i, min(n, len(source), i + BATCH))
                          for i in range(0, min(n, len(source)), BATCH)])

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed inputs back on the pixel scale, [0, 1] (noise is drawn there)."""
        return self.preprocess.to_pixels(x) if self.preprocess is not None else x

    @property
    def training_note(self) -> str:
        return ("its training split" if self.training is not None else
                "the evaluation images themselves (the dataset has no training split)")

    def _prepare(self, source: Source, start: int, stop: int) -> torch.Tensor:
        raw = source.read(start, stop)
        if self.preprocess is None:
            x = torch.from_numpy(np.asarray(raw, dtype=np.float32))
        elif isinstance(raw, list):  # image files: each its own size until resized
            x = torch.cat([self._one(source, start + k, img) for k, img in enumerate(raw)])
        else:
            x = self.preprocess.apply(raw)
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(self._mismatch(source.name, tuple(x.shape[1:])))
        return x

    def _one(self, source: Source, index: int, image: np.ndarray) -> torch.Tensor:
        assert self.preprocess is not None
        x = self.preprocess.apply(image[None])
        if tuple(x.shape[1:]) != self.input_shape:
            where = getattr(source, "files", [None] * (index + 1))[index] or source.name
            raise DataError(self._mismatch(str(where), tuple(x.shape[1:])))
        return x

    def _mismatch(self, where: str, got: tuple[int, ...]) -> str:
        assert self.preprocess is not None
        return (f"{where}: images are {'×'.join(map(str, got))} after preprocessing "
                f"({self.preprocess.describe()}), the model takes "
                f"{'×'.join(map(str, self.input_shape))}; declare the model's preprocessing "
                "(--preprocess, or preprocess: in a spec)")


def open_data(data: str | Path | None = None, *, model: Declares | None = None,
              input_shape: Sequence[int] | None = None,
              preprocess: Preprocess | str | dict[str, Any] | None = None,
              classes: ClassList | str | Path | None = None,
              split: Literal["train", "test"] = "test") -> Data:
    """The dataset ``data`` (see the module docstring) prepared for a model.

    ``input_shape``, ``preprocess`` and ``classes`` default to what ``model`` declares
    (zoo models declare all three); a model that declares no preprocessing gets
    ``for_input(input_shape)``.
    """
    shape = tuple(input_shape) if input_shape is not None else (
        model.input_shape if model is not None else None)
    if shape is None:
        name = model.ref if model is not None else "the model"
        raise ConfigError(f"{name}: give its input shape (--input-shape C,H,W, or input_shape: "
                          "in a spec or plan)")
    chosen, note = _preprocessing(preprocess, model, shape)
    class_list = (ClassList.from_file(classes) if isinstance(classes, (str, Path)) else
                  classes if classes is not None else
                  (model.classes if model is not None else None))
    ref = str(data) if data is not None else environment_data()
    if ref == "noise":
        return Data(NoiseSource(shape), None, shape)
    source: Source
    training: Callable[[], Source] | None = None
    path = Path(ref) if ref is not None else None
    if path is None or (path.is_dir() and is_idx_directory(path)):
        source = idx_source(path, split)
        if split == "test" and _has_training(path):
            training = lambda: idx_source(path, "train")  # noqa: E731  (read when needed)
    elif path.suffix.lower() == ".npz":
        source = npz_source(path)
    elif path.is_dir():
        source = folder_source(path, class_list)
    elif not path.exists():
        raise DataError(f"{path}: dataset not found (expected a directory of IDX files, an "
                        "image folder, a .npz file, or 'noise')")
    else:
        raise DataError(f"{path}: not a dataset (expected a directory of IDX files, an image "
                        "folder, a .npz file, or 'noise')")
    out = Data(source, chosen, shape, training, note)
    out._prepare(source, 0, 1)  # refuse a mismatch now, in one line, not mid-run
    return out


def _has_training(path: Path | None) -> bool:
    from ._datasets import data_dir

    root = data_dir(path)
    return any((root / f"train-images-idx3-ubyte{gz}").is_file() for gz in (".gz", ""))


def _preprocessing(explicit: Preprocess | str | dict[str, Any] | None,
                   model: Declares | None, shape: tuple[int, ...]) -> tuple[Preprocess, str]:
    if explicit is not None:
        return parse_preprocess(explicit), ""
    declared = getattr(model, "preprocess", None) if model is not None else None
    if declared is not None:
        return declared, ""
    return for_input(shape), " (the model declares none: its input size and channels)"


def plan_data(data: str | Path | None, bound: Any) -> Data:
    """``open_data`` for a bound plan: the model, shape, preprocessing and classes it names."""
    ref = bound.plan.model
    return open_data(data, model=bound.model, input_shape=ref.input_shape,
                     preprocess=ref.preprocess, classes=ref.classes)
