"""A model's classes, and how an image folder's subfolders map onto them.

    classes = ClassList.from_file("classes.txt")   # lines "n01440764 tench" or "tench"
    labels, how = folder_labels(["n01443537", "n01440764"], classes)   # → [1, 0]

A model's outputs are indexed 0..K-1; ``ClassList`` names them and may give each its
WordNet id (ImageNet's ``n01440764`` style). An image folder with one subfolder per
class (``n01440764/…``, the layout of ImageNet's validation set) is labelled by the
model's own indices when every subfolder is one of the model's WordNet ids, or else
one of its class names (compared ignoring case and anything but letters and digits);
otherwise by sorted subfolder order, 0..k-1, and ``how`` says which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class ClassList:
    """The names of a model's outputs, in index order, with optional WordNet ids."""

    names: tuple[str, ...]
    wnids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.wnids is not None and len(self.wnids) != len(self.names):
            raise DataError(f"{len(self.wnids)} WordNet ids for {len(self.names)} classes")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_file(cls, path: str | Path) -> ClassList:
        """One class per line, in index order: ``NAME`` or ``WNID NAME`` (every line the
        same form)."""
        path = Path(path)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise DataError(f"{path}: cannot read the class list ({exc.strerror})") from None
        while lines and not lines[-1].strip():
            lines.pop()
        names, wnids = [], []
        for i, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                raise DataError(f"{path}: line {i} is empty (one class per line, in index "
                                "order)")
            first, _, rest = text.partition(" ")
            if WNID.match(first) and rest.strip():
                wnids.append(first)
                names.append(rest.strip())
            else:
                names.append(text)
        if not names:
            raise DataError(f"{path}: no classes")
        if wnids and len(wnids) != len(names):
            raise DataError(f"{path}: every line or none must start with a WordNet id")
        return cls(tuple(names), tuple(wnids) if wnids else None)


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def folder_labels(folders: list[str], classes: ClassList | None) -> tuple[list[int], str]:
    """The label of each subfolder (in the order given) and how they were chosen."""
    if classes is not None and classes.wnids is not None and all(
            WNID.match(f) for f in folders):
        index = {w: i for i, w in enumerate(classes.wnids)}
        unknown = [f for f in folders if f not in index]
        if unknown:
            raise DataError(f"subfolder {unknown[0]!r} is not one of the model's "
                            f"{len(classes)} WordNet ids")
        return [index[f] for f in folders], "WordNet-id subfolders → the model's classes"
    if classes is not None:
        by_key: dict[str, list[int]] = {}
        for i, name in enumerate(classes.names):
            by_key.setdefault(_key(name), []).append(i)
        if folders and all(_key(f) in by_key for f in folders):
            labels = []
            for f in folders:
                matches = by_key[_key(f)]
                if len(matches) > 1:
                    raise DataError(f"subfolder {f!r} names classes {matches[0]} and "
                                    f"{matches[1]} of the model; rename it to a WordNet id")
                labels.append(matches[0])
            return labels, "subfolders named as the model's classes → its indices"
    note = (" (they look like WordNet ids, but the model declares none)"
            if folders and all(WNID.match(f) for f in folders) else "")
    return list(range(len(folders))), f"sorted subfolder order, 0..{len(folders) - 1}{note}"
