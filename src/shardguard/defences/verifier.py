"""Freivalds checks on a verifier worker (M4): numpy only, shared with the local executor.

A checked stage ``S`` is split by ``defences.freivalds.checked_plan`` into a prover
(``S`` on its device, sending the output of each affine layer: the *claims*) and a
verifier stage ``S~check`` on another device, which receives ``S``'s inputs from
their producers and the claims from ``S``, recomputes the cheap rest of ``S`` from
them (its ONNX also returns each affine layer's input ``z``) and checks every claim
``y = A z + c`` against a secret pool of ``(r, Aᵀr, <r, c>)``, with what the
rounding bound needs (``|A|ᵀr``, ``<r, |c|>``, ``|A|ᵀ(r ⊙ w)``, ``<r, c²>``), made by the
coordinator and sent only to the verifier, over the authenticated control plane.
Each sample and round draws its own vector from the pool, so the prover cannot know
which one; the pool is new at every deployment. See ``defences/freivalds.py`` for
the error probability, and ``rounding_bound`` for the tolerance: set by float
rounding (from the layer's accumulation length and its operands' magnitudes),
not by the size of the terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MalformedMessage

SUFFIX = "~check"  # the verifier stage of S is "S~check"
UNIT_ROUNDOFF = 2.0 ** -24  # float32: the prover's arithmetic
_U64 = 2.0 ** -53
LAMBDA = 8.0  # the default tolerance: honest rounding exceeds the bound w.p. ≤ 2·exp(−32)


def gamma(n: float, u: float = UNIT_ROUNDOFF) -> float:
    """``γ_n = n·u / (1 − n·u)`` (Higham, Accuracy and Stability of Numerical Algorithms,
    2nd ed., §3.1, Lemma 3.1): the relative forward-error bound of n roundings."""
    return n * u / (1 - n * u)


def rounding_bound(z: np.ndarray, ry: np.ndarray, uz: np.ndarray, offset: np.ndarray,
                   ua: np.ndarray, oa: np.ndarray, layer: tuple[int, np.ndarray, np.ndarray],
                   tolerance: float = LAMBDA) -> np.ndarray:
    """(B,) how far float32 rounding can move ``<r, y> − <u, z> − offset`` for an affine
    claim ``y = A z + c``; ``layer`` is ``(n, uw, oa2)``: each output accumulates ``n``
    rounded operations, ``uw = |A|ᵀ(r ⊙ w)`` with ``w_i = Σ_j |A_ij|`` its row sums, and
    ``oa2 = <r, c²>``.

    An output ``y_i = fl(Σ_j A_ij z_j + c_i)`` is off by at most ``γ_n M_i``, with
    ``M_i = Σ_j |A_ij||z_j| + |c_i|``, in any summation order (Higham §3.1, eq. 3.5): the
    error is ``Σ_k δ_k s_k``, each rounding ``|δ_k| ≤ u`` times a partial sum ``|s_k| ≤ M_i``.
    Summed worst-case over the outputs ``r`` picks, that is ``γ_n <r, M>``: on a wide
    layer, tens of percent of one output's rms, so a lie on one element would pass.
    Rounding errors are not adversarial, though: taken as independent, zero-mean and
    bounded by ``u`` (Higham and Mary, "A New Approach to Probabilistic Rounding Error
    Analysis", SIAM J. Sci. Comput. 41(5), 2019), the ``n Σ_i r_i`` of them sum to at most
    ``λ u sqrt(n Σ_i r_i M_i²)`` but with probability ``2 exp(−λ²/2)`` (Azuma–Hoeffding).
    By Minkowski, ``sqrt(Σ_i r_i M_i²) ≤ sqrt(Σ_i r_i P_i²) + sqrt(oa2)`` with
    ``P_i = Σ_j |A_ij||z_j|``, and by Cauchy–Schwarz ``P_i² ≤ w_i (|A| z²)_i``, so
    ``Σ_i r_i P_i² ≤ <uw, z²>``: all from the pool, without the weights (and ``<r, M> =
    <ua, |z|> + oa`` with ``ua = |A|ᵀr``, ``oa = <r, |c|>``, for the worst case).
    ``tolerance`` is ``λ``; the bound is the smaller of the two, plus the check's own
    float64 error.
    """
    n, uw, oa2 = layer
    b = len(z)
    za = np.abs(z.reshape(b, -1).astype(np.float64))
    ua = ua.reshape(b, -1) * (1 + 2 * UNIT_ROUNDOFF)  # ua crossed the wire as float32
    worst = gamma(n) * ((za * ua).sum(1) + oa)
    uw = uw.reshape(b, -1) * (1 + 2 * UNIT_ROUNDOFF)  # float32 on the wire too
    root = np.sqrt((za * za * uw).sum(1)) + np.sqrt(oa2)
    likely = tolerance * UNIT_ROUNDOFF * np.sqrt(n) * root
    own = gamma(ry.shape[1] + za.shape[1] + 1, _U64) * (
        np.abs(ry).sum(1) + np.abs(uz).sum(1) + np.abs(offset))
    return np.minimum(likely, worst) + own  # type: ignore[no-any-return]


def fails(y: np.ndarray, z: np.ndarray, r: np.ndarray, u: np.ndarray, offset: np.ndarray,
          ua: np.ndarray, oa: np.ndarray, layer: tuple[int, np.ndarray, np.ndarray],
          tolerance: float = LAMBDA) -> np.ndarray:
    """(B,) samples whose claim ``y`` fails one round: ``<r, y> ≠ <u, z> + offset``
    by more than float rounding can explain (``rounding_bound``; ``tolerance`` = λ).

    ``u = Aᵀr``, ``offset = <r, c>``, ``ua = |A|ᵀr`` and ``oa = <r, |c|>`` for each
    sample's vector ``r``; ``layer`` is ``(n, uw, oa2)``. Computed in float64.
    """
    b = len(y)
    with np.errstate(invalid="ignore", over="ignore"):
        ry = (y.reshape(b, -1).astype(np.float64) * r.reshape(b, -1))
        uz = (z.reshape(b, -1).astype(np.float64) * u.reshape(b, -1))
        lhs, rhs = ry.sum(1), uz.sum(1) + offset
        bound = rounding_bound(z, ry, uz, offset, ua, oa, layer, tolerance)
        finite = np.isfinite(y.reshape(b, -1)).all(1)
        return ~(np.abs(lhs - rhs) <= bound) | ~finite  # type: ignore[no-any-return]


@dataclass
class Pool:
    """One affine layer's secret vectors: ``r`` (P, *y), ``u = Aᵀr`` (P, *z), ``offset``
    (P,) ``= <r, c>``, and for the rounding bound ``ua = |A|ᵀr`` (P, *z), ``oa = <r, |c|>``
    (P,), ``uw`` (P, *z), ``oa2`` (P,) and ``n``, the layer's accumulation length (see
    ``rounding_bound``)."""

    claim: str  # the verifier's ONNX input carrying this layer's output (the claim)
    r: np.ndarray
    u: np.ndarray
    offset: np.ndarray
    ua: np.ndarray
    oa: np.ndarray
    uw: np.ndarray  # |A|ᵀ(r ⊙ row sums of |A|) (P, *z)
    oa2: np.ndarray  # <r, c²> (P,)
    n: int

    def to_wire(self) -> dict[str, Any]:
        return {"claim": self.claim, "count": len(self.r), "y": list(self.r.shape[1:]),
                "z": list(self.u.shape[1:]), "r": self.r.astype(np.uint8).tobytes(),
                "u": self.u.astype(np.float64).tobytes(),
                "offset": self.offset.astype(np.float64).tobytes(),
                "ua": self.ua.astype(np.float32).tobytes(),
                "oa": self.oa.astype(np.float64).tobytes(),
                "uw": self.uw.astype(np.float32).tobytes(),
                "oa2": self.oa2.astype(np.float64).tobytes(), "n": self.n}

    @classmethod
    def from_wire(cls, m: Any) -> Pool:
        try:
            count, y, z = int(m["count"]), tuple(map(int, m["y"])), tuple(map(int, m["z"]))
            r = np.frombuffer(m["r"], np.uint8).reshape(count, *y).astype(np.float32)
            u = np.frombuffer(m["u"], np.float64).reshape(count, *z)
            offset = np.frombuffer(m["offset"], np.float64).reshape(count)
            ua = np.frombuffer(m["ua"], np.float32).reshape(count, *z)
            oa = np.frombuffer(m["oa"], np.float64).reshape(count)
            uw = np.frombuffer(m["uw"], np.float32).reshape(count, *z)
            oa2 = np.frombuffer(m["oa2"], np.float64).reshape(count)
            return cls(str(m["claim"]), r, u, offset, ua, oa, uw, oa2, int(m["n"]))
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
    tolerance: float  # λ of the rounding bound (``rounding_bound``)

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
        if rounds < 1 or not tolerance >= 1 or any(len(p.r) < rounds for p in pools):
            raise MalformedMessage("Freivalds check needs rounds ≥ 1, tolerance ≥ 1 (λ of "
                                   "the rounding bound), and pools of at least `rounds` "
                                   "vectors")
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
                out |= fails(y, z, pool.r[pick], pool.u[pick], pool.offset[pick],
                             pool.ua[pick], pool.oa[pick],
                             (pool.n, pool.uw[pick], pool.oa2[pick]), self.tolerance)
        return out
