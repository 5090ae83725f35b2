"""Metrics, defined once. Every campaign row and every report uses these.

For N samples with labels y, clean predictions ĉ (no threat) and predictions p
under threat, where a sample may go unanswered (its request failed or missed
its deadline):

* clean accuracy         = mean(ĉ == y)
* accuracy (under threat) = mean(answered and scorable and p == y) — an unanswered
                           sample is wrong, and so is one whose output has a NaN or an
                           infinity (``scored``: it is no class, never class 0 by argmax)
* unscorable             = mean(answered and not scorable): answers that are no answer
* accuracy drop          = clean accuracy − accuracy
* attack success rate    = among samples the clean model got right, the share now
                           wrong or unanswered
* availability           = mean(answered)
* degraded               = mean(answered with a piece of a split tensor missing)
* latency                = the cost model's end-to-end latency of one request (s)

With a defence, a campaign row adds (``campaign.run_trial``):

* detection rate         = among samples the threat harmed without the defence (their
                           predicted class differs from the clean run's, or they went
                           unanswered), the share the defence flagged
* false-positive rate    = share of samples the defence flags with no threat at all
* defence energy         = joules per inference the defence adds on each device (cost model)

Without labels (an unlabelled dataset, or ``--data noise``), y is the clean model's
own top-1 prediction: "accuracy" is then agreement with the clean model, and the
accuracy drop is the silent-data-corruption rate (answers changed or lost) of fault
injection studies. Every row says which in ``measure`` (``MEASURES``).

Every accuracy figure carries its 95 % interval (``*_low``, ``*_high``): a percentile
bootstrap over the images (``BOOTSTRAP`` resamples, seed ``BOOTSTRAP_SEED``, so a row is
reproducible), paired for the drop (clean and threatened on the same resampled images).
Rows of the same condition under several seeds pool into one figure with ``pool``: the
images are resampled and each keeps its answers under every seed, so the interval holds
both the images' and the threat's randomness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..data.dataset import Measure  # "accuracy" or "agreement"

#: What a figure's "accuracy" is, per measure, for labels and captions.
MEASURES: dict[str, str] = {
    "accuracy": "accuracy (top-1, against the labels)",
    "agreement": "agreement with the clean model's top-1 (no labels)",
}
#: What "accuracy lost" is, per measure.
LOSSES: dict[str, str] = {
    "accuracy": "accuracy lost",
    "agreement": "answers changed (silent data corruption; no labels)",
}


BOOTSTRAP = 1000  # resamples of the images for each interval
BOOTSTRAP_SEED = 20260  # fixed: the same rows give the same intervals


@dataclass(frozen=True)
class Metrics:
    samples: int
    clean_accuracy: float
    accuracy: float
    accuracy_drop: float
    attack_success_rate: float
    availability: float
    degraded: float
    unscorable: float = 0.0  # answered, but with a NaN or an infinity in the output
    clean_accuracy_low: float = math.nan
    clean_accuracy_high: float = math.nan
    accuracy_low: float = math.nan
    accuracy_high: float = math.nan
    accuracy_drop_low: float = math.nan
    accuracy_drop_high: float = math.nan
    outcomes: str = ""  # per image, right without and under threat (``pack``), for ``pool``

    def row(self) -> dict[str, float | int]:
        return asdict(self)


def scored(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, scorable) for each row of ``output`` (N, classes), a tensor or an
    array: a row with any NaN or infinity is not scorable and predicts class −1, which no
    label is (argmax would call it class 0, or the position of the first NaN)."""
    out = torch.as_tensor(output)
    out = out.reshape(len(out), -1)
    finite = torch.isfinite(out).all(1)
    predicted = torch.where(finite, out.argmax(1), torch.full_like(finite, -1, dtype=torch.long))
    return predicted, finite


def measure(labels: torch.Tensor, clean: torch.Tensor, predicted: torch.Tensor,
            answered: torch.Tensor, degraded: torch.Tensor | None = None,
            scorable: torch.Tensor | None = None) -> Metrics:
    """Metrics from (N,) labels, clean predictions, predictions under threat and masks
    (``scored`` gives predictions and ``scorable`` from outputs), with 95 % intervals."""
    n = len(labels)
    ok = answered if scorable is None else answered & scorable
    clean_right = clean == labels
    right = ok & (predicted == labels)
    clean_accuracy = float(clean_right.double().mean())
    accuracy = float(right.double().mean())
    base = int(clean_right.sum())
    success = float((clean_right & ~right).sum()) / base if base else 0.0
    (cl, ch), (al, ah), (dl, dh) = intervals(
        np.stack([clean_right.numpy(), right.numpy()])[:, :, None])
    return Metrics(
        samples=n, clean_accuracy=clean_accuracy, accuracy=accuracy,
        accuracy_drop=clean_accuracy - accuracy, attack_success_rate=success,
        availability=float(answered.float().mean()),
        degraded=float(degraded.float().mean()) if degraded is not None else 0.0,
        unscorable=float((answered & ~ok).double().mean()),
        clean_accuracy_low=cl, clean_accuracy_high=ch, accuracy_low=al, accuracy_high=ah,
        accuracy_drop_low=dl, accuracy_drop_high=dh, outcomes=pack(clean_right, right))


def resample_means(values: np.ndarray, resamples: int = BOOTSTRAP,
                   seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Bootstrap over images: ``values`` (C, N) → (C, resamples) means over resampled
    images, the same resamples for every row (so differences between rows are paired)."""
    n = values.shape[1]
    if n == 0:
        return np.full((values.shape[0], resamples), math.nan)
    draws = np.random.default_rng(seed).integers(0, n, (resamples, n))
    weights = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(np.float64)
    means: np.ndarray = np.asarray(values, dtype=np.float64) @ weights.T / n
    return means


def interval(samples: np.ndarray) -> tuple[float, float]:
    """The 95 % percentile interval of bootstrap ``samples``."""
    if not np.isfinite(samples).all():
        return math.nan, math.nan
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def intervals(outcomes: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Intervals of clean accuracy, accuracy and drop from ``outcomes`` (2, N, seeds): per
    image, right without and under threat, in each seed. Images are resampled, each with
    its answers under every seed."""
    per_image = np.asarray(outcomes, dtype=np.float64).mean(2)  # (2, N)
    clean, under = resample_means(per_image)
    return interval(clean), interval(under), interval(clean - under)


def pack(clean_right: torch.Tensor, right: torch.Tensor) -> str:
    """Per-image outcomes of a row, compactly (hex of packed bits) for ``pool``."""
    bits = np.stack([clean_right.numpy(), right.numpy()]).astype(bool)
    return np.packbits(bits, axis=1).tobytes().hex()


def _unpack(text: str, n: int) -> np.ndarray:
    raw = np.frombuffer(bytes.fromhex(text), dtype=np.uint8).reshape(2, -1)
    return np.unpackbits(raw, axis=1)[:, :n].astype(bool)


def pool(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Rows of one condition under several seeds (on the same images) as one figure: mean
    clean accuracy, accuracy and drop, each with its 95 % interval (images resampled with
    their answers under every seed; rows without outcomes fall back to their own bounds)."""
    keys = ("clean_accuracy", "accuracy", "accuracy_drop")
    out = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    if rows and all(r.get("outcomes") for r in rows):
        stacked = np.stack([_unpack(r["outcomes"], int(r["samples"])) for r in rows], axis=2)
        bounds = intervals(stacked)
    else:
        bounds = tuple((float(np.mean([r.get(f"{k}_low", math.nan) for r in rows])),
                        float(np.mean([r.get(f"{k}_high", math.nan) for r in rows])))
                       for k in keys)
    for k, (low, high) in zip(keys, bounds):
        out.update({f"{k}_low": low, f"{k}_high": high})
    out["seeds"] = len(rows)
    return out


def reference(labels: torch.Tensor | None,
              clean: torch.Tensor) -> tuple[torch.Tensor, Measure]:
    """What answers are scored against: the labels, or without them the clean top-1."""
    return (labels, "accuracy") if labels is not None else (clean, "agreement")


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); (nan, nan) for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def with_interval(value: float, low: Any, high: Any, digits: int = 1) -> str:
    """``81.2% [78.9%, 83.4%]``: a proportion with its 95 % interval, the one way ShardGuard
    writes a figure and its uncertainty (the summary, the CLI's tables, the report)."""
    return f"{value:.{digits}%} {interval_text(low, high, digits)}"


def interval_text(low: Any, high: Any, digits: int = 1) -> str:
    """``[78.9%, 83.4%]``; ``[–]`` where there is no interval (a missing or non-finite bound)."""
    try:
        lo, hi = float(low), float(high)
    except (TypeError, ValueError):
        return "[–]"
    return f"[{lo:.{digits}%}, {hi:.{digits}%}]" if math.isfinite(lo + hi) else "[–]"


def rate(successes: int, n: int) -> str:
    """``91.24% [90.67%, 91.78%]``: a proportion with its Wilson interval."""
    if n <= 0:
        return "nan (no images)"
    return with_interval(successes / n, *wilson(successes, n), digits=2)
