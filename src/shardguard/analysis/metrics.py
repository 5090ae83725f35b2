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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


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
