"""Voting on real workers (M4): a stage's copies on distinct devices, compared where they meet.

A voted stage ``S`` runs on its device and on ``k - 1`` replicas, named in the
request's route as ``S`` (copy 0) and ``S@1``, ``S@2``. Copy ``j`` sends on link
``S@j>T`` instead of ``S>T``; whoever receives ``S``'s outputs (the next stage's
worker, or the coordinator) holds the copies of each request in a ``Ballots`` and
passes on the value they agree on. Per sample, copies agree when they differ by at
most ``tolerance`` of their largest magnitude (and are finite).

* Three copies: as soon as two agree on every sample, that value goes on, so one
  compromised or crashed device is outvoted. Samples where no two agree fail the
  request (it is reported, like a rejected sealed message).
* Two copies: both must arrive and agree, or the request fails: detection.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

MAX_OPEN = 4096  # requests with copies still missing


class VoteFailed(Exception):
    """The copies of a request disagree with no majority (or one is missing, with two)."""


def copy_of(stage: str) -> tuple[str, int]:
    """``"s1@2"`` → ``("s1", 2)``; ``"s1"`` → ``("s1", 0)``."""
    base, _, j = stage.partition("@")
    return (base, int(j)) if j.isdigit() else (stage, 0)


def copy_link(link: str, j: int) -> str:
    src, _, dst = link.partition(">")
    return link if j == 0 else f"{src}@{j}>{dst}"


def role(stage: str, device: str, route: Mapping[str, str], copies: int) -> int | None:
    """Which copy of ``stage`` ``device`` runs in this request (None: not one of them)."""
    if route.get(stage) == device:
        return 0
    return next((j for j in range(1, copies) if route.get(f"{stage}@{j}") == device), None)


class Ballots:
    """Copies of voted stages' outputs, per request, until they are decided."""

    def __init__(self, copies: Mapping[str, int], tolerance: float = 1e-4) -> None:
        self.copies = {s: k for s, k in copies.items() if k > 1}
        self.tolerance = tolerance
        self.open: OrderedDict[tuple[int, str], dict[int, dict[str, np.ndarray]]] = OrderedDict()
        self.decided: OrderedDict[tuple[int, str], None] = OrderedDict()  # late copies: dropped
        self.masked = self.failed = 0

    def voted(self, link: str) -> bool:
        return copy_of(link.partition(">")[0])[0] in self.copies

    def cast(self, req: int, link: str, arrays: dict[str, np.ndarray]
             ) -> tuple[str, dict[str, np.ndarray]] | None:
        """Add one copy; the base link and the agreed arrays once decided, else None.

        Raises ``VoteFailed`` when the copies cannot agree.
        """
        src, _, dst = link.partition(">")
        stage, j = copy_of(src)
        base = f"{stage}>{dst}"
        key = (req, base)
        if key in self.decided:
            return None  # the vote is over; this copy came late
        if key not in self.open and len(self.open) >= MAX_OPEN:
            self.open.popitem(last=False)  # the oldest undecided request is given up
        ballot = self.open.setdefault(key, {})
        ballot[j] = arrays  # copies send the same tensor names, on their own link
        k = self.copies[stage]
        if len(ballot) < 2:
            return None
        values = list(ballot.values())
        agree = [self._agree(values[a], values[b])
                 for a in range(len(values)) for b in range(a + 1, len(values))]
        if k == 2:
            self._close(key)
            if not agree[0].all():
                self.failed += 1
                raise VoteFailed(f"{base}: 2 copies disagree on {int((~agree[0]).sum())} "
                                 "sample(s)")
            return base, values[0]
        if len(values) == 2:
            if agree[0].all():
                self._close(key)
                return base, values[0]
            return None  # wait for the third copy
        self._close(key)
        ab, ac, bc = agree
        if ab.all():
            self.masked += int(not (ac.all() and bc.all()))
            return base, values[0]
        majority = ab | ac | bc
        if not majority.all():
            self.failed += 1
            raise VoteFailed(f"{base}: no two of 3 copies agree on "
                             f"{int((~majority).sum())} sample(s)")
        self.masked += 1
        chosen = {}
        for name in values[0]:
            pick = np.where(_rows(ab | ac, values[0][name]), values[0][name], values[1][name])
            chosen[name] = pick  # where a and b disagree, c sides with one of them
        return base, chosen

    def _close(self, key: tuple[int, str]) -> None:
        del self.open[key]
        self.decided[key] = None
        if len(self.decided) > 2 * MAX_OPEN:
            self.decided.popitem(last=False)

    def _agree(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
        same: np.ndarray | None = None
        for name, x in a.items():
            y = b.get(name)
            if y is None or y.shape != x.shape:
                return np.zeros(len(x), dtype=bool)
            ok = samples_agree(x, y, self.tolerance)
            same = ok if same is None else same & ok
        return same if same is not None else np.ones(0, dtype=bool)


def samples_agree(x: np.ndarray, y: np.ndarray, tolerance: float) -> np.ndarray:
    """(B,) whether each sample of two copies of a tensor agrees: both finite, and no
    element apart by more than ``tolerance`` of the larger magnitude. The local
    executor's ``Vote`` uses this too."""
    x2, y2 = x.reshape(len(x), -1), y.reshape(len(y), -1)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.maximum(np.abs(x2).max(1), np.abs(y2).max(1))
        return ((np.abs(x2 - y2).max(1) <= tolerance * scale)  # type: ignore[no-any-return]
                & np.isfinite(x2).all(1) & np.isfinite(y2).all(1))


def _rows(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    return mask.reshape(-1, *[1] * (like.ndim - 1))
