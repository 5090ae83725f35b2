"""Metrics, defined once. Every campaign row and every report uses these.

For N samples with labels y, clean predictions ĉ (no threat) and predictions p
under threat, where a sample may go unanswered (its request failed or missed
its deadline):

* clean accuracy         = mean(ĉ == y)
* accuracy (under threat) = mean(answered and p == y) — an unanswered sample is wrong
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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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


@dataclass(frozen=True)
class Metrics:
    samples: int
    clean_accuracy: float
    accuracy: float
    accuracy_drop: float
    attack_success_rate: float
    availability: float
    degraded: float

    def row(self) -> dict[str, float | int]:
        return asdict(self)


def measure(labels: torch.Tensor, clean: torch.Tensor, predicted: torch.Tensor,
            answered: torch.Tensor, degraded: torch.Tensor | None = None) -> Metrics:
    """Metrics from (N,) labels, clean predictions, predictions under threat and masks."""
    n = len(labels)
    clean_right = clean == labels
    right = answered & (predicted == labels)
    clean_accuracy = float(clean_right.float().mean())
    accuracy = float(right.float().mean())
    base = int(clean_right.sum())
    success = float((clean_right & ~right).sum()) / base if base else 0.0
    return Metrics(
        samples=n, clean_accuracy=clean_accuracy, accuracy=accuracy,
        accuracy_drop=clean_accuracy - accuracy, attack_success_rate=success,
        availability=float(answered.float().mean()),
        degraded=float(degraded.float().mean()) if degraded is not None else 0.0)


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


def rate(successes: int, n: int) -> str:
    """``0.9124 (95% CI 0.9067-0.9178)``: a proportion with its Wilson interval."""
    low, high = wilson(successes, n)
    return f"{successes / n:.4f} (95% CI {low:.4f}-{high:.4f})" if n else "nan (no images)"
