"""Freivalds checks on a verifier worker (M4): numpy only, shared with the local executor.

A checked stage ``S`` is split by ``defences.freivalds.checked_plan`` into a prover
(``S`` on its device, sending the output of each affine layer: the *claims*) and a
verifier stage ``S~check`` on another device, which receives ``S``'s inputs from
their producers and the claims from ``S``, recomputes the cheap rest of ``S`` from
them (its ONNX also returns each affine layer's input ``z``) and checks every claim
``y = A z + c`` against a secret pool of ``(r, Aᵀr, <r, c>)`` made by the
coordinator and sent only to the verifier, over the authenticated control plane.
Each sample and round draws its own vector from the pool, so the prover cannot know
which one; the pool is new at every deployment. See ``defences/freivalds.py`` for
the error probability and the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MalformedMessage

SUFFIX = "~check"  # the verifier stage of S is "S~check"


def fails(y: np.ndarray, z: np.ndarray, r: np.ndarray, u: np.ndarray, offset: np.ndarray,
          tolerance: float) -> np.ndarray:
    """(B,) samples whose claim ``y`` fails one round: ``<r, y> ≠ <u, z> + offset``.

    ``u = Aᵀr`` and ``offset = <r, c>`` for each sample's vector ``r``. Float rounding
    grows with the terms' Euclidean size, not their count, so the test is
    ``|<r, y> − <u, z> − offset| ≤ tolerance · ‖terms‖`` (in float64).
    """
    b = len(y)
    with np.errstate(invalid="ignore", over="ignore"):
        ry = (y.reshape(b, -1).astype(np.float64) * r.reshape(b, -1))
        uz = (z.reshape(b, -1).astype(np.float64) * u.reshape(b, -1))
        lhs, rhs = ry.sum(1), uz.sum(1) + offset
        scale = np.sqrt(np.square(ry).sum(1) + np.square(uz).sum(1) + np.square(offset))
        finite = np.isfinite(y.reshape(b, -1)).all(1)
        return ~(np.abs(lhs - rhs) <= tolerance * scale) | ~finite  # type: ignore[no-any-return]


@dataclass
class Pool:
    """One affine layer's secret vectors: ``r`` (P, *y), ``u = Aᵀr`` (P, *z), ``offset`` (P,)."""

    claim: str  # the verifier's ONNX input carrying this layer's output (the claim)
    r: np.ndarray
    u: np.ndarray
    offset: np.ndarray

    def to_wire(self) -> dict[str, Any]:
        return {"claim": self.claim, "count": len(self.r), "y": list(self.r.shape[1:]),
                "z": list(self.u.shape[1:]), "r": self.r.astype(np.uint8).tobytes(),
                "u": self.u.astype(np.float32).tobytes(),
                "offset": self.offset.astype(np.float64).tobytes()}

    @classmethod
    def from_wire(cls, m: Any) -> Pool:
        try:
            count, y, z = int(m["count"]), tuple(map(int, m["y"])), tuple(map(int, m["z"]))
            r = np.frombuffer(m["r"], np.uint8).reshape(count, *y).astype(np.float32)
            u = np.frombuffer(m["u"], np.float32).reshape(count, *z)
            offset = np.frombuffer(m["offset"], np.float64).reshape(count)
            return cls(str(m["claim"]), r, u, offset)
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessage(f"Freivalds pool is malformed ({exc})") from exc


@dataclass
class Verifier:
    """What a verifier worker holds for one checked stage."""

    stage: str  # the prover stage S
    link: str  # "S>S~check": where the claims arrive (alarms name it)
    pools: list[Pool]  # in the order of the ONNX's extra outputs (each layer's z); none
    # for a stage without affine layers: its verifier only recomputes it
    rounds: int
    tolerance: float

    def to_wire(self) -> dict[str, Any]:
        return {"stage": self.stage, "link": self.link, "rounds": self.rounds,
                "tolerance": self.tolerance, "pools": [p.to_wire() for p in self.pools]}

    @classmethod
    def from_wire(cls, m: Any) -> Verifier:
        try:
            rounds, tolerance = int(m["rounds"]), float(m["tolerance"])
            pools = [Pool.from_wire(p) for p in m["pools"]]
            stage, link = str(m["stage"]), str(m["link"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedMessage(f"Freivalds check is malformed ({exc})") from exc
        if rounds < 1 or not 0 < tolerance < 1 or any(len(p.r) < rounds for p in pools):
            raise MalformedMessage("Freivalds check needs rounds ≥ 1, 0 < tolerance < 1, "
                                   "and pools of at least `rounds` vectors")
        return cls(stage, link, pools, rounds, tolerance)

    def bad(self, feeds: dict[str, np.ndarray], zs: list[np.ndarray],
            rng: np.random.Generator) -> np.ndarray:
        """(B,) samples whose claims fail any round; ``zs`` are the verifier's own inputs."""
        b = len(zs[0]) if zs else 0
        out = np.zeros(b, dtype=bool)
        for pool, z in zip(self.pools, zs):
            y = feeds[pool.claim]
            # ``rounds`` distinct vectors per sample (drawn without replacement): a wrong
            # claim passes them all with probability 2^-rounds on average over the pool,
            # where repeats would raise it (E[f^2] > 1/4 for a pool of 16, 2 rounds)
            picks = np.argsort(rng.random((b, len(pool.r))), axis=1)[:, :self.rounds]
            for pick in picks.T:
                out |= fails(y, z, pool.r[pick], pool.u[pick], pool.offset[pick], self.tolerance)
        return out
