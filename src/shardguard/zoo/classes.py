"""Class names of the label sets zoo models predict (ImageNet-1k so far).

    names = imagenet_classes()          # 1000 ImageNetClass, in model output order
    names[285].name, names[285].wnid    # ('Egyptian cat', 'n02124075')
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from ..data import ClassList

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str  # WordNet id, the folder name in ImageNet's own layout
    lemmas: tuple[str, ...]  # WordNet's names for it

    @property
    def name(self) -> str:
        return self.lemmas[0]


@functools.cache
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1000 ImageNet-1k classes (source: the header of ``data/imagenet_classes.tsv``)."""
    rows = [line.split("\t") for line in (DATA / "imagenet_classes.tsv").read_text().splitlines()
            if line and not line.startswith("#")][1:]  # after the header row
    return tuple(ImageNetClass(int(i), wnid, tuple(s.strip() for s in lemmas.split(",")))
                 for i, wnid, lemmas in rows)


def class_names(label_set: str | None, count: int) -> list[str]:
    """Names for ``count`` outputs: the label set's, or ``class N`` when it has none."""
    if label_set == "imagenet" and count == 1000:
        return [c.name for c in imagenet_classes()]
    return [f"class {i}" for i in range(count)]


@functools.cache
def imagenet_class_list() -> ClassList:
    """The ImageNet-1k classes as a ``ClassList`` (names and WordNet ids, output order)."""
    classes = imagenet_classes()
    return ClassList(tuple(c.name for c in classes), tuple(c.wnid for c in classes))
