"""A trial of a sweep (campaign, analysis): its identity, its key and its random stream."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["Trial", "matched", "plan_precision", "stream_seed", "trial_threat"]


@dataclass(frozen=True)
class Trial:
    strategy: str
    threat: dict[str, Any]
    seed: int
    defence: str = "none"

    @property
    def key(self) -> str:
        fields: list[Any] = [self.strategy, self.threat, self.seed]
        if self.defence != "none":  # keys of campaigns without defences stay as they were
            fields.append(self.defence)
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def matched(target: str, plan: dict[str, list[str]], entry: dict[str, Any], where: str,
             strategy: str) -> list[str]:
    """What ``target`` names in the plan: ``devices`` and ``links`` each of its devices or
    links, ``every`` itself, else one device or link of the plan. A target that matches
    nothing is refused, in one line: it would run no trial, or trials the threat misses."""
    if target == "every":
        return [target]
    names = plan.get(target)
    kind = "link" if str(entry.get("id", "")).startswith("L") else "device"
    if names is None:
        names = [target] if target in plan.get(f"{kind}s", []) else []
    if not names:
        known = ", ".join(plan.get(f"{kind}s", [])) or "none"
        raise ConfigError(f"{where}: {entry.get('id')} target {target!r} matches no {kind} of "
                          f"the {strategy} plan (its {kind}s: {known})")
    return names


def stream_seed(threat: dict[str, Any]) -> int:
    """The seed of one trial's own random stream, derived with ``numpy.random.SeedSequence``
    from its identity: the threat, its target and intensity, and the trial's ``seed``. Two
    trials that differ in anything (bit 28 or 29, one link or another) draw independently;
    the same trial draws the same numbers again. The defence is not part of it: a threat
    draws the same under every defence, so defences are compared on the same draws."""
    identity = json.dumps({k: v for k, v in threat.items() if k != "seed"}, sort_keys=True)
    words = np.frombuffer(hashlib.sha256(identity.encode()).digest()[:16], dtype=np.uint32)
    sequence = np.random.SeedSequence([int(threat.get("seed", 0)) % 2**64, *map(int, words)])
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


def trial_threat(trial: Trial) -> Any:
    """The threat a trial runs: its parameters, drawing from the trial's own stream."""
    from ..threats.spec import parse_threat

    return parse_threat({**trial.threat, "seed": stream_seed(trial.threat)})


def plan_precision(plan: Any) -> str:
    """``fp32``, ``int8``, or ``mixed``: what a row says its plan computes in."""
    kinds = sorted({st.precision for st in plan.stages})
    return kinds[0] if len(kinds) == 1 else "mixed"
